//! Compiles the remote-write schemas (`proto/remote.proto` for 1.0,
//! `proto/write_v2.proto` for 2.0) and Loki's push request
//! (`proto/loki_push.proto`) into prost types.
//!
//! `protox` is a pure-Rust protobuf compiler, so building orgsplit needs no
//! `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/remote.proto");
    println!("cargo:rerun-if-changed=proto/write_v2.proto");
    println!("cargo:rerun-if-changed=proto/loki_push.proto");
    let descriptors = protox::compile(
        [
            "proto/remote.proto",
            "proto/write_v2.proto",
            "proto/loki_push.proto",
        ],
        ["proto/"],
    )?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}

//! Compiles `proto/remote.proto` into prost types.
//!
//! `protox` is a pure-Rust protobuf compiler, so building orgsplit needs no
//! `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/remote.proto");
    let descriptors = protox::compile(["proto/remote.proto"], ["proto/"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}

//! What the `orgsplit` commands do, apart from parsing their arguments
//! (`main.rs`): serve, check a config, inspect a capture; and the
//! credential commands of [`keys`] (keys, tokens, password hashes), which
//! need no config.

pub mod keys;

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;
use crate::table;

/// `orgsplit check-config`: prints the effective config and checks the
/// namespace table file.
pub fn check_config(config: &Config) -> ExitCode {
    print!("{}", config.to_yaml());
    if let Some(file) = &config.lookup.file {
        match table::file::load(file) {
            Ok(snapshot) => {
                let invalid = snapshot
                    .iter()
                    .filter(|(_, org)| matches!(org, table::Org::Invalid(_)))
                    .count();
                println!(
                    "# lookup.file {}: {} namespaces, {} with an invalid organization",
                    file.display(),
                    snapshot.len(),
                    invalid
                );
            }
            Err(e) => {
                eprintln!("orgsplit: {e}");
                return ExitCode::from(2);
            }
        }
    }
    // Key material, secrets and the users file load as the server would
    // load them (a plaintext password, an unreadable key: refused here too).
    if let Err(e) = crate::auth::Authenticator::new(&config.auth, Default::default()) {
        eprintln!("orgsplit: auth: {e}");
        return ExitCode::from(2);
    }
    println!("# configuration is valid");
    ExitCode::SUCCESS
}

/// `orgsplit inspect CAPTURE`: how a captured push would be split.
pub fn inspect(config: &Config, capture: &Path) -> ExitCode {
    report(crate::inspect::run(config, capture))
}

/// Prints a command's output, or its error (exit status 2).
fn report(result: anyhow::Result<String>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("orgsplit: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `orgsplit run` (the default): serves until SIGTERM or SIGINT.
pub fn run(config: Config) -> ExitCode {
    crate::telemetry::init(&config.log);
    return_large_buffers_to_the_os();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("orgsplit: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("orgsplit: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = crate::server::Server::bind(&config).await?;
    tracing::info!(listen = %server.local_addr()?, tls = config.tls.is_some(),
        upstream = %config.upstream.url, mode = ?config.routing.mode, "orgsplit started");
    server.serve(crate::shutdown::terminated()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// glibc serves allocations of up to 32 MiB from its heaps once a large
/// buffer has been freed (its mmap threshold adapts upwards), and freed heap
/// memory mostly stays resident. A push's decompressed body and tenant
/// batches are such buffers, so RSS would keep the high-water mark of every
/// allocation pattern ever seen, well past the byte budget. A fixed 1 MiB
/// threshold makes them mmap'd and unmapped on free; buffers of ordinary
/// pushes are smaller than that, and pooled anyway.
///
/// glibc also gives each thread that allocates concurrently an arena of its
/// own (up to eight per core), each keeping its own freed memory; splits run
/// on blocking threads and buffers are freed on others, so every arena ends
/// up holding a share of the working set. Two arenas keep RSS near the
/// working set at no measurable cost in speed.
fn return_large_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before the
    // runtime starts other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

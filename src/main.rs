//! The `orgsplit` binary: parse the command line, load the config, start
//! logging and the table feed, and serve.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use orgsplit::config::{Config, Overrides};
use orgsplit::table::{self, OrgTable};

#[derive(Parser)]
#[command(
    version,
    about = "Split Prometheus remote_write pushes into Mimir tenants by namespace organization"
)]
struct Cli {
    /// YAML config file.
    #[arg(short, long, env = "ORGSPLIT_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Listen address, overriding `listen`.
    #[arg(long, global = true)]
    listen: Option<std::net::SocketAddr>,
    /// Upstream push URL, overriding `upstream.url`.
    #[arg(long, global = true)]
    upstream_url: Option<String>,
    /// Namespace table file, overriding `lookup.file`.
    #[arg(long, global = true)]
    lookup_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the configuration and the namespace table, print the effective config.
    CheckConfig,
    /// Show how a captured push (snappy or raw protobuf; `-` for stdin)
    /// would be split with this config, without sending anything.
    Inspect {
        /// The capture file, or `-` for standard input.
        capture: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen,
        upstream_url: cli.upstream_url.clone(),
        lookup_file: cli.lookup_file.clone(),
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("orgsplit: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => check_config(&config),
        Command::Inspect { capture } => inspect(&config, &capture),
        Command::Run => run(config),
    }
}

fn check_config(config: &Config) -> ExitCode {
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
    println!("# configuration is valid");
    ExitCode::SUCCESS
}

fn inspect(config: &Config, capture: &std::path::Path) -> ExitCode {
    use std::io::Read;
    let mut bytes = Vec::new();
    let read = if capture.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::read(capture).map(|b| bytes = b)
    };
    if let Err(e) = read {
        eprintln!("orgsplit: reading {}: {e}", capture.display());
        return ExitCode::from(2);
    }
    let snapshot = match load_table_once(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("orgsplit: {e:#}");
            return ExitCode::from(2);
        }
    };
    let router = orgsplit::route::Router::new(&config.routing, config.limits.wire());
    match orgsplit::inspect::report(&router, &snapshot, &bytes) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("orgsplit: {e}");
            ExitCode::from(2)
        }
    }
}

/// The table as it is now: the file, or one complete list of the
/// Namespaces (waiting at most 30 s for the API).
fn load_table_once(config: &Config) -> anyhow::Result<table::Snapshot> {
    if let Some(file) = &config.lookup.file {
        return Ok(table::file::load(file)?);
    }
    let Some(kube) = &config.lookup.kubernetes else {
        return Ok(table::Snapshot::default());
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let table = OrgTable::new();
        table::kube::start(kube.clone(), table.clone()).await?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while !table.is_synced() {
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("the Kubernetes API did not list the namespaces within 30 s");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(std::sync::Arc::unwrap_or_clone(table.snapshot()))
    })
}

fn run(config: Config) -> ExitCode {
    orgsplit::telemetry::init(&config.log);
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

/// glibc serves allocations of up to 32 MiB from its heaps once a large
/// buffer has been freed (its mmap threshold adapts upwards), and freed heap
/// memory mostly stays resident. A push's decompressed body and tenant
/// batches are such buffers, so RSS would keep the high-water mark of every
/// allocation pattern ever seen, well past the byte budget. A fixed 1 MiB
/// threshold makes them mmap'd and unmapped on free; buffers of ordinary
/// pushes are smaller than that, and pooled anyway.
fn return_large_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before the
    // runtime starts other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Before anything records a metric (the table feeds do).
    orgsplit::metrics::install();
    let table = OrgTable::new();
    if let Some(file) = &config.lookup.file {
        table::file::start(file.clone(), table.clone())?;
    }
    if let Some(kube) = &config.lookup.kubernetes {
        table::kube::start(kube.clone(), table.clone()).await?;
    }
    if config.routing.mode == orgsplit::config::Mode::Label && !table.is_synced() {
        // Label mode needs no table.
        table.replace(Default::default());
    }
    let app = Arc::new(orgsplit::server::App::new(&config, table)?);
    let bind = |addr: std::net::SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
    };
    let listener = bind(config.listen).await?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    tracing::info!(listen = %listener.local_addr()?, tls = config.tls.is_some(),
        upstream = %config.upstream.url, mode = ?config.routing.mode, "orgsplit started");
    orgsplit::server::serve(
        app,
        listener,
        metrics_listener,
        orgsplit::shutdown::signal(),
    )
    .await?;
    tracing::info!("stopped");
    Ok(())
}

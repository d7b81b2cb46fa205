//! The `orgsplit` binary: parse the command line, load the config, and hand
//! over to the command (serve, check-config, inspect).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use orgsplit::cli::keys;
use orgsplit::config::{Config, Overrides};

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
    /// Key pairs for signing tokens (create, id, public).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Tokens for senders (create, inspect).
    #[command(subcommand)]
    Token(Box<keys::TokenCommand>),
    /// Basic-auth users (hash a password).
    #[command(subcommand)]
    Users(keys::UsersCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The credential commands need no config.
    let command = match cli.command.unwrap_or(Command::Run) {
        Command::Keys(c) => return keys::keys(c),
        Command::Token(c) => return keys::tokens(*c),
        Command::Users(c) => return keys::users(c),
        other => other,
    };
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
    match command {
        Command::Keys(_) | Command::Token(_) | Command::Users(_) => unreachable!(),
        Command::CheckConfig => orgsplit::cli::check_config(&config),
        Command::Inspect { capture } => orgsplit::cli::inspect(&config, &capture),
        Command::Run => orgsplit::cli::run(config),
    }
}

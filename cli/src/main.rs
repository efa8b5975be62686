//! The `meridian` command: parses arguments, installs the tracing
//! subscriber, and runs one subcommand from the `meridian_cli` library.
//!
//! Exit codes: 0 on success, 1 on an error or a usage error (one
//! `error: ...` line on stderr). `meridian cli` adds 2 (the request failed
//! definitely: no effect) and 3 (indeterminate: it may have taken effect).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: the write path allocates per request
/// (sled's copy-on-write nodes, QUIC buffers), where glibc's malloc showed
/// up at ~10 % of a node's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tracing_subscriber::EnvFilter;

/// Meridian: a geo-replicated CRDT key-value store.
#[derive(Debug, Parser)]
#[command(name = "meridian", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a cluster directory: CA, node and client certificates, configs.
    Init(meridian_cli::init::InitArgs),
    /// Run one node.
    Serve(ServeArgs),
    /// Run one client operation against the cluster.
    Cli(meridian_cli::request::CliArgs),
    /// Show the cluster at a glance.
    Status(meridian_cli::status::StatusArgs),
    /// Start a local three-region cluster with simulated WAN latency and
    /// take a guided tour of it.
    Demo(meridian_cli::demo::DemoArgs),
    /// Generate load against a cluster.
    Bench(Box<meridian_cli::bench::BenchArgs>),
}

/// Arguments of `meridian serve`.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The node's config file (written by `meridian init`).
    #[arg(long)]
    config: PathBuf,
    /// Accept a debug clock offset (clock-skew fault injection).
    #[arg(long)]
    allow_debug_clock: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with success; usage errors are
            // local errors: exit 1 (2 and 3 mean definite / indeterminate
            // request failures in `meridian cli`).
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // Logs go to stderr; RUST_LOG chooses what (default: info; warn for the
    // demo and the benchmark, whose own output tells the story).
    let default_filter = match cli.command {
        Command::Demo(_) | Command::Bench(_) => "warn",
        _ => "info",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    match cli.command {
        Command::Cli(args) => return meridian_cli::request::run(args),
        Command::Status(args) => return meridian_cli::status::run(args),
        _ => {}
    }

    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init(args) => Ok(meridian_cli::init::run(args)?),
        Command::Serve(ServeArgs {
            config,
            allow_debug_clock,
        }) => meridian_cli::serve::run(&config, allow_debug_clock),
        Command::Cli(_) | Command::Status(_) => unreachable!("handled in main"),
        Command::Demo(args) => meridian_cli::demo::run(args),
        Command::Bench(args) => meridian_cli::bench::run(*args),
    }
}

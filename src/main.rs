//! The `fulcrum` binary: parse the command line, set up logging, load the config, run.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use fulcrum::{App, Config, Control, Options};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

/// glibc's allocator, with a per-thread cache for the blocks it is slow to serve: the
/// over-aligned ones tokio allocates per connection and per task, and those above its own
/// per-thread cache's 1,032 bytes (`allocator.rs`).
#[global_allocator]
static ALLOCATOR: fulcrum::Allocator = fulcrum::Allocator;

/// Fulcrum, a layer-7 load-balancing reverse proxy.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file.
    #[arg(short, long, value_name = "FILE", default_value = "proxy.toml")]
    config: PathBuf,
    /// Validate the configuration and exit: 0 when valid, 1 with the reason when not.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("fulcrum: {error}");
            return ExitCode::FAILURE;
        }
    };
    if cli.check {
        println!("{}: configuration is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    raise_open_file_limit(config.limits.max_connections);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fulcrum: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the open-file soft limit to the hard limit, as nginx's `worker_rlimit_nofile` would:
/// every client and upstream connection is a descriptor, and the usual soft limit (1024) is far
/// below `max_connections`. Warns when even the hard limit is below it.
fn raise_open_file_limit(max_connections: usize) {
    let needed = max_connections as u64;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Err(error) => warn!(%error, "cannot read or raise the open-file limit"),
        Ok(open_files) if open_files < needed => warn!(
            open_files,
            max_connections,
            "the open-file limit is below limits.max_connections: raise it (ulimit -n)"
        ),
        Ok(_) => {}
    }
}

/// Operational logs on standard error: `RUST_LOG` sets the level (default `info`), and
/// `FULCRUM_LOG_FORMAT=json` makes each event a JSON object (for log shippers).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("FULCRUM_LOG_FORMAT").is_ok_and(|format| format == "json") {
        builder.json().init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    // One worker: a current-thread runtime, which skips the work-stealing scheduler's
    // cross-thread bookkeeping (README, Performance).
    let mut runtime = match config.server.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        // Signal handlers first: a signal that arrives once we are listening must find them.
        let shutdown = shutdown_signal().context("cannot install signal handlers")?;
        let mut hangup = signal(SignalKind::hangup()).context("cannot install signal handlers")?;
        let mut rotate =
            signal(SignalKind::user_defined1()).context("cannot install signal handlers")?;
        let path = config.path.clone();
        let app = App::start(
            config,
            Options {
                watch_config: true,
                ..Options::default()
            },
        )
        .await
        .with_context(|| format!("{}: cannot start", path.display()))?;
        info!(config = %path.display(), "fulcrum started");
        let control: Control = app.control().clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                info!("SIGHUP received: reloading");
                // A rejected reload is logged and kept for /status by `Control`.
                control.reload().await.ok();
            }
        });
        let control: Control = app.control().clone();
        tokio::spawn(async move {
            while rotate.recv().await.is_some() {
                control.reopen_access_log();
                info!("SIGUSR1 received: reopening the access log");
            }
        });
        app.run(shutdown).await;
        info!("fulcrum stopped");
        Ok(())
    })
}

/// Installs SIGTERM and SIGINT handlers now; the future resolves on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM received"),
            _ = interrupt.recv() => info!("SIGINT received"),
        }
    })
}

//! `qmgr run`: the daemon's command line. Flags are the top layer of the settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Overrides, Settings, SyncMode};

/// Run a queue manager (the daemon). Every setting has a default: with no flags and no
/// settings file this starts a standalone manager with its data in ./qmgr-data.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Settings file (default: qmgr.toml if present; also QMGR_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// This manager's name in the topology (QMGR_NAME; default `local`).
    #[arg(long)]
    name: Option<String>,
    /// The topology file (QMGR_TOPOLOGY; default: a one-manager network).
    #[arg(long, value_name = "FILE")]
    topology: Option<PathBuf>,
    /// Where the journal lives (QMGR_DATA_DIR; default ./qmgr-data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The local API socket (QMGR_API_SOCKET; default <data-dir>/qmgr.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Bind the channel endpoint to this address instead of this manager's topology address,
    /// which neighbours still dial: behind NAT or port forwarding (QMGR_LISTEN).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Serve Prometheus metrics on this address (QMGR_METRICS_LISTEN; default off).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Serve the web console, its JSON API and the metrics on this address (QMGR_HTTP_LISTEN;
    /// default off). Read-only; use a loopback address unless QMGR_HTTP_TOKEN is set.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// `always` (default: acknowledged means on disk) or `never` (UNSAFE; for measuring).
    #[arg(long, value_enum)]
    sync: Option<SyncMode>,
    /// Start even if the journal is corrupt before its tail, skipping the damaged ranges and
    /// reporting exactly what was lost.
    #[arg(long)]
    salvage: bool,
}

impl RunArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        init_logging();
        let overrides = Overrides {
            config: self.config,
            name: self.name,
            topology: self.topology,
            data_dir: self.data_dir,
            api_socket: self.socket,
            listen: self.listen,
            metrics_listen: self.metrics,
            http_listen: self.http,
            sync: self.sync,
        };
        let settings = Settings::load(&overrides, None)?;
        crate::daemon::run(settings, self.salvage)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); colours only on a terminal, so a
/// log file stays plain text, and never with `NO_COLOR` set (no-color.org).
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && !no_color())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Whether the user asked for no colours: `NO_COLOR` set to anything but the empty string.
fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty())
}

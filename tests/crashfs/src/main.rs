//! The `crashfs` command: mount in the foreground, unmount, crash, and show what a crash
//! would discard. The binary's edge: errors become messages and exit codes here (0; 1;
//! [`crashfs::EXIT_UNAVAILABLE`] when FUSE cannot be used; clap's 2 for usage).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use crashfs::{CrashOptions, ServeOptions};
use tracing_subscriber::EnvFilter;

/// A FUSE filesystem that forgets unsynced writes on command, as a power cut would.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Mount a crashfs over BACKING at MOUNTPOINT and serve it in the foreground until it
    /// is unmounted (or SIGTERM, SIGINT, SIGHUP).
    Mount {
        backing: PathBuf,
        mountpoint: PathBuf,
        /// Also unmount and exit when standard input closes.
        #[arg(long)]
        until_stdin_closes: bool,
    },
    /// Unmount the crashfs at MOUNTPOINT; its daemon exits (a clean shutdown: every change
    /// stands).
    Umount {
        mountpoint: PathBuf,
        /// Detach it even if busy.
        #[arg(long)]
        lazy: bool,
    },
    /// Discard every change not yet synced, as a power cut would; prints the report (JSON).
    Crash {
        mountpoint: PathBuf,
        /// Keep a random proper prefix of each file's last unsynced write.
        #[arg(long)]
        tear: bool,
        /// Seed for the tears (the report names the one drawn otherwise).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Show what a crash now would discard (JSON).
    Pending { mountpoint: PathBuf },
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); colours only on a terminal, so
/// a log file stays plain text. fuser's own log (the `log` crate) comes along.
fn init_logging() {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crashfs: {e:#}");
            let unavailable = matches!(
                e.downcast_ref::<crashfs::Error>(),
                Some(crashfs::Error::Unavailable(_))
            );
            if unavailable {
                ExitCode::from(crashfs::EXIT_UNAVAILABLE as u8)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(action: Action) -> anyhow::Result<()> {
    match action {
        Action::Mount {
            backing,
            mountpoint,
            until_stdin_closes,
        } => {
            let options = ServeOptions { until_stdin_closes };
            crashfs::serve(&backing, &mountpoint, options)?;
        }
        Action::Umount { mountpoint, lazy } => crashfs::unmount(&mountpoint, lazy)?,
        Action::Crash {
            mountpoint,
            tear,
            seed,
        } => {
            let report = crashfs::control::crash(&mountpoint, CrashOptions { tear, seed })?;
            println!(
                "{}",
                serde_json::to_string(&report).context("cannot print the report")?
            );
        }
        Action::Pending { mountpoint } => {
            let pending = crashfs::control::pending(&mountpoint)?;
            println!(
                "{}",
                serde_json::to_string(&pending).context("cannot print")?
            );
        }
    }
    Ok(())
}

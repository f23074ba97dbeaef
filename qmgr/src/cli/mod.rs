//! The command line: one `clap` tree, each subcommand in the module that owns it.

pub mod run;
pub mod topology;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// hopmq's queue manager: routed, persistent, exactly-once messaging.
#[derive(Debug, Parser)]
#[command(name = "qmgr", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a queue manager (the daemon).
    Run(run::RunArgs),
    /// Check, explore and compare topology files.
    #[command(subcommand)]
    Topology(topology::TopologyCommand),
    /// Measure hopmq's speed.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
}

impl Cli {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Run(args) => args.run(),
            Command::Topology(command) => command.run(),
            Command::Bench(command) => command.run(),
        }
    }
}

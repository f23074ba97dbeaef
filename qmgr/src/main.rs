//! `qmgr`: hopmq's queue manager and its command-line tool.
//!
//! This file is the binary's edge: it parses the command line, runs one command and turns its
//! outcome into an exit code (0 success, 1 error, 2 bad usage: clap's own code).

mod bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: qmgr::allocator::Allocator = qmgr::allocator::Allocator;

/// hopmq's queue manager: routed, persistent, exactly-once messaging.
#[derive(Debug, Parser)]
#[command(name = "qmgr", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Manager(qmgr::cli::Command),
    /// Measure hopmq's speed.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Manager(command) => command.run(),
        Command::Bench(command) => command.run(),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

//! `qmgr`: hopmq's queue manager and its command-line tool.
//!
//! This file is the binary's edge: it parses the command line, runs one command and turns its
//! outcome into an exit code (0 success, 1 error, 2 bad usage: clap's own code).

mod bench;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

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
    /// Print a shell's completion script (bash, zsh, fish, elvish, powershell).
    Completions(qmgr::cli::docs::CompletionsArgs),
    /// Print the manual page, or write one per subcommand with --dir.
    Man(qmgr::cli::docs::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Manager(command) => command.run(),
        Command::Bench(command) => command.run(),
        Command::Completions(args) => args.run(Cli::command()),
        Command::Man(args) => args.run(Cli::command()),
    };
    // What a command printed last may still be buffered: a reader gone by now is noticed here.
    let outcome = outcome.and_then(|code| Ok(qmgr::cli::output::flush().map(|()| code)?));
    match outcome {
        Ok(code) => code,
        // `qmgr ... | head -1`: the reader took what it wanted; that is not a failure.
        Err(error) if qmgr::cli::output::closed_early(&error) => ExitCode::SUCCESS,
        Err(error) => {
            // Not `eprintln!`, which panics if stderr is gone too.
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

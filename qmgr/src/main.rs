//! `qmgr`: hopmq's queue manager and its command-line tool.
//!
//! This file is the binary's edge: it parses the command line, runs one command and turns its
//! outcome into an exit code (0 success, 1 error, 2 bad usage: clap's own code).

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: qmgr::allocator::Allocator = qmgr::allocator::Allocator;

fn main() -> ExitCode {
    let cli = qmgr::cli::Cli::parse();
    match cli.run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

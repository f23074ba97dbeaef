//! `qmgr completions SHELL` and `qmgr man`: shell completion scripts and manual pages, made
//! from the clap tree itself so they never drift from what the binary accepts. The binary
//! hands in its whole tree (`bench` included), which this library does not know.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::output;

/// Print the completion script of a shell, e.g. `qmgr completions bash > /etc/bash_completion.d/qmgr`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

impl CompletionsArgs {
    /// Prints the script for `command`, the binary's whole clap tree.
    pub fn run(self, mut command: clap::Command) -> anyhow::Result<ExitCode> {
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut command, "qmgr", &mut script);
        output::write_bytes(&script)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Print qmgr's manual page (roff: `qmgr man | man -l -`), or write it and one page per
/// subcommand (`qmgr-run.1`, `qmgr-topology-check.1`, ...) into a folder.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write every page into this folder instead (created if missing).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

impl ManArgs {
    /// Renders the pages of `command`, the binary's whole clap tree.
    pub fn run(self, command: clap::Command) -> anyhow::Result<ExitCode> {
        match self.dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                clap_mangen::generate_to(command, &dir)
                    .with_context(|| format!("cannot write manual pages in {}", dir.display()))?;
            }
            None => {
                let mut page = Vec::new();
                clap_mangen::Man::new(command)
                    .render(&mut page)
                    .context("cannot render the manual page")?;
                output::write_bytes(&page)?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

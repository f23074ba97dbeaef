//! Helpers shared by the black-box tests: run the real `qmgr` binary as a user would.

#![allow(dead_code, unreachable_pub)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `qmgr` binary cargo built for this test run.
pub fn qmgr_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_qmgr"))
}

/// The top of the repository, where `topology.toml` lives.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Runs `qmgr ARGS...` from the repository's top folder and waits for it.
pub fn qmgr(args: &[&str]) -> Run {
    Command::new(qmgr_path())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("the qmgr binary runs")
        .into()
}

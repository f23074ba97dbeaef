//! [`Daemon`]: a `crashfs mount` child process, as a test starts it when the program under
//! test should not share a process with the filesystem (or to test the binary itself).
//!
//! The child runs with `--until-stdin-closes` and a pipe as its standard input, which the
//! handle holds: whenever the handle goes away, or the test process dies, the pipe closes
//! and the child unmounts and exits, so a failed test never leaves a mount behind a live
//! daemon. Readiness is the control file becoming visible at the mount point.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::control::{self, CONTROL};
use crate::error::Error;
use crate::report::{CrashOptions, CrashReport, Pending};

/// The exit code of `crashfs mount` when FUSE is unavailable (see
/// [`Error::Unavailable`]): a test skips on it.
pub const EXIT_UNAVAILABLE: i32 = 3;

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(10);

/// The end of the child's standard error kept for error messages.
const SAID_MAX: usize = 16 * 1024;

/// A running `crashfs mount` child.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    stdin: Option<ChildStdin>,
    mountpoint: PathBuf,
    /// The end of what the child wrote to its standard error.
    said: Arc<Mutex<String>>,
    /// Copies the child's standard error to ours (so a test's output shows the daemon's
    /// log) and into `said`; also keeps the pipe drained, so the child never blocks on it.
    echo: Option<JoinHandle<()>>,
}

/// Copies `stderr` to this process's standard error, keeping its end in `said`.
fn echo(stderr: ChildStderr, said: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("crashfs daemon: {line}");
            let mut said = said.lock().unwrap_or_else(PoisonError::into_inner);
            said.push_str(&line);
            said.push('\n');
            if said.len() > SAID_MAX {
                let cut = said.len() - SAID_MAX;
                let cut = (cut..said.len())
                    .find(|&i| said.is_char_boundary(i))
                    .unwrap_or(0);
                said.drain(..cut);
            }
        }
    })
}

impl Daemon {
    /// Starts `program mount backing mountpoint` and waits, at most `deadline`, until the
    /// mount serves.
    pub fn start(
        program: &Path,
        backing: &Path,
        mountpoint: &Path,
        deadline: Duration,
    ) -> Result<Self, Error> {
        let child = Command::new(program)
            .arg("mount")
            .arg(backing)
            .arg(mountpoint)
            .arg("--until-stdin-closes")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(program, e))?;
        let mut daemon = Self {
            stdin: None,
            child,
            mountpoint: mountpoint.to_owned(),
            said: Arc::default(),
            echo: None,
        };
        daemon.stdin = daemon.child.stdin.take();
        daemon.echo = daemon
            .child
            .stderr
            .take()
            .map(|stderr| echo(stderr, Arc::clone(&daemon.said)));
        daemon.wait_ready(deadline)?;
        Ok(daemon)
    }

    fn wait_ready(&mut self, deadline: Duration) -> Result<(), Error> {
        let started = Instant::now();
        let control = self.mountpoint.join(CONTROL);
        loop {
            if control.is_file() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| Error::Daemon(e.to_string()))?
            {
                return Err(self.exited(status));
            }
            if started.elapsed() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(Error::Daemon(format!(
                    "not mounted at {} within {deadline:?}",
                    self.mountpoint.display()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The error for a child that exited before it was ready, with what it said.
    fn exited(&mut self, status: ExitStatus) -> Error {
        // The child is gone: its pipe ends, and so does the copy.
        if let Some(echo) = self.echo.take() {
            let _ = echo.join();
        }
        let said = self
            .said
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if status.code() == Some(EXIT_UNAVAILABLE) {
            Error::Unavailable(said.trim().to_owned())
        } else {
            Error::Daemon(format!(
                "exited with {status} before mounting: {}",
                said.trim()
            ))
        }
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Crashes the mount through its control file.
    pub fn crash(&self, options: CrashOptions) -> Result<CrashReport, Error> {
        control::crash(&self.mountpoint, options)
    }

    /// What a crash now would discard.
    pub fn pending(&self) -> Result<Pending, Error> {
        control::pending(&self.mountpoint)
    }

    /// Unmounts and waits, at most `deadline`, for the child to exit; kills it (and
    /// detaches the mount) if it does not.
    pub fn stop(mut self, deadline: Duration) -> Result<(), Error> {
        self.stop_within(deadline)
    }

    fn stop_within(&mut self, deadline: Duration) -> Result<(), Error> {
        // Closing its standard input tells the child to unmount and exit.
        drop(self.stdin.take());
        let started = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| Error::Daemon(e.to_string()))?
            {
                return if status.success() {
                    Ok(())
                } else {
                    Err(Error::Daemon(format!("exited with {status}")))
                };
            }
            if started.elapsed() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let _ = crate::mount::detach(&self.mountpoint);
                return Err(Error::Daemon(format!(
                    "still running after {deadline:?}: killed"
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.stop_within(Duration::from_secs(10));
        }
    }
}

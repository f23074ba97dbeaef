//! How a crash is asked for from outside the daemon: the control file.
//!
//! The mount's root holds a file named [`CONTROL`] (`.crashfs-control`) that lookups find
//! but listings do not show. Writing a command to it runs the command before the write
//! returns; reading the same open file (from offset 0) then gives the answer, JSON of a
//! [`CrashReport`] or of [`Pending`], or `error: ...` (the write then failed: `EINVAL` for a
//! command not understood, `EIO` for a crash that could not be applied).
//!
//! Commands, one per write: `crash [--tear] [--seed N]` and `pending`. So a shell can crash
//! a mount too: `echo crash --tear > MOUNTPOINT/.crashfs-control`.
//!
//! Why a file under the mount: it is found by the mount point alone, needs no socket path
//! or pid file to agree on, cannot reach the wrong daemon, and is as synchronous as a
//! system call.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::Error;
pub use crate::fs::CONTROL;
use crate::report::{CrashOptions, CrashReport, Pending};

/// A control command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Crash(CrashOptions),
    Pending,
}

impl Command {
    pub(crate) fn parse(text: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::BadCommand {
            command: text.trim().to_owned(),
            reason: reason.to_owned(),
        };
        let mut words = text.split_whitespace();
        match words.next() {
            Some("pending") => match words.next() {
                None => Ok(Self::Pending),
                Some(_) => Err(bad("pending takes no arguments")),
            },
            Some("crash") => {
                let mut options = CrashOptions::default();
                while let Some(word) = words.next() {
                    match word {
                        "--tear" => options.tear = true,
                        "--seed" => {
                            let seed = words.next().ok_or_else(|| bad("--seed needs a number"))?;
                            options.seed =
                                Some(seed.parse().map_err(|_| bad("--seed needs a number"))?);
                        }
                        _ => return Err(bad("crash takes --tear and --seed N")),
                    }
                }
                Ok(Self::Crash(options))
            }
            _ => Err(bad(
                "the commands are crash [--tear] [--seed N] and pending",
            )),
        }
    }

    pub(crate) fn line(&self) -> String {
        match self {
            Self::Pending => "pending\n".to_owned(),
            Self::Crash(options) => {
                let mut line = "crash".to_owned();
                if options.tear {
                    line.push_str(" --tear");
                }
                if let Some(seed) = options.seed {
                    line.push_str(&format!(" --seed {seed}"));
                }
                line.push('\n');
                line
            }
        }
    }
}

/// Sends `command` to the crashfs mounted at `mountpoint`; returns its answer.
fn send(mountpoint: &Path, command: &Command) -> Result<String, Error> {
    let path = mountpoint.join(CONTROL);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let written = file.write_all(command.line().as_bytes());
    let mut answer = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let got = file
            .read_at(&mut chunk, answer.len() as u64)
            .map_err(|e| Error::io(&path, e))?;
        if got == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..got]);
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    match (written, answer.strip_prefix("error: ")) {
        (_, Some(message)) => Err(Error::Refused(message.to_owned())),
        (Err(e), None) => Err(Error::io(&path, e)),
        (Ok(()), None) => Ok(answer),
    }
}

/// Crashes the crashfs mounted at `mountpoint` (run by any process, the daemon's or not).
pub fn crash(mountpoint: &Path, options: CrashOptions) -> Result<CrashReport, Error> {
    let answer = send(mountpoint, &Command::Crash(options))?;
    serde_json::from_str(&answer).map_err(|e| Error::BadAnswer(format!("{e}: {answer}")))
}

/// What a crash of the crashfs mounted at `mountpoint` would discard now.
pub fn pending(mountpoint: &Path) -> Result<Pending, Error> {
    let answer = send(mountpoint, &Command::Pending)?;
    serde_json::from_str(&answer).map_err(|e| Error::BadAnswer(format!("{e}: {answer}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_print_back() {
        for command in [
            Command::Pending,
            Command::Crash(CrashOptions::default()),
            Command::Crash(CrashOptions {
                tear: true,
                seed: Some(42),
            }),
        ] {
            assert_eq!(Command::parse(&command.line()).unwrap(), command);
        }
        assert!(Command::parse("crash --seed").is_err());
        assert!(Command::parse("crash --seed x").is_err());
        assert!(Command::parse("reboot").is_err());
        assert!(Command::parse("").is_err());
    }
}

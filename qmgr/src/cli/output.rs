//! Standard output for every command that prints, and how a command ends when its reader
//! leaves: `qmgr topology dot FILE | head -1` closes the pipe after one line, and the next
//! write fails with a broken pipe (Rust ignores SIGPIPE). That is the reader's choice, not a
//! failure: [`OutputError::Closed`] travels up like any error and the binary's edge ends the
//! command quietly with exit code 0 ([`closed_early`]).

use std::fmt;
use std::io::{self, Write};

/// Why a write to standard output did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The reader went away (a closed pipe): the command stops, successfully.
    #[error("standard output was closed by its reader")]
    Closed,
    /// Any other failure (a full disk behind a redirection).
    #[error("cannot write to standard output: {0}")]
    Failed(io::Error),
}

impl From<io::Error> for OutputError {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::BrokenPipe {
            Self::Closed
        } else {
            Self::Failed(error)
        }
    }
}

/// Writes formatted text to standard output (what [`out!`](crate::out) and
/// [`outln!`](crate::outln) expand to).
pub fn write_fmt(args: fmt::Arguments<'_>) -> Result<(), OutputError> {
    Ok(io::stdout().lock().write_fmt(args)?)
}

/// Writes raw bytes to standard output (message bodies need not be text).
pub fn write_bytes(bytes: &[u8]) -> Result<(), OutputError> {
    Ok(io::stdout().lock().write_all(bytes)?)
}

/// Pushes out what standard output still buffers; the edge calls it before exiting, so a
/// reader that left during the last line is noticed there too.
pub fn flush() -> Result<(), OutputError> {
    Ok(io::stdout().lock().flush()?)
}

/// Whether `error` ended a command only because standard output's reader left.
pub fn closed_early(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| matches!(cause.downcast_ref(), Some(OutputError::Closed)))
}

/// `print!` that returns a [`Result`] instead of panicking when standard output fails.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write_fmt(format_args!($($arg)*))
    };
}

/// `println!` that returns a [`Result`] instead of panicking when standard output fails.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::cli::output::write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broken_pipe_counts_as_closed() {
        let closed = anyhow::Error::from(OutputError::from(io::Error::from(
            io::ErrorKind::BrokenPipe,
        )))
        .context("printing the routes");
        assert!(closed_early(&closed));
        let full = anyhow::Error::from(OutputError::from(io::Error::from(
            io::ErrorKind::StorageFull,
        )));
        assert!(!closed_early(&full));
        // A broken pipe elsewhere (the manager's socket) is a real failure.
        let socket = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(!closed_early(&socket));
    }
}

//! Where the client commands find their manager (`--socket`, else `$HOPMQ_SOCKET`, else
//! `./qmgr-data/qmgr.sock`), and what they say when no manager answers there: one cause and
//! what to do about it, since that is the first thing a newcomer meets.

use std::path::PathBuf;

use anyhow::Context;
use hopmq::client::{SOCKET_ENV, SOCKET_PATH_DEFAULT};
use hopmq::{Client, ClientError};

/// Where the manager is: `--socket`, else `$HOPMQ_SOCKET`, else ./qmgr-data/qmgr.sock.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The manager's API socket (default: $HOPMQ_SOCKET, else ./qmgr-data/qmgr.sock).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
}

/// Nothing listens on the socket a client command was pointed at.
#[derive(Debug, thiserror::Error)]
#[error(
    "no manager is running at {} ({chosen_by}): {error}\n\
     hint: start one with `qmgr run` (its socket is <data-dir>/qmgr.sock, by default \
     {SOCKET_PATH_DEFAULT}), or name a running one's socket with --socket PATH or {SOCKET_ENV}",
    path.display()
)]
pub(crate) struct NoManager {
    path: PathBuf,
    /// What chose the path, so a stale `HOPMQ_SOCKET` is easy to spot.
    chosen_by: &'static str,
    error: std::io::Error,
}

impl Connection {
    pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
    }

    /// The socket in force and what chose it.
    fn path(&self) -> (PathBuf, &'static str) {
        match &self.socket {
            Some(path) => (path.clone(), "--socket"),
            None if std::env::var_os(SOCKET_ENV).is_some_and(|v| !v.is_empty()) => {
                (hopmq::client::socket_path_default(), "from $HOPMQ_SOCKET")
            }
            None => (hopmq::client::socket_path_default(), "the default socket"),
        }
    }

    pub(crate) async fn client(&self) -> anyhow::Result<Client> {
        let (path, chosen_by) = self.path();
        match Client::connect_to(&path).await {
            Ok(client) => Ok(client),
            // No socket file, or one a dead manager left: nobody is there.
            Err(ClientError::Connect { error, .. })
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Err(NoManager {
                    path,
                    chosen_by,
                    error,
                }
                .into())
            }
            // It names the path itself.
            Err(error @ ClientError::Connect { .. }) => Err(error.into()),
            Err(error) => Err(anyhow::Error::from(error)
                .context(format!("cannot talk to the manager at {}", path.display()))),
        }
    }
}

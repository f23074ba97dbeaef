//! Readiness for a service manager: systemd's notification protocol (`sd_notify(3)`), by hand.
//!
//! A unit with `Type=notify` starts `qmgr run` with `NOTIFY_SOCKET` naming a Unix datagram
//! socket; systemd counts the service as started only when `READY=1` arrives there, so units
//! ordered after hopmq start once the API socket accepts clients rather than when the process
//! was forked (a deep journal's replay can take seconds). `STOPPING=1` tells it a stop is under
//! way. Without `NOTIFY_SOCKET` every call does nothing: the protocol is one datagram per state,
//! which needs no library.

use std::os::unix::net::UnixDatagram;

/// The environment variable a service manager sets to the socket it listens on.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Sent once the manager serves: its API socket is bound and accepting, its links started.
pub const READY: &str = "READY=1";

/// Sent when the manager begins a clean stop.
pub const STOPPING: &str = "STOPPING=1";

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` is neither an absolute path nor an abstract socket name (`@name`).
    #[error("{NOTIFY_SOCKET_ENV} is `{0}`: neither an absolute path nor an abstract name (@name)")]
    Address(String),
    /// The datagram could not be sent.
    #[error("cannot notify the service manager at {address}: {error}")]
    Send {
        /// The socket named by `NOTIFY_SOCKET`.
        address: String,
        /// What the system said.
        error: std::io::Error,
    },
}

/// Sends `state` (such as [`READY`]) to the service manager if `NOTIFY_SOCKET` names one.
/// Returns whether a notification was sent: `false` when the variable is unset or empty (not
/// started by a service manager that asks for readiness).
pub fn notify(state: &str) -> Result<bool, NotifyError> {
    match std::env::var(NOTIFY_SOCKET_ENV) {
        Ok(address) if !address.is_empty() => send(&address, state).map(|()| true),
        // Unset, or not Unicode: no service manager of ours set it.
        _ => Ok(false),
    }
}

/// Sends one datagram holding `state` to the socket `address` names.
fn send(address: &str, state: &str) -> Result<(), NotifyError> {
    let failed = |error| NotifyError::Send {
        address: address.to_owned(),
        error,
    };
    let socket = UnixDatagram::unbound().map_err(failed)?;
    if let Some(name) = address.strip_prefix('@') {
        send_abstract(&socket, name, state.as_bytes()).map_err(failed)?;
    } else if address.starts_with('/') {
        socket.send_to(state.as_bytes(), address).map_err(failed)?;
    } else {
        return Err(NotifyError::Address(address.to_owned()));
    }
    Ok(())
}

/// Linux's abstract socket namespace: systemd may name its socket `@...`.
#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    socket.send_to_addr(bytes, &address).map(drop)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_socket: &UnixDatagram, _name: &str, _bytes: &[u8]) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_path_socket_receives_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), READY).unwrap();
        let mut buffer = [0u8; 64];
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], READY.as_bytes());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_abstract_socket_receives_the_state() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("hopmq-readiness-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        send(&format!("@{name}"), STOPPING).unwrap();
        let mut buffer = [0u8; 64];
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], STOPPING.as_bytes());
    }

    #[test]
    fn a_relative_address_is_refused() {
        assert!(matches!(
            send("relative.sock", READY),
            Err(NotifyError::Address(_))
        ));
    }

    #[test]
    fn nobody_listening_is_an_error_naming_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.sock");
        let error = send(path.to_str().unwrap(), READY).unwrap_err();
        assert!(error.to_string().contains("absent.sock"), "{error}");
    }
}

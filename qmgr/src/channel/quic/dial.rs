//! The dialler of one neighbour: keeps one outgoing connection up, redialling with backoff and
//! jitter while the neighbour is down, at once when it dials in, and stops (closing its
//! connection, which its `run` still reports to the core) when its link leaves the topology.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hopmq_routing::{ManagerName, PeerAddress};
use quinn::{Endpoint, VarInt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::stream::run;
use super::{
    HANDSHAKE_TIMEOUT, LINK_REMOVED, RECONNECT_DELAY_MAX, RECONNECT_DELAY_MIN, Shared, Sink, code,
    peer_name, resolve,
};
use crate::channel::connection::ChannelDirection;
use crate::tls;

/// What a dialler listens to besides shutdown.
pub(super) struct DiallerSignals {
    /// `true`: close the connection and end (see [`super::DiallerHandle::stop`]).
    pub(super) stop: watch::Receiver<bool>,
    /// The neighbour dialled in: retry now instead of after the backoff.
    pub(super) wake: Arc<tokio::sync::Notify>,
}

/// A dialled connection, authenticated as the neighbour, with its stream open.
type Dialled = (quinn::Connection, quinn::SendStream, quinn::RecvStream);

pub(super) async fn dial<E: Sink>(
    endpoint: Endpoint,
    client: quinn::ClientConfig,
    shared: Arc<Shared<E>>,
    neighbour: ManagerName,
    address: PeerAddress,
    mut shutdown: watch::Receiver<bool>,
    signals: DiallerSignals,
) {
    let DiallerSignals { mut stop, wake } = signals;
    let mut delay = RECONNECT_DELAY_MIN;
    let mut failures = 0u64;
    loop {
        if *shutdown.borrow() || *stop.borrow() {
            return;
        }
        // A stop before the connection is up leaves nothing to report: the core heard of no
        // connection yet. Stops first: a stopping endpoint also fails the attempt, which is
        // no reason to warn.
        let attempt = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            _ = stop.changed() => return,
            attempt = connect(&endpoint, &client, &neighbour, &address) => attempt,
            // An attempt begun while the neighbour was down waits for QUIC's retransmission
            // backoff (seconds); the neighbour that just dialled in answers a fresh one now.
            () = wake.notified() => {
                debug!(%neighbour, "the neighbour dialled in; dialling it again now");
                delay = RECONNECT_DELAY_MIN;
                continue;
            }
        };
        match attempt {
            Ok(dialled) => {
                if failures > 0 {
                    info!(%neighbour, failures, "channel reconnected");
                }
                failures = 0;
                delay = RECONNECT_DELAY_MIN;
                let lasted = Instant::now();
                let served = serve(&shared, &neighbour, dialled, &mut shutdown, &mut stop);
                if served.await == Served::Stopped {
                    return;
                }
                // A connection that dies at once (a peer refusing us) must not be redialled
                // in a tight loop.
                if lasted.elapsed() < Duration::from_secs(1) {
                    delay = RECONNECT_DELAY_MIN * 4;
                }
            }
            Err(reason) => {
                failures += 1;
                log_failure(&neighbour, &address, &reason, failures);
            }
        }
        let jittered = jitter(delay);
        tokio::select! {
            () = tokio::time::sleep(jittered) => delay = (delay * 2).min(RECONNECT_DELAY_MAX),
            () = wake.notified() => {
                debug!(%neighbour, "the neighbour dialled in; dialling it back now");
                delay = RECONNECT_DELAY_MIN;
            }
            _ = shutdown.changed() => return,
            _ = stop.changed() => return,
        }
    }
}

/// One attempt: resolve, handshake within [`HANDSHAKE_TIMEOUT`], check that the certificate
/// names `neighbour`, open the stream.
async fn connect(
    endpoint: &Endpoint,
    client: &quinn::ClientConfig,
    neighbour: &ManagerName,
    address: &PeerAddress,
) -> Result<Dialled, String> {
    let remote = resolve(address).await.map_err(|e| e.to_string())?;
    let server_name = tls::server_name(neighbour).map_err(|e| e.to_string())?;
    let server_name = match &server_name {
        rustls_pki_types::ServerName::DnsName(name) => name.as_ref().to_owned(),
        _ => neighbour.to_string(),
    };
    let connecting = endpoint
        .connect_with(client.clone(), remote, &server_name)
        .map_err(|e| e.to_string())?;
    let connection = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
        .await
        .map_err(|_| format!("no handshake within {HANDSHAKE_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let peer = peer_name(&connection)?;
    if peer != *neighbour {
        let reason = format!("certificate names `{peer}`, not `{neighbour}`");
        connection.close(VarInt::from_u32(code::REFUSED), reason.as_bytes());
        return Err(reason);
    }
    let (send, recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    Ok((connection, send, recv))
}

/// How a dialled connection's service ended.
#[derive(Debug, PartialEq, Eq)]
enum Served {
    /// The connection ended: dial again.
    Ended,
    /// The manager stops or the link was removed: the dialler ends.
    Stopped,
}

/// Runs a dialled connection until it ends, or until a shutdown or a stop.
async fn serve<E: Sink>(
    shared: &Shared<E>,
    neighbour: &ManagerName,
    (connection, send, recv): Dialled,
    shutdown: &mut watch::Receiver<bool>,
    stop: &mut watch::Receiver<bool>,
) -> Served {
    let running = run(
        shared,
        neighbour.clone(),
        ChannelDirection::Outbound,
        connection.clone(),
        send,
        recv,
    );
    tokio::pin!(running);
    tokio::select! {
        () = &mut running => Served::Ended,
        _ = shutdown.changed() => Served::Stopped,
        _ = stop.changed() => {
            // Not dropped mid-run: closing ends its reads, and it then tells the core the
            // connection is gone.
            connection.close(VarInt::from_u32(code::NORMAL), LINK_REMOVED.as_bytes());
            running.await;
            Served::Stopped
        }
    }
}

/// The first failure says why; later ones only at debug, so a neighbour that is down for
/// hours does not flood the log.
fn log_failure(neighbour: &ManagerName, address: &PeerAddress, reason: &str, failures: u64) {
    if failures == 1 || failures.is_power_of_two() {
        warn!(%neighbour, %address, %reason, failures, "cannot connect channel; retrying");
    } else {
        debug!(%neighbour, %reason, failures, "cannot connect channel");
    }
}

/// `delay` scaled by a random factor in [0.5, 1.0), so managers restarted together do not
/// redial in lockstep.
fn jitter(delay: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let fraction = (hasher.finish() % 1000) as f64 / 2000.0 + 0.5;
    delay.mul_f64(fraction)
}

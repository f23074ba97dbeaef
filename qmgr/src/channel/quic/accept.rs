//! Incoming connections: the handshake, admission against the topology in force (registered
//! under the same lock [`super::Driver::apply`] takes, so an unlinked peer's connection is
//! never missed), and at most [`HANDSHAKES_MAX`] of them at once within [`HANDSHAKE_TIMEOUT`],
//! so that an unauthenticated peer costs bounded resources.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use hopmq_routing::ManagerName;
use quinn::{Endpoint, VarInt};
use tokio::sync::{Semaphore, watch};
use tracing::warn;

use super::stream::run;
use super::{HANDSHAKE_TIMEOUT, HANDSHAKES_MAX, Shared, Sink, code, peer_name};
use crate::channel::connection::ChannelDirection;
use crate::tls;

pub(super) async fn accept<E: Sink>(
    endpoint: Endpoint,
    shared: Arc<Shared<E>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.changed() => return,
        };
        let Some(incoming) = incoming else {
            return; // endpoint closed
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            warn!(peer = %incoming.remote_address(), "too many handshakes in progress; connection refused");
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let admitted = tokio::time::timeout(HANDSHAKE_TIMEOUT, admit(incoming, &shared)).await;
            drop(permit);
            match admitted {
                Ok(Ok((neighbour, connection, send, recv, _registered))) => {
                    run(
                        &shared,
                        neighbour,
                        ChannelDirection::Inbound,
                        connection,
                        send,
                        recv,
                    )
                    .await;
                }
                Ok(Err(reason)) => warn!(peer = %remote, %reason, "incoming channel refused"),
                Err(_) => {
                    warn!(peer = %remote, "incoming channel refused: handshake not done within {HANDSHAKE_TIMEOUT:?}")
                }
            }
        });
    }
}

type Admitted<E> = (
    ManagerName,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
    Registered<E>,
);

/// The TLS handshake, the admission check, and the peer's stream.
async fn admit<E: Sink>(
    incoming: quinn::Incoming,
    shared: &Arc<Shared<E>>,
) -> Result<Admitted<E>, String> {
    let connection = incoming
        .await
        .map_err(|e| format!("handshake failed: {e}"))?;
    let peer = match peer_name(&connection) {
        Ok(peer) => peer,
        Err(reason) => {
            connection.close(VarInt::from_u32(code::REFUSED), reason.as_bytes());
            return Err(reason);
        }
    };
    // Checked and registered under one lock, so an apply either comes first (and this check
    // sees its topology) or finds the connection registered and closes it.
    let admitted = {
        let mut live = shared.live();
        tls::admit(&peer, &live.topology, &shared.me).map(|()| {
            let key = shared.inbound_ids.fetch_add(1, Ordering::Relaxed);
            live.inbound
                .entry(peer.clone())
                .or_default()
                .insert(key, connection.clone());
            if let Some(wake) = live.wakes.get(&peer) {
                wake.notify_one();
            }
            Registered {
                shared: shared.clone(),
                neighbour: peer.clone(),
                key,
            }
        })
    };
    let registered = match admitted {
        Ok(registered) => registered,
        Err(refusal) => {
            let reason = refusal.to_string();
            connection.close(VarInt::from_u32(code::REFUSED), reason.as_bytes());
            return Err(reason);
        }
    };
    let (send, recv) = connection
        .accept_bi()
        .await
        .map_err(|e| format!("`{peer}` opened no stream: {e}"))?;
    Ok((peer, connection, send, recv, registered))
}

/// An admitted incoming connection's entry in [`super::Live::inbound`], removed when dropped: after
/// its `run`, or when the handshake times out or fails after admission.
struct Registered<E: Sink> {
    shared: Arc<Shared<E>>,
    neighbour: ManagerName,
    key: u64,
}

impl<E: Sink> Drop for Registered<E> {
    fn drop(&mut self) {
        let mut live = self.shared.live();
        if let Some(connections) = live.inbound.get_mut(&self.neighbour) {
            connections.remove(&self.key);
            if connections.is_empty() {
                live.inbound.remove(&self.neighbour);
            }
        }
    }
}

//! The QUIC driver of the channels: moves [`ChannelFrame`]s between quinn streams and the
//! manager core, and nothing else (every protocol decision is the core's and the state
//! machines').
//!
//! One endpoint per manager, on its topology address. For each neighbour a dialler keeps one
//! outgoing connection up (backoff with jitter from [`RECONNECT_DELAY_MIN`] to
//! [`RECONNECT_DELAY_MAX`]); the neighbour's own dialler makes the connection that comes the
//! other way. Each connection carries one long-lived bidirectional stream, opened by the
//! dialler, which sends on it (DESIGN.md: never a stream per message).
//!
//! Invariants:
//! - mutual TLS 1.3 (see [`crate::tls`]); an incoming peer is registered with the core only
//!   after its certificate chained to the CA and [`crate::tls::admit`] accepted its name; a
//!   dialled peer only if its certificate names exactly the neighbour dialled;
//! - before authentication a peer costs bounded resources: at most [`HANDSHAKES_MAX`]
//!   handshakes at once (more are refused), each within [`HANDSHAKE_TIMEOUT`], and quinn's
//!   incoming buffers are capped;
//! - frames are decoded with [`frame::decode`], which checks the length prefix before
//!   anything is allocated; a malformed frame closes that connection with a logged reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hopmq_routing::{ManagerName, PeerAddress, Topology};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, TransportConfig, VarInt};
use rustls_pki_types::CertificateDer;
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{debug, info, warn};

use super::frame::{self, ChannelFrame};
use crate::manager::core::Channel;
use crate::manager::{ChannelDirection, Command};
use crate::tls::{self, LinkTls};

/// Handshakes in progress at once; more incoming connections are refused until one ends.
pub const HANDSHAKES_MAX: usize = 64;
/// A peer that has not finished its TLS handshake and opened its stream by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// First delay before redialling a neighbour.
pub const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);
/// Longest delay between dials.
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(30);
/// QUIC keep-alive: a ping this often keeps an idle link warm and measured.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(500);
/// A link silent this long is dead (a `kill -9`ed peer sends nothing): "within a few
/// seconds" (DESIGN.md), and several keep-alives must be lost first.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// UDP socket buffers: the default lost 1–1.6% of packets on loopback (DESIGN.md).
pub const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Per-stream and per-connection receive window: a full batch and more, so one stream keeps a
/// LAN link busy (16 MiB at 1 Gbit/s is ~130 ms of data).
pub const RECEIVE_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// Bytes of frames coalesced into one stream write.
const WRITE_COALESCE_BYTES: usize = 1024 * 1024;
/// Bytes read from a stream at a time.
const READ_CHUNK_BYTES: usize = 256 * 1024;

const _: () = assert!(KEEP_ALIVE_INTERVAL.as_millis() * 4 <= IDLE_TIMEOUT.as_millis());
const _: () = assert!(frame::CHANNEL_FRAME_BYTES_MAX <= RECEIVE_WINDOW_BYTES as usize * 2);

/// Application error codes on connection close (part of the wire protocol).
pub mod code {
    /// An orderly end (the manager stops, a newer connection replaced this one).
    pub const NORMAL: u32 = 0;
    /// An error ended it: a malformed frame, a protocol violation, a local fault.
    pub const PROTOCOL: u32 = 1;
    /// The peer was not admitted.
    pub const REFUSED: u32 = 2;
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// The manager has no address in the topology.
    #[error("manager `{0}` has no address in the topology")]
    NoAddress(ManagerName),
    /// Its address does not resolve.
    #[error("cannot resolve {address}: {reason}")]
    Resolve { address: String, reason: String },
    /// The UDP socket could not be set up.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// rustls configurations quinn cannot use.
    #[error("TLS configuration unusable for QUIC: {0}")]
    Tls(String),
}

/// What the driver needs.
pub struct DriverConfig {
    /// This manager.
    pub me: ManagerName,
    /// The topology in force (addresses, links).
    pub topology: Topology,
    /// TLS for links.
    pub tls: LinkTls,
    /// Where frames and connection events go.
    pub commands: mpsc::Sender<Command>,
}

/// The running driver; [`Driver::close`] ends every connection.
pub struct Driver {
    endpoint: Endpoint,
}

impl Driver {
    /// Binds the endpoint and starts accepting and dialling.
    pub async fn start(
        config: DriverConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Driver, QuicError> {
        let me = config.me.clone();
        let address = config
            .topology
            .manager(me.as_str())
            .and_then(|m| m.address.clone())
            .ok_or_else(|| QuicError::NoAddress(me.clone()))?;
        let bind = resolve(&address).await?;
        let transport = Arc::new(transport_config());
        let server_crypto = QuicServerConfig::try_from(config.tls.server.clone())
            .map_err(|e| QuicError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server
            .transport_config(transport.clone())
            .max_incoming(HANDSHAKES_MAX)
            .incoming_buffer_size(64 * 1024)
            .incoming_buffer_size_total(HANDSHAKES_MAX as u64 * 64 * 1024)
            .migration(false);
        let client_crypto = QuicClientConfig::try_from(config.tls.client.clone())
            .map_err(|e| QuicError::Tls(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport);
        let socket = udp_socket(bind).map_err(|source| QuicError::Bind {
            address: bind,
            source,
        })?;
        let endpoint = Endpoint::new(
            endpoint_config(&config.tls.reset_secret),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| QuicError::Bind {
            address: bind,
            source,
        })?;
        let local_address = endpoint.local_addr().unwrap_or(bind);
        info!(address = %local_address, "channel endpoint listening (QUIC, mutual TLS 1.3)");
        let shared = Arc::new(Shared {
            me,
            topology: config.topology,
            commands: config.commands,
            ids: AtomicU64::new(0),
        });
        tokio::spawn(accept(endpoint.clone(), shared.clone(), shutdown.clone()));
        let neighbours: Vec<ManagerName> =
            shared.topology.neighbours(&shared.me).cloned().collect();
        for neighbour in neighbours {
            let Some(address) = shared
                .topology
                .manager(neighbour.as_str())
                .and_then(|m| m.address.clone())
            else {
                warn!(%neighbour, "neighbour has no address; not dialling it");
                continue;
            };
            tokio::spawn(dial(
                endpoint.clone(),
                client.clone(),
                shared.clone(),
                neighbour,
                address,
                shutdown.clone(),
            ));
        }
        Ok(Driver { endpoint })
    }

    /// Closes every connection and waits briefly for the peers to hear it.
    pub async fn close(&self) {
        self.endpoint
            .close(VarInt::from_u32(code::NORMAL), b"manager stopping");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

struct Shared {
    me: ManagerName,
    topology: Topology,
    commands: mpsc::Sender<Command>,
    ids: AtomicU64,
}

/// Stateless resets and connection ids keyed by `secret`, stable across restarts: a
/// restarted manager recognises the connection ids its previous run issued and resets those
/// connections, so a peer of a `kill -9`ed manager notices the restart at its first packet
/// instead of after [`IDLE_TIMEOUT`].
fn endpoint_config(secret: &[u8; 32]) -> quinn::EndpointConfig {
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    let cid_key = u64::from_le_bytes([
        secret[24], secret[25], secret[26], secret[27], secret[28], secret[29], secret[30],
        secret[31],
    ]);
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

fn transport_config() -> TransportConfig {
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(IDLE_TIMEOUT)
                .unwrap_or_else(|e| unreachable!("{IDLE_TIMEOUT:?} is a valid idle timeout: {e}")),
        ))
        .stream_receive_window(VarInt::from_u32(RECEIVE_WINDOW_BYTES))
        .receive_window(VarInt::from_u32(RECEIVE_WINDOW_BYTES))
        .send_window(u64::from(RECEIVE_WINDOW_BYTES));
    transport
}

fn udp_socket(address: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // The kernel caps these at net.core.[rw]mem_max; a smaller buffer still works.
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
        warn!(error = %e, "cannot enlarge the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
        warn!(error = %e, "cannot enlarge the UDP send buffer");
    }
    socket.bind(&address.into())?;
    Ok(socket.into())
}

async fn resolve(address: &PeerAddress) -> Result<SocketAddr, QuicError> {
    match address {
        PeerAddress::Socket(socket) => Ok(*socket),
        PeerAddress::Host { host, port } => tokio::net::lookup_host((host.as_str(), *port))
            .await
            .map_err(|e| QuicError::Resolve {
                address: address.to_string(),
                reason: e.to_string(),
            })?
            .next()
            .ok_or_else(|| QuicError::Resolve {
                address: address.to_string(),
                reason: "no address found".into(),
            }),
    }
}

/// The manager a connection's verified certificate names.
fn peer_name(connection: &quinn::Connection) -> Result<ManagerName, String> {
    let identity = connection
        .peer_identity()
        .ok_or_else(|| "no peer certificate".to_owned())?;
    let certs = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| "peer identity is not a certificate chain".to_owned())?;
    tls::peer_manager_name(&certs).map_err(|e| e.to_string())
}

async fn accept(endpoint: Endpoint, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
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
                Ok(Ok((neighbour, connection, send, recv))) => {
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

type Admitted = (
    ManagerName,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
);

/// The TLS handshake, the admission check, and the peer's stream.
async fn admit(incoming: quinn::Incoming, shared: &Shared) -> Result<Admitted, String> {
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
    if let Err(refusal) = tls::admit(&peer, &shared.topology, &shared.me) {
        let reason = refusal.to_string();
        connection.close(VarInt::from_u32(code::REFUSED), reason.as_bytes());
        return Err(reason);
    }
    let (send, recv) = connection
        .accept_bi()
        .await
        .map_err(|e| format!("`{peer}` opened no stream: {e}"))?;
    Ok((peer, connection, send, recv))
}

async fn dial(
    endpoint: Endpoint,
    client: quinn::ClientConfig,
    shared: Arc<Shared>,
    neighbour: ManagerName,
    address: PeerAddress,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut delay = RECONNECT_DELAY_MIN;
    let mut failures = 0u64;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let attempt = async {
            let remote = resolve(&address).await.map_err(|e| e.to_string())?;
            let server_name = tls::server_name(&neighbour).map_err(|e| e.to_string())?;
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
            if peer != neighbour {
                let reason = format!("certificate names `{peer}`, not `{neighbour}`");
                connection.close(VarInt::from_u32(code::REFUSED), reason.as_bytes());
                return Err(reason);
            }
            let (send, recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((connection, send, recv))
        };
        let attempt = tokio::select! {
            attempt = attempt => attempt,
            _ = shutdown.changed() => return,
        };
        match attempt {
            Ok((connection, send, recv)) => {
                if failures > 0 {
                    info!(%neighbour, failures, "channel reconnected");
                }
                failures = 0;
                delay = RECONNECT_DELAY_MIN;
                let lasted = Instant::now();
                tokio::select! {
                    () = run(&shared, neighbour.clone(), ChannelDirection::Outbound, connection, send, recv) => {}
                    _ = shutdown.changed() => return,
                }
                // A connection that dies at once (a peer refusing us) must not be redialled
                // in a tight loop.
                if lasted.elapsed() < Duration::from_secs(1) {
                    delay = RECONNECT_DELAY_MIN * 4;
                }
            }
            Err(reason) => {
                failures += 1;
                // The first failure says why; later ones only at debug, so a neighbour that
                // is down for hours does not flood the log.
                if failures == 1 || failures.is_power_of_two() {
                    warn!(%neighbour, %address, %reason, failures, "cannot connect channel; retrying");
                } else {
                    debug!(%neighbour, %reason, failures, "cannot connect channel");
                }
            }
        }
        let jittered = jitter(delay);
        tokio::select! {
            () = tokio::time::sleep(jittered) => {}
            _ = shutdown.changed() => return,
        }
        delay = (delay * 2).min(RECONNECT_DELAY_MAX);
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

/// Moves frames both ways until the connection or the core ends it.
async fn run(
    shared: &Shared,
    neighbour: ManagerName,
    direction: ChannelDirection,
    connection: quinn::Connection,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let id = shared.ids.fetch_add(1, Ordering::Relaxed) + 1;
    let (frames_tx, frames_rx) = mpsc::channel(crate::manager::core::CHANNEL_FRAMES_MAX);
    let channel = Channel {
        id,
        frames: frames_tx,
        quic: Some(connection.clone()),
    };
    let opened = Command::ChannelOpened {
        neighbour: neighbour.clone(),
        direction,
        channel,
    };
    if shared.commands.send(opened).await.is_err() {
        return;
    }
    let writer = tokio::spawn(write_frames(send, frames_rx, connection.clone()));
    let reason = read_frames(&mut recv, id, &shared.commands).await;
    match &reason {
        ReadEnd::Malformed(why) => {
            warn!(%neighbour, ?direction, connection = id, reason = %why, "closing channel: malformed frame");
            connection.close(VarInt::from_u32(code::PROTOCOL), why.as_bytes());
        }
        ReadEnd::Closed(why) => {
            debug!(%neighbour, ?direction, connection = id, reason = %why, "channel stream ended");
            connection.close(VarInt::from_u32(code::NORMAL), b"stream ended");
        }
    }
    writer.abort();
    let reason = match reason {
        ReadEnd::Malformed(why) => format!("malformed frame: {why}"),
        ReadEnd::Closed(why) => why,
    };
    let _ = shared
        .commands
        .send(Command::ChannelClosed {
            connection: id,
            reason,
        })
        .await;
}

enum ReadEnd {
    Malformed(String),
    Closed(String),
}

async fn read_frames(
    recv: &mut quinn::RecvStream,
    connection: u64,
    commands: &mpsc::Sender<Command>,
) -> ReadEnd {
    let mut buffer: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut start = 0usize;
    loop {
        loop {
            match frame::decode(&buffer[start..]) {
                Ok(Some((frame, used))) => {
                    start += used;
                    if commands
                        .send(Command::ChannelFrame { connection, frame })
                        .await
                        .is_err()
                    {
                        return ReadEnd::Closed("manager stopping".into());
                    }
                }
                Ok(None) => break,
                Err(e) => return ReadEnd::Malformed(e.to_string()),
            }
        }
        if start > 0 {
            buffer.drain(..start);
            start = 0;
        }
        // Read at most what completes the frame being assembled (the prefix was checked
        // against the limit), or a chunk: the buffer never outgrows one frame plus a chunk.
        match recv.read_chunk(READ_CHUNK_BYTES, true).await {
            Ok(Some(chunk)) => buffer.extend_from_slice(&chunk.bytes),
            Ok(None) => return ReadEnd::Closed("peer finished its stream".into()),
            Err(e) => return ReadEnd::Closed(e.to_string()),
        }
    }
}

async fn write_frames(
    mut send: quinn::SendStream,
    mut frames: mpsc::Receiver<ChannelFrame>,
    connection: quinn::Connection,
) {
    while let Some(first) = frames.recv().await {
        // Frames are encoded in place into one buffer that quinn then takes as it is.
        let mut buffer = Vec::with_capacity(WRITE_COALESCE_BYTES.min(64 * 1024));
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            match frame::encode_into(&frame, buffer) {
                Ok(encoded) => buffer = encoded,
                Err(e) => {
                    warn!(error = %e, "a frame could not be encoded; closing the channel");
                    connection.close(VarInt::from_u32(code::PROTOCOL), b"encoding error");
                    return;
                }
            }
            if buffer.len() < WRITE_COALESCE_BYTES {
                next = frames.try_recv().ok();
            }
        }
        if send.write_chunk(bytes::Bytes::from(buffer)).await.is_err() {
            return;
        }
    }
    // The core dropped the channel: it is done with this connection.
    let _ = send.finish();
}

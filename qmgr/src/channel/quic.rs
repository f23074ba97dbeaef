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
//! The topology is live: [`Driver::apply`] swaps the one admission checks, starts diallers
//! for new neighbours, stops those of removed ones (and restarts the dialler of a neighbour
//! whose address changed), and closes the incoming connections of managers no longer linked.
//! A stopped connection still ends through its `run`, so the core always gets its
//! `ChannelClosed`.
//!
//! Invariants:
//! - mutual TLS 1.3 (see [`crate::tls`]); an incoming peer is registered with the core only
//!   after its certificate chained to the CA and [`crate::tls::admit`] accepted its name; a
//!   dialled peer only if its certificate names exactly the neighbour dialled;
//! - admission and [`Driver::apply`] are ordered by one lock over the topology in force and
//!   the registry of admitted incoming connections: a peer admitted under the old topology is
//!   registered before `apply` looks, so once `apply` returns no connection of an unlinked
//!   manager remains open;
//! - before authentication a peer costs bounded resources: at most [`HANDSHAKES_MAX`]
//!   handshakes at once (more are refused), each within [`HANDSHAKE_TIMEOUT`], and quinn's
//!   incoming buffers are capped;
//! - frames are decoded with [`frame::take_frame`], which checks the length prefix before
//!   anything is allocated; a malformed frame closes that connection with a logged reason.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hopmq_routing::{ManagerName, PeerAddress, Topology};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, TransportConfig, VarInt};
use rustls_pki_types::CertificateDer;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::connection::{Channel, ChannelDirection, Event};
use super::frame::{self, ChannelFrame};
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
/// How long [`Driver::apply`] waits for a stopped dialler's connection to end (its `run` hands
/// the core a `ChannelClosed` first, which takes a round through the command channel; a core
/// busier than this is not waited for, and the dialler finishes on its own).
pub const DIALLER_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a stopping manager waits for its connections to go idle. The close goes out at
/// once; idle comes only after three probe timeouts, which for a peer that is down (still
/// dialled, never answering) are seconds away, so this only lets the close be sent.
const CLOSE_WAIT: Duration = Duration::from_millis(200);
/// The reason a connection is closed with when its link leaves the topology.
const LINK_REMOVED: &str = "link removed from the topology";
/// Bytes of frames coalesced into one stream write.
const WRITE_COALESCE_BYTES: usize = 1024 * 1024;
/// Bytes read from a stream at a time.
const READ_CHUNK_BYTES: usize = 256 * 1024;

const _: () = assert!(KEEP_ALIVE_INTERVAL.as_millis() * 4 <= IDLE_TIMEOUT.as_millis());
/// The largest UDP payload a connection grows to by path MTU discovery (quinn's default stops
/// at 1,452, an Ethernet path's). Loopback, and data centres with jumbo frames, carry more: at
/// this size a 1 KiB message costs a fifth of a packet instead of two thirds, and the 3-hop
/// bench moved 78–85k msg/s instead of 65–68k (BENCHMARKS.md, session 15). A path that carries
/// less loses only the probes and stays where it is. Bounded so that quinn's batches of up to
/// 10 datagrams stay within the 65,507 bytes one segmentation-offloaded send may carry: past
/// that every batch failed and the connection stalled.
pub const UDP_PAYLOAD_BYTES_MAX: u16 = 6_500;
const QUINN_TRANSMIT_DATAGRAMS_MAX: u32 = 10;
const _: () = assert!(UDP_PAYLOAD_BYTES_MAX as u32 * QUINN_TRANSMIT_DATAGRAMS_MAX <= 65_507);
const _: () = assert!(frame::CHANNEL_FRAME_BYTES_MAX <= RECEIVE_WINDOW_BYTES as usize * 2);

/// Application error codes on connection close (part of the wire protocol).
pub use super::connection::code;

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
    /// A new topology moves this manager: its endpoint is bound to the old address.
    #[error(
        "the address of manager `{me}` changed from {} to {}; changing this manager's own address needs a restart",
        show_address(.old.as_ref()),
        show_address(.new.as_ref())
    )]
    AddressChanged {
        me: ManagerName,
        old: Option<PeerAddress>,
        new: Option<PeerAddress>,
    },
}

fn show_address(address: Option<&PeerAddress>) -> String {
    address.map_or_else(|| "none".to_owned(), |a| format!("`{a}`"))
}

/// Where the driver's [`Event`]s go: any queue whose items can be made from one (the
/// manager's command queue), so the driver need not know the manager.
pub trait Sink: From<Event> + Send + 'static {}

impl<T: From<Event> + Send + 'static> Sink for T {}

/// What the driver needs.
pub struct DriverConfig<E> {
    /// This manager.
    pub me: ManagerName,
    /// The topology in force (addresses, links).
    pub topology: Topology,
    /// TLS for links.
    pub tls: LinkTls,
    /// Where frames and connection events go.
    pub events: mpsc::Sender<E>,
}

/// The running driver; [`Driver::apply`] follows topology edits, [`Driver::close`] ends every
/// connection.
pub struct Driver<E: Sink> {
    endpoint: Endpoint,
    client: quinn::ClientConfig,
    shared: Arc<Shared<E>>,
    /// The address the endpoint is bound to, as the topology spells it.
    address: PeerAddress,
    shutdown: watch::Receiver<bool>,
    /// One dialler per neighbour with an address. An async lock, held for a whole
    /// [`Driver::apply`] (which awaits stopped diallers), so two applies never interleave.
    diallers: tokio::sync::Mutex<BTreeMap<ManagerName, DiallerHandle>>,
}

/// A running dialler, and how to stop it.
struct DiallerHandle {
    /// Where it dials; a change restarts it.
    address: PeerAddress,
    /// `true` asks it to close its connection (after which its `run` still reports the
    /// close) and end.
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl<E: Sink> Driver<E> {
    /// Binds the endpoint and starts accepting and dialling.
    pub async fn start(
        config: DriverConfig<E>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Driver<E>, QuicError> {
        let me = config.me.clone();
        let address = config
            .topology
            .manager(me.as_str())
            .and_then(|m| m.address.clone())
            .ok_or_else(|| QuicError::NoAddress(me.clone()))?;
        let bind = resolve(&address).await?;
        let (endpoint, client) = bind_endpoint(&config.tls, bind)?;
        let local_address = endpoint.local_addr().unwrap_or(bind);
        info!(address = %local_address, "channel endpoint listening (QUIC, mutual TLS 1.3)");
        let neighbours = neighbour_addresses(&config.topology, &me);
        let shared = Arc::new(Shared {
            me,
            live: Mutex::new(Live {
                topology: Arc::new(config.topology),
                inbound: BTreeMap::new(),
                wakes: BTreeMap::new(),
            }),
            events: config.events,
            ids: AtomicU64::new(0),
            inbound_ids: AtomicU64::new(0),
        });
        tokio::spawn(accept(endpoint.clone(), shared.clone(), shutdown.clone()));
        let mut driver = Driver {
            endpoint,
            client,
            shared,
            address,
            shutdown,
            diallers: tokio::sync::Mutex::new(BTreeMap::new()),
        };
        let diallers = neighbours
            .into_iter()
            .map(|(neighbour, address)| {
                let handle = driver.spawn_dialler(neighbour.clone(), address);
                (neighbour, handle)
            })
            .collect();
        *driver.diallers.get_mut() = diallers;
        Ok(driver)
    }

    /// Makes `topology` the one in force: admission checks it from now on, new neighbours are
    /// dialled, removed ones' diallers are stopped (their connections closed with
    /// [`code::NORMAL`], each still reported to the core by its `run`), a neighbour whose
    /// address changed is redialled at the new one, and incoming connections of managers no
    /// longer linked are closed. Returns once the stopped diallers ended (at most
    /// [`DIALLER_STOP_TIMEOUT`]), so their `ChannelClosed` reach the core before anything the
    /// caller sends next.
    ///
    /// Refuses, changing nothing, a topology that moves this manager to another address (or
    /// drops it): the endpoint stays bound where it is.
    pub async fn apply(&self, topology: &Topology) -> Result<(), QuicError> {
        let me = &self.shared.me;
        let new_address = topology
            .manager(me.as_str())
            .and_then(|m| m.address.clone());
        if new_address.as_ref() != Some(&self.address) {
            return Err(QuicError::AddressChanged {
                me: me.clone(),
                old: Some(self.address.clone()),
                new: new_address,
            });
        }
        let mut diallers = self.diallers.lock().await;
        let topology = Arc::new(topology.clone());
        let unlinked: Vec<(ManagerName, quinn::Connection)> = {
            let mut live = self.shared.live();
            live.topology = topology.clone();
            live.inbound
                .iter()
                .filter(|(peer, _)| topology.link(peer, me).is_none())
                .flat_map(|(peer, connections)| {
                    connections.values().map(|c| (peer.clone(), c.clone()))
                })
                .collect()
        };
        // Closed outside the lock: closing wakes the connection's tasks, which take the lock
        // again to unregister.
        for (peer, connection) in unlinked {
            info!(neighbour = %peer, "closing incoming channel: {LINK_REMOVED}");
            connection.close(VarInt::from_u32(code::NORMAL), LINK_REMOVED.as_bytes());
        }
        let wanted = neighbour_addresses(&topology, me);
        let outdated: Vec<ManagerName> = diallers
            .iter()
            .filter(|(neighbour, handle)| wanted.get(*neighbour) != Some(&handle.address))
            .map(|(neighbour, _)| neighbour.clone())
            .collect();
        let mut stopping = Vec::with_capacity(outdated.len());
        for neighbour in outdated {
            if let Some(handle) = diallers.remove(&neighbour) {
                match wanted.get(&neighbour) {
                    Some(address) => {
                        info!(%neighbour, from = %handle.address, to = %address, "neighbour moved; redialling it")
                    }
                    None => {
                        info!(%neighbour, "link removed from the topology; closing its channel")
                    }
                }
                // An error means the dialler already ended.
                let _ = handle.stop.send(true);
                stopping.push((neighbour, handle.task));
            }
        }
        // Every dialler was told first, so they stop in parallel within one deadline.
        let deadline = tokio::time::Instant::now() + DIALLER_STOP_TIMEOUT;
        for (neighbour, mut task) in stopping {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                warn!(%neighbour, "the channel did not close within {DIALLER_STOP_TIMEOUT:?}; leaving it to finish");
            }
        }
        for (neighbour, address) in wanted {
            if let std::collections::btree_map::Entry::Vacant(entry) = diallers.entry(neighbour) {
                info!(neighbour = %entry.key(), %address, "link added to the topology; dialling it");
                let handle = self.spawn_dialler(entry.key().clone(), address);
                entry.insert(handle);
            }
        }
        Ok(())
    }

    fn spawn_dialler(&self, neighbour: ManagerName, address: PeerAddress) -> DiallerHandle {
        let (stop, stopped) = watch::channel(false);
        let wake = Arc::new(tokio::sync::Notify::new());
        self.shared
            .live()
            .wakes
            .insert(neighbour.clone(), wake.clone());
        let task = tokio::spawn(dial(
            self.endpoint.clone(),
            self.client.clone(),
            self.shared.clone(),
            neighbour,
            address.clone(),
            self.shutdown.clone(),
            DiallerSignals {
                stop: stopped,
                wake,
            },
        ));
        DiallerHandle {
            address,
            stop,
            task,
        }
    }

    /// Closes every connection and waits briefly for the peers to hear it.
    pub async fn close(&self) {
        self.endpoint
            .close(VarInt::from_u32(code::NORMAL), b"manager stopping");
        let _ = tokio::time::timeout(CLOSE_WAIT, self.endpoint.wait_idle()).await;
    }
}

/// The neighbours of `me` that can be dialled, with their addresses. Every manager of a
/// parsed file has an address, so the warning is for hand-built topologies.
fn neighbour_addresses(
    topology: &Topology,
    me: &ManagerName,
) -> BTreeMap<ManagerName, PeerAddress> {
    topology
        .neighbours(me)
        .filter_map(|neighbour| {
            match topology
                .manager(neighbour.as_str())
                .and_then(|m| m.address.clone())
            {
                Some(address) => Some((neighbour.clone(), address)),
                None => {
                    warn!(%neighbour, "neighbour has no address; not dialling it");
                    None
                }
            }
        })
        .collect()
}

struct Shared<E> {
    me: ManagerName,
    /// What admission and [`Driver::apply`] share. A narrow lock, not the driver's state: held
    /// only for a check-and-insert or a swap, never across an await.
    live: Mutex<Live>,
    events: mpsc::Sender<E>,
    ids: AtomicU64,
    /// Keys of [`Live::inbound`] entries.
    inbound_ids: AtomicU64,
}

struct Live {
    /// The topology [`crate::tls::admit`] checks incoming peers against.
    topology: Arc<Topology>,
    /// The admitted incoming connections of each neighbour, until their `run` ends (one per
    /// dial of the neighbour's; a stale one lives at most [`IDLE_TIMEOUT`] after a restart).
    inbound: BTreeMap<ManagerName, BTreeMap<u64, quinn::Connection>>,
    /// Per neighbour, what wakes its dialler from its backoff: a neighbour that has just
    /// dialled us is up, so ours should not wait out a delay grown while it was down.
    wakes: BTreeMap<ManagerName, Arc<tokio::sync::Notify>>,
}

impl<E> Shared<E> {
    fn live(&self) -> MutexGuard<'_, Live> {
        // A panic while holding the lock leaves the maps whole (each change is one insert,
        // remove or swap), so the data is still good.
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An admitted incoming connection's entry in [`Live::inbound`], removed when dropped: after
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
    // What this endpoint accepts (and tells peers): discovery never probes past it.
    config
        .max_udp_payload_size(UDP_PAYLOAD_BYTES_MAX)
        .unwrap_or_else(|e| {
            unreachable!("{UDP_PAYLOAD_BYTES_MAX} is a valid UDP payload size: {e}")
        });
    config
}

/// A channel endpoint bound to `bind`, accepting links, and the configuration it dials with:
/// mutual TLS from `tls`, [`transport_config`], [`udp_socket`]. Must be called inside a tokio
/// runtime, which then drives the endpoint.
pub fn bind_endpoint(
    tls: &LinkTls,
    bind: SocketAddr,
) -> Result<(Endpoint, quinn::ClientConfig), QuicError> {
    let transport = Arc::new(transport_config());
    let server_crypto = QuicServerConfig::try_from(tls.server.clone())
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server
        .transport_config(transport.clone())
        .max_incoming(HANDSHAKES_MAX)
        .incoming_buffer_size(64 * 1024)
        .incoming_buffer_size_total(HANDSHAKES_MAX as u64 * 64 * 1024)
        .migration(false);
    let client_crypto = QuicClientConfig::try_from(tls.client.clone())
        .map_err(|e| QuicError::Tls(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
    client.transport_config(transport);
    let socket = udp_socket(bind).map_err(|source| QuicError::Bind {
        address: bind,
        source,
    })?;
    let endpoint = Endpoint::new(
        endpoint_config(&tls.reset_secret),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| QuicError::Bind {
        address: bind,
        source,
    })?;
    Ok((endpoint, client))
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
    let mut discovery = quinn::MtuDiscoveryConfig::default();
    discovery.upper_bound(UDP_PAYLOAD_BYTES_MAX);
    transport.mtu_discovery_config(Some(discovery));
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

async fn accept<E: Sink>(
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

/// What a dialler listens to besides shutdown.
struct DiallerSignals {
    /// `true`: close the connection and end (see [`DiallerHandle::stop`]).
    stop: watch::Receiver<bool>,
    /// The neighbour dialled in: retry now instead of after the backoff.
    wake: Arc<tokio::sync::Notify>,
}

async fn dial<E: Sink>(
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
        // A stop before the connection is up leaves nothing to report: the core heard of no
        // connection yet. Stops first: a stopping endpoint also fails the attempt, which is
        // no reason to warn.
        let attempt = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            _ = stop.changed() => return,
            attempt = attempt => attempt,
            // An attempt begun while the neighbour was down waits for QUIC's retransmission
            // backoff (seconds); the neighbour that just dialled in answers a fresh one now.
            () = wake.notified() => {
                debug!(%neighbour, "the neighbour dialled in; dialling it again now");
                delay = RECONNECT_DELAY_MIN;
                continue;
            }
        };
        match attempt {
            Ok((connection, send, recv)) => {
                if failures > 0 {
                    info!(%neighbour, failures, "channel reconnected");
                }
                failures = 0;
                delay = RECONNECT_DELAY_MIN;
                let lasted = Instant::now();
                let running = run(
                    &shared,
                    neighbour.clone(),
                    ChannelDirection::Outbound,
                    connection.clone(),
                    send,
                    recv,
                );
                tokio::pin!(running);
                tokio::select! {
                    () = &mut running => {}
                    _ = shutdown.changed() => return,
                    _ = stop.changed() => {
                        // Not dropped mid-run: closing ends its reads, and it then tells the
                        // core the connection is gone.
                        connection.close(VarInt::from_u32(code::NORMAL), LINK_REMOVED.as_bytes());
                        running.await;
                        return;
                    }
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
async fn run<E: Sink>(
    shared: &Shared<E>,
    neighbour: ManagerName,
    direction: ChannelDirection,
    connection: quinn::Connection,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let id = shared.ids.fetch_add(1, Ordering::Relaxed) + 1;
    let (frames_tx, frames_rx) = mpsc::channel(super::connection::CHANNEL_FRAMES_MAX);
    let channel = Channel {
        id,
        frames: frames_tx,
        quic: Some(connection.clone()),
    };
    let opened = Event::Opened {
        neighbour: neighbour.clone(),
        direction,
        channel,
    };
    if shared.events.send(opened.into()).await.is_err() {
        return;
    }
    let writer = tokio::spawn(write_frames(send, frames_rx, connection.clone()));
    let reason = read_frames(&mut recv, id, &shared.events).await;
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
    let closed = Event::Closed {
        connection: id,
        reason,
    };
    let _ = shared.events.send(closed.into()).await;
}

enum ReadEnd {
    Malformed(String),
    Closed(String),
}

async fn read_frames<E: Sink>(
    recv: &mut quinn::RecvStream,
    connection: u64,
    events: &mpsc::Sender<E>,
) -> ReadEnd {
    let mut buffer = bytes::BytesMut::new();
    loop {
        loop {
            match frame::take_frame(&mut buffer) {
                Ok(Some(frame)) => {
                    if events
                        .send(Event::Frame { connection, frame }.into())
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
        // Once a frame's prefix is in (checked against the limit by `take_frame`), its whole
        // size is reserved and no more than its rest is read: the buffer never grows by
        // copying, and never holds more than one frame plus a chunk.
        let mut read_max = READ_CHUNK_BYTES;
        if let Some(prefix) = buffer.first_chunk::<{ frame::LENGTH_PREFIX_BYTES }>() {
            let frame_bytes = frame::LENGTH_PREFIX_BYTES + u32::from_le_bytes(*prefix) as usize;
            buffer.reserve(frame_bytes - buffer.len());
            read_max = frame_bytes - buffer.len();
        }
        match recv.read_chunk(read_max, true).await {
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
    let mut chunks: Vec<bytes::Bytes> = Vec::new();
    while let Some(first) = frames.recv().await {
        // Each frame is encoded into a buffer of its own size, and the frames waiting are
        // handed to quinn in one call: one growing buffer re-copied every batch it held.
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            match frame::encode(&frame) {
                Ok(encoded) => {
                    bytes += encoded.len();
                    chunks.push(bytes::Bytes::from(encoded));
                }
                Err(e) => {
                    warn!(error = %e, "a frame could not be encoded; closing the channel");
                    connection.close(VarInt::from_u32(code::PROTOCOL), b"encoding error");
                    return;
                }
            }
            if bytes < WRITE_COALESCE_BYTES {
                next = frames.try_recv().ok();
            }
        }
        if send.write_all_chunks(&mut chunks).await.is_err() {
            return;
        }
        chunks.clear();
    }
    // The core dropped the channel: it is done with this connection.
    let _ = send.finish();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    use time::OffsetDateTime;

    use super::*;
    use crate::config::TlsSettings;

    /// Generous for a loopback handshake on a loaded machine; only a bug waits this long.
    const DEADLINE: Duration = Duration::from_secs(20);

    fn name(s: &str) -> ManagerName {
        ManagerName::new(s).unwrap()
    }

    fn free_udp_port() -> u16 {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    }

    fn topology(alpha: u16, bravo: u16, linked: bool) -> Topology {
        let mut text = format!(
            "[managers.alpha]\naddress = \"127.0.0.1:{alpha}\"\n\
             [managers.bravo]\naddress = \"127.0.0.1:{bravo}\"\n"
        );
        if linked {
            text.push_str("[[links]]\nbetween = [\"alpha\", \"bravo\"]\n");
        }
        hopmq_routing::parse(&text, "t.toml").unwrap().topology
    }

    /// A connection event as the core sees it.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Opened(ChannelDirection, u64),
        Closed(u64),
    }

    /// One manager's driver, with a stand-in for its core that reports connection events.
    struct Side {
        driver: Driver<Event>,
        seen: mpsc::UnboundedReceiver<Seen>,
        /// The QUIC connections of every channel opened.
        connections: Arc<Mutex<Vec<quinn::Connection>>>,
        _shutdown: watch::Sender<bool>,
    }

    /// What the core does with connections, reduced to what the driver needs: it keeps each
    /// channel (dropping it would finish the stream) and sends a first frame on outbound ones
    /// (a stream is seen by the peer only once something is sent on it, as the Hello is).
    async fn stand_in_core(
        mut commands: mpsc::Receiver<Event>,
        seen: mpsc::UnboundedSender<Seen>,
        connections: Arc<Mutex<Vec<quinn::Connection>>>,
    ) {
        let mut channels = Vec::new();
        while let Some(command) = commands.recv().await {
            let event = match command {
                Event::Opened {
                    direction, channel, ..
                } => {
                    let id = channel.id;
                    connections.lock().unwrap().extend(channel.quic.clone());
                    if direction == ChannelDirection::Outbound {
                        let _ = channel.frames.try_send(ChannelFrame::Ping { nonce: id });
                    }
                    channels.push(channel);
                    Seen::Opened(direction, id)
                }
                Event::Closed { connection, .. } => {
                    channels.retain(|c| c.id != connection);
                    Seen::Closed(connection)
                }
                _ => continue,
            };
            if seen.send(event).is_err() {
                return;
            }
        }
    }

    impl Side {
        async fn start(me: &str, topology: &Topology, certs: &Path) -> Side {
            let me = name(me);
            let settings = TlsSettings {
                ca: Some(certs.join("ca.pem")),
                cert: Some(certs.join(format!("{me}.pem"))),
                key: Some(certs.join(format!("{me}.key"))),
            };
            let tls = tls::load_for(&settings, &me).unwrap();
            let (commands_tx, commands) = mpsc::channel(64);
            let (seen_tx, seen) = mpsc::unbounded_channel();
            let connections = Arc::new(Mutex::new(Vec::new()));
            tokio::spawn(stand_in_core(commands, seen_tx, Arc::clone(&connections)));
            let (shutdown_tx, shutdown) = watch::channel(false);
            let driver = Driver::start(
                DriverConfig {
                    me,
                    topology: topology.clone(),
                    tls,
                    events: commands_tx,
                },
                shutdown,
            )
            .await
            .unwrap();
            Side {
                driver,
                seen,
                connections,
                _shutdown: shutdown_tx,
            }
        }

        /// The next connection event, within `wait`.
        async fn next(&mut self, wait: Duration) -> Option<Seen> {
            tokio::time::timeout(wait, self.seen.recv()).await.ok()?
        }

        /// Waits until one connection is open each way; returns (outbound, inbound) ids.
        async fn both_open(&mut self) -> (u64, u64) {
            let (mut outbound, mut inbound) = (None, None);
            while outbound.is_none() || inbound.is_none() {
                match self.next(DEADLINE).await {
                    Some(Seen::Opened(ChannelDirection::Outbound, id)) => outbound = Some(id),
                    Some(Seen::Opened(ChannelDirection::Inbound, id)) => inbound = Some(id),
                    Some(Seen::Closed(id)) => {
                        if outbound == Some(id) {
                            outbound = None;
                        }
                        if inbound == Some(id) {
                            inbound = None;
                        }
                    }
                    None => panic!("no channel opened within {DEADLINE:?}"),
                }
            }
            (outbound.unwrap(), inbound.unwrap())
        }

        /// Waits until every one of `ids` is reported closed.
        async fn closed(&mut self, ids: &[u64]) {
            let mut left: Vec<u64> = ids.to_vec();
            while !left.is_empty() {
                match self.next(DEADLINE).await {
                    Some(Seen::Closed(id)) => left.retain(|&l| l != id),
                    Some(Seen::Opened(..)) => {}
                    None => panic!("connections {left:?} not closed within {DEADLINE:?}"),
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn apply_follows_links_and_addresses() {
        let (alpha_port, bravo_port) = (free_udp_port(), free_udp_port());
        let linked = topology(alpha_port, bravo_port, true);
        let unlinked = topology(alpha_port, bravo_port, false);
        let certs = tempfile::tempdir().unwrap();
        crate::certs::init(&linked, certs.path(), false, OffsetDateTime::now_utc()).unwrap();
        let mut alpha = Side::start("alpha", &linked, certs.path()).await;
        let mut bravo = Side::start("bravo", &linked, certs.path()).await;
        let (outbound, inbound) = alpha.both_open().await;
        bravo.both_open().await;

        // The link leaves alpha's topology: both connections are closed and reported, and
        // bravo's redials are refused.
        alpha.driver.apply(&unlinked).await.unwrap();
        alpha.closed(&[outbound, inbound]).await;
        let quiet = alpha.next(Duration::from_millis(1500)).await;
        assert!(
            !matches!(quiet, Some(Seen::Opened(..))),
            "an unlinked neighbour got a channel: {quiet:?}"
        );

        // Back in: dialled again and admitted again.
        alpha.driver.apply(&linked).await.unwrap();
        let (outbound, _) = alpha.both_open().await;

        // bravo "moves" (to a port nobody listens on): alpha redials it there, so the
        // connection to the old address goes.
        let moved = topology(alpha_port, free_udp_port(), true);
        alpha.driver.apply(&moved).await.unwrap();
        alpha.closed(&[outbound]).await;

        // alpha itself cannot move.
        let error = alpha
            .driver
            .apply(&topology(free_udp_port(), bravo_port, true))
            .await
            .unwrap_err();
        assert!(matches!(error, QuicError::AddressChanged { .. }), "{error}");
        assert!(error.to_string().contains("needs a restart"), "{error}");

        alpha.driver.close().await;
        bravo.driver.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_loopback_link_grows_its_datagrams_past_an_ethernet_paths() {
        let (alpha_port, bravo_port) = (free_udp_port(), free_udp_port());
        let linked = topology(alpha_port, bravo_port, true);
        let certs = tempfile::tempdir().unwrap();
        crate::certs::init(&linked, certs.path(), false, OffsetDateTime::now_utc()).unwrap();
        let mut alpha = Side::start("alpha", &linked, certs.path()).await;
        let mut bravo = Side::start("bravo", &linked, certs.path()).await;
        alpha.both_open().await;
        bravo.both_open().await;
        // Discovery runs by itself once the handshake is confirmed; loopback carries anything.
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mtus: Vec<u16> = alpha
                .connections
                .lock()
                .unwrap()
                .iter()
                .map(|connection| connection.stats().path.current_mtu)
                .collect();
            if !mtus.is_empty() && mtus.iter().all(|&mtu| mtu == UDP_PAYLOAD_BYTES_MAX) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "datagrams of {mtus:?} bytes, not {UDP_PAYLOAD_BYTES_MAX}, after {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        alpha.driver.close().await;
        bravo.driver.close().await;
    }
}

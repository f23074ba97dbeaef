//! The QUIC driver of the channels: moves [`ChannelFrame`](frame::ChannelFrame)s between
//! quinn streams and the manager core, and nothing else (every protocol decision is the core's
//! and the state machines').
//!
//! One endpoint per manager, on its topology address. For each neighbour a dialler keeps one
//! outgoing connection up (backoff with jitter from [`RECONNECT_DELAY_MIN`] to
//! [`RECONNECT_DELAY_MAX`]); the neighbour's own dialler makes the connection that comes the
//! other way. Each connection carries one long-lived bidirectional stream, opened by the
//! dialler, which sends on it (never a stream per message: streams cost more than frames).
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
//!   anything is allocated; a malformed frame closes that connection with a logged reason;
//! - the core holds no QUIC type: it queues frames and closes for a connection's writer, and
//!   reads a round-trip time the driver keeps up to date (see [`super::connection`]).
//!
//! This module owns the driver's shared state and the topology it follows; its children own
//! one concern each: `endpoint` (the socket and the TLS and transport settings), `accept`
//! (admitting incoming peers), `dial` (the dialler of one neighbour) and `stream` (moving one
//! connection's frames both ways).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hopmq_routing::{ManagerName, PeerAddress, Topology};
use quinn::{Endpoint, VarInt};
use rustls_pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::connection::Event;
use super::frame;
use crate::tls::{self, LinkTls};

mod accept;
mod congestion;
mod dial;
mod early;
mod endpoint;
mod stream;
#[cfg(test)]
mod tests;

pub use endpoint::bind_endpoint;

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
/// A link silent this long is dead (a `kill -9`ed peer sends nothing): within a few
/// seconds, and several keep-alives must be lost first.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// UDP socket buffers: the default lost 1–1.6% of packets on loopback (measured).
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
    #[error("cannot listen on {address}: {error}")]
    Bind {
        address: SocketAddr,
        error: std::io::Error,
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
    /// Where the endpoint binds, if not at this manager's topology address (which neighbours
    /// dial all the same: NAT, port forwarding, a relay in front).
    pub listen: Option<SocketAddr>,
    /// TLS for links.
    pub tls: LinkTls,
    /// The links' congestion control.
    pub congestion: crate::config::LinkCongestion,
    /// Whether batches also go out as early copies (datagrams) while a link carries little.
    pub early_copies: bool,
    /// Where frames and connection events go.
    pub events: mpsc::Sender<E>,
}

/// The running driver; [`Driver::apply`] follows topology edits, [`Driver::close`] ends every
/// connection.
pub struct Driver<E: Sink> {
    endpoint: Endpoint,
    client: quinn::ClientConfig,
    shared: Arc<Shared<E>>,
    /// This manager's address as the topology spells it (where the endpoint is bound, unless
    /// `listen` binds it elsewhere).
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
        let bind = match config.listen {
            Some(listen) => listen,
            None => resolve(&address).await?,
        };
        let (endpoint, client) = bind_endpoint(&config.tls, bind, config.congestion)?;
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
            early_copies: config.early_copies,
            ids: AtomicU64::new(0),
            inbound_ids: AtomicU64::new(0),
            #[cfg(test)]
            opened: Arc::default(),
        });
        tokio::spawn(accept::accept(
            endpoint.clone(),
            shared.clone(),
            shutdown.clone(),
        ));
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
        let task = tokio::spawn(dial::dial(
            self.endpoint.clone(),
            self.client.clone(),
            self.shared.clone(),
            neighbour,
            address.clone(),
            self.shutdown.clone(),
            dial::DiallerSignals {
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
    /// See [`DriverConfig::early_copies`].
    early_copies: bool,
    ids: AtomicU64,
    /// Keys of [`Live::inbound`] entries.
    inbound_ids: AtomicU64,
    /// Every QUIC connection a channel was opened on, for the tests that look at the
    /// connections themselves now that the core's `Channel` holds none.
    #[cfg(test)]
    opened: Arc<Mutex<Vec<quinn::Connection>>>,
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

//! The impairment proxy's tokio side: a UDP relay in front of one manager, moving datagrams
//! through a [`Direction`] each way and nothing more.
//!
//! It listens on the address the topology gives the manager (its "front"); every distinct
//! source that sends there gets an upstream socket of its own, connected to where the manager
//! really listens, and what the manager sends back on it goes out of the front to that source,
//! as a NAT would. Packets towards the manager go through one [`Direction`], packets from it
//! through another; each packet released waits in one heap of release times, and the task
//! sleeps until the earliest (`sleep_until`), never per packet.
//!
//! Invariants: one task owns the heap, both directions and the flow table; the heap holds at
//! most [`PENDING_BYTES_MAX`] bytes and the table [`FLOWS_MAX`] flows, past which packets are
//! dropped and counted. A failed send is a lost packet, which the QUIC above recovers.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::{Direction, Fate, Impairment};

/// The largest datagram relayed: UDP's largest payload.
const DATAGRAM_BYTES_MAX: usize = 65_535;
/// Distinct sources relayed at once; a bench has one or two (a neighbour's endpoint).
const FLOWS_MAX: usize = 64;
/// Bytes held waiting for their release: more than a second of a 100 MB/s path's packets at
/// 150 ms, so only a runaway fills it.
const PENDING_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Datagrams from the manager handed from the flows' readers to the relay's task at a time.
const REPLIES_MAX: usize = 1024;
/// How early a packet may go: tokio's timer ticks in milliseconds and rounds a deadline up to
/// the next tick, so the relay sleeps until half a millisecond before a release and sends what
/// is due within half a millisecond after waking. The error then centres on zero (±0.5 ms)
/// instead of adding up to a millisecond to every packet each way.
const TIMER_SLACK: Duration = Duration::from_micros(500);
/// UDP socket buffers, as large as a manager's own (`channel::quic::SOCKET_BUFFER_BYTES`), so
/// that the relay adds no loss of its own under a burst.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// What a relay did with the packets it got, both directions together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(in crate::bench) struct RelayStats {
    /// Packets that came in.
    pub(in crate::bench) received: u64,
    /// Lost at random.
    pub(in crate::bench) lost: u64,
    /// Dropped by the queue in front of the bandwidth cap.
    pub(in crate::bench) tail_dropped: u64,
    /// Held back for later packets to overtake.
    pub(in crate::bench) reordered: u64,
    /// Dropped because the heap or the flow table was full.
    pub(in crate::bench) overflowed: u64,
}

impl RelayStats {
    pub(in crate::bench) fn add(&mut self, other: Self) {
        self.received += other.received;
        self.lost += other.lost;
        self.tail_dropped += other.tail_dropped;
        self.reordered += other.reordered;
        self.overflowed += other.overflowed;
    }
}

/// A UDP socket bound to `address` with large buffers, for a relay's front (bound before the
/// runtime exists, so that the port is the relay's from the start).
pub(in crate::bench) fn bind_socket(address: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // The kernel caps these at net.core.[rw]mem_max; a smaller buffer still works.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    Ok(socket.into())
}

/// A running relay.
pub(in crate::bench) struct Relay {
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<RelayStats>>,
}

impl Relay {
    /// Starts relaying between `front` and the manager at `upstream`, each way through
    /// `impairment`, drawing from `seed`. Must be called inside a tokio runtime.
    pub(in crate::bench) fn start(
        front: std::net::UdpSocket,
        upstream: SocketAddr,
        impairment: Impairment,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let front = UdpSocket::from_std(front).context("cannot use the relay's socket")?;
        let (stop, stopped) = watch::channel(false);
        let (replies_tx, replies) = mpsc::channel(REPLIES_MAX);
        let state = State {
            front: Arc::new(front),
            upstream,
            flows: HashMap::new(),
            to_manager: Direction::new(impairment, seed),
            from_manager: Direction::new(impairment, seed.rotate_left(32) ^ 0x5bd1_e995),
            pending: BinaryHeap::new(),
            pending_bytes: 0,
            sequence: 0,
            replies_tx,
            readers: JoinSet::new(),
            epoch: Instant::now(),
            stats: RelayStats::default(),
        };
        let task = tokio::spawn(state.run(replies, stopped));
        Ok(Self { stop, task })
    }

    /// Stops the relay and says what it did.
    pub(in crate::bench) async fn stop(self) -> anyhow::Result<RelayStats> {
        let _ = self.stop.send(true);
        self.task.await.context("the relay's task panicked")?
    }
}

/// Where a released packet goes.
#[derive(Debug)]
enum Target {
    /// To the manager, on this source's upstream socket.
    Manager(SocketAddr),
    /// Out of the front, to this source.
    Source(SocketAddr),
}

/// A packet waiting for its release; ordered by release time, then arrival.
#[derive(Debug)]
struct Pending {
    at: Duration,
    sequence: u64,
    target: Target,
    bytes: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.sequence) == (other.at, other.sequence)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.sequence).cmp(&(other.at, other.sequence))
    }
}

/// The relay task's state: the one owner of everything it holds.
struct State {
    front: Arc<UdpSocket>,
    upstream: SocketAddr,
    /// Each source's upstream socket.
    flows: HashMap<SocketAddr, Arc<UdpSocket>>,
    to_manager: Direction,
    from_manager: Direction,
    pending: BinaryHeap<Reverse<Pending>>,
    pending_bytes: usize,
    sequence: u64,
    replies_tx: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    /// One per flow: reads what the manager sends back.
    readers: JoinSet<()>,
    /// Time zero of both directions' clocks.
    epoch: Instant,
    stats: RelayStats,
}

impl State {
    async fn run(
        mut self,
        mut replies: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
        mut stopped: watch::Receiver<bool>,
    ) -> anyhow::Result<RelayStats> {
        let front = self.front.clone();
        let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
        loop {
            let next = self
                .pending
                .peek()
                .map(|Reverse(p)| self.epoch + p.at.saturating_sub(TIMER_SLACK));
            tokio::select! {
                biased;
                _ = stopped.changed() => break,
                () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
                received = front.recv_from(&mut buffer) => match received {
                    Ok((n, source)) => self.received_from(source, &buffer[..n]).await?,
                    // An ICMP error of an earlier send, reported here: nothing to do.
                    Err(error) if transient(&error) => {}
                    Err(error) => return Err(error).context("the relay cannot receive"),
                },
                Some((source, bytes)) = replies.recv() => self.admit(Target::Source(source), bytes),
            }
            // A packet due already (no delay configured) goes now, not at the timer's next tick.
            self.release_due().await;
        }
        self.readers.abort_all();
        Ok(self.stats)
    }

    /// A packet from `source` for the manager; a new source gets its upstream socket.
    async fn received_from(&mut self, source: SocketAddr, bytes: &[u8]) -> anyhow::Result<()> {
        if !self.flows.contains_key(&source) {
            if self.flows.len() >= FLOWS_MAX {
                self.stats.received += 1;
                self.stats.overflowed += 1;
                return Ok(());
            }
            let unspecified = match self.upstream.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            let socket = bind_socket(SocketAddr::new(unspecified, 0))
                .and_then(UdpSocket::from_std)
                .context("cannot open an upstream socket")?;
            socket
                .connect(self.upstream)
                .await
                .with_context(|| format!("cannot connect to {}", self.upstream))?;
            let socket = Arc::new(socket);
            self.readers.spawn(read_replies(
                socket.clone(),
                source,
                self.replies_tx.clone(),
            ));
            self.flows.insert(source, socket);
        }
        self.admit(Target::Manager(source), bytes.to_vec());
        Ok(())
    }

    /// Decides a packet's fate and holds it until its release.
    fn admit(&mut self, target: Target, bytes: Vec<u8>) {
        self.stats.received += 1;
        let now = self.epoch.elapsed();
        let direction = match target {
            Target::Manager(_) => &mut self.to_manager,
            Target::Source(_) => &mut self.from_manager,
        };
        match direction.handle_packet(now, bytes.len()) {
            Fate::Lost => self.stats.lost += 1,
            Fate::TailDropped => self.stats.tail_dropped += 1,
            Fate::Released { .. } if self.pending_bytes + bytes.len() > PENDING_BYTES_MAX => {
                self.stats.overflowed += 1;
            }
            Fate::Released { at, reordered } => {
                self.stats.reordered += u64::from(reordered);
                self.pending_bytes += bytes.len();
                self.sequence += 1;
                self.pending.push(Reverse(Pending {
                    at,
                    sequence: self.sequence,
                    target,
                    bytes,
                }));
            }
        }
    }

    /// Sends every packet whose release time has come (within [`TIMER_SLACK`]).
    async fn release_due(&mut self) {
        let now = self.epoch.elapsed() + TIMER_SLACK;
        while self.pending.peek().is_some_and(|Reverse(p)| p.at <= now) {
            let Some(Reverse(packet)) = self.pending.pop() else {
                break;
            };
            self.pending_bytes -= packet.bytes.len();
            // UDP: a failed send is a lost packet.
            let _ = match packet.target {
                Target::Manager(source) => match self.flows.get(&source) {
                    Some(socket) => socket.send(&packet.bytes).await,
                    None => continue,
                },
                Target::Source(source) => self.front.send_to(&packet.bytes, source).await,
            };
        }
    }
}

/// Whether a receive error only reports an earlier send's ICMP error.
fn transient(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
    )
}

/// Hands what the manager sends to `source`'s flow to the relay's task, until it stops.
async fn read_replies(
    socket: Arc<UdpSocket>,
    source: SocketAddr,
    replies: mpsc::Sender<(SocketAddr, Vec<u8>)>,
) {
    let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
    loop {
        match socket.recv(&mut buffer).await {
            Ok(n) => {
                if replies.send((source, buffer[..n].to_vec())).await.is_err() {
                    return; // the relay stopped
                }
            }
            // The manager was not listening for a moment (starting, restarting).
            Err(error) if transient(&error) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram sent to the front reaches the upstream after the delay, and the upstream's
    /// answer comes back to the sender from the front's address.
    #[tokio::test]
    async fn relays_both_ways_like_a_nat_with_the_delay_each_way() {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let front = bind_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let front_address = front.local_addr().unwrap();
        let impairment = Impairment {
            delay: Duration::from_millis(20),
            jitter: Duration::ZERO,
            loss: 0.0,
            reorder: 0.0,
            bandwidth_bytes_per_second: None,
            queue_bytes_max: 1 << 20,
        };
        let relay = Relay::start(front, upstream.local_addr().unwrap(), impairment, 1).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let started = std::time::Instant::now();
        client.send_to(b"ping", front_address).await.unwrap();
        let mut buffer = [0u8; 16];
        let (n, from) = upstream.recv_from(&mut buffer).await.unwrap();
        assert_eq!(&buffer[..n], b"ping");
        // Released up to TIMER_SLACK early.
        assert!(started.elapsed() >= Duration::from_millis(20) - TIMER_SLACK);
        upstream.send_to(b"pong", from).await.unwrap();
        let (n, answered_by) = client.recv_from(&mut buffer).await.unwrap();
        assert_eq!((&buffer[..n], answered_by), (&b"pong"[..], front_address));
        assert!(started.elapsed() >= Duration::from_millis(40) - 2 * TIMER_SLACK);
        let stats = relay.stop().await.unwrap();
        assert_eq!((stats.received, stats.lost), (2, 0));
    }
}

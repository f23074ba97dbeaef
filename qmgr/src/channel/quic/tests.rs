//! The driver between two real endpoints on loopback, with a stand-in for each core: links
//! that follow topology edits, and what the transport settings make of a link.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Instant;

use time::OffsetDateTime;

use super::*;
use crate::channel::connection::{ChannelDirection, Event};
use crate::channel::frame::{Batch, ChannelFrame, WireMessage};
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
    /// A batch from the stream, by its first sequence number.
    Batch(u64),
    /// An early copy of one.
    Early(u64),
}

/// One manager's driver, with a stand-in for its core that reports connection events.
struct Side {
    driver: Driver<Event>,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// The QUIC connections of every channel opened (the driver's record: the channels the
    /// core gets hold none).
    connections: Arc<Mutex<Vec<quinn::Connection>>>,
    _shutdown: watch::Sender<bool>,
}

/// What the core does with connections, reduced to what the driver needs: it keeps each
/// channel (dropping it would finish the stream) and sends a first frame on outbound ones
/// (a stream is seen by the peer only once something is sent on it, as the Hello is), then a
/// batch of one small message.
async fn stand_in_core(mut commands: mpsc::Receiver<Event>, seen: mpsc::UnboundedSender<Seen>) {
    let mut channels = Vec::new();
    while let Some(command) = commands.recv().await {
        let event = match command {
            Event::Opened {
                direction, channel, ..
            } => {
                let id = channel.id;
                if direction == ChannelDirection::Outbound {
                    channel.send(ChannelFrame::Ping { nonce: id });
                    channel.send(ChannelFrame::Batch(Batch {
                        first_seq: 1,
                        messages: vec![WireMessage {
                            id: 7,
                            payload: vec![7; 100].into(),
                        }],
                    }));
                }
                channels.push(channel);
                Seen::Opened(direction, id)
            }
            Event::Closed { connection, .. } => {
                channels.retain(|c| c.id != connection);
                Seen::Closed(connection)
            }
            Event::Frame {
                frame: ChannelFrame::Batch(batch),
                ..
            } => Seen::Batch(batch.first_seq),
            Event::EarlyBatch { batch, .. } => Seen::Early(batch.first_seq),
            Event::Frame { .. } => continue,
        };
        if seen.send(event).is_err() {
            return;
        }
    }
}

impl Side {
    async fn start(me: &str, topology: &Topology, certs: &Path) -> Side {
        Side::start_with(me, topology, certs, true).await
    }

    async fn start_with(me: &str, topology: &Topology, certs: &Path, early_copies: bool) -> Side {
        let me = name(me);
        let settings = TlsSettings {
            ca: Some(certs.join("ca.pem")),
            cert: Some(certs.join(format!("{me}.pem"))),
            key: Some(certs.join(format!("{me}.key"))),
        };
        let tls = tls::load_for(&settings, &me).unwrap();
        let (commands_tx, commands) = mpsc::channel(64);
        let (seen_tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(stand_in_core(commands, seen_tx));
        let (shutdown_tx, shutdown) = watch::channel(false);
        let driver = Driver::start(
            DriverConfig {
                me,
                topology: topology.clone(),
                listen: None,
                tls,
                congestion: crate::config::LinkCongestion::default(),
                early_copies,
                events: commands_tx,
            },
            shutdown,
        )
        .await
        .unwrap();
        let connections = Arc::clone(&driver.shared.opened);
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
                Some(_) => {}
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
                Some(_) => {}
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

/// What `side` sees of batches: (from the stream, early copies), once both came, or once
/// the stream's came and `quiet` passed after it without a copy, or at the deadline.
async fn batches_seen(side: &mut Side, quiet: Duration) -> (usize, usize) {
    let (mut stream, mut early) = (0, 0);
    let mut deadline = tokio::time::Instant::now() + DEADLINE;
    while let Ok(Some(seen)) = tokio::time::timeout_at(deadline, side.seen.recv()).await {
        match seen {
            Seen::Batch(_) if stream == 0 => {
                stream = 1;
                deadline = deadline.min(tokio::time::Instant::now() + quiet);
            }
            Seen::Early(_) => early += 1,
            _ => {}
        }
        if stream > 0 && early > 0 {
            break;
        }
    }
    (stream, early)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_batch_also_goes_as_an_early_copy_unless_switched_off() {
    let certs = tempfile::tempdir().unwrap();
    for early_copies in [true, false] {
        let (alpha_port, bravo_port) = (free_udp_port(), free_udp_port());
        let linked = topology(alpha_port, bravo_port, true);
        crate::certs::init(&linked, certs.path(), true, OffsetDateTime::now_utc()).unwrap();
        let alpha = Side::start_with("alpha", &linked, certs.path(), early_copies).await;
        let mut bravo = Side::start_with("bravo", &linked, certs.path(), early_copies).await;
        // A copy goes out just after its stream's write: a second after the batch is long.
        let (stream, early) = batches_seen(&mut bravo, Duration::from_secs(1)).await;
        assert!(stream > 0, "the stream carries the batch");
        assert_eq!(early > 0, early_copies, "early copies: {early}");
        alpha.driver.close().await;
        bravo.driver.close().await;
    }
}

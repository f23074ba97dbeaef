//! Early copies: a batch small enough for one datagram is also sent as a QUIC datagram while
//! the link carries little, so that a packet lost on the channel's stream does not hold up
//! the batches behind it for a round trip. The receiver takes a copy only if it follows on from
//! what it already took ([`crate::channel::receiver::Receiver::takes_early`]); its stream copy
//! is then a resend, dropped by sequence number. A copy lost or refused costs nothing: the
//! stream carries every batch whatever happens to the copies.
//!
//! Why copies and not more streams: the channel numbers its messages and the receiver takes
//! them in order, so a batch on a second stream would wait for the lost one all the same.
//! A copy on another packet is what gets past the loss.
//!
//! The budget: datagrams go out ahead of stream data in quinn's packets, so copies would take
//! a saturated link's room from the stream. A copy is sent only while what was written in the
//! last round trip, copies included, stays within [`WINDOW_SHARE`] of the congestion window:
//! a link paced below its path's rate gets copies of everything, a saturated one none.
//!
//! Each copy goes twice: before its own stream write, and again before the next write's
//! copies, in another packet ([`EarlyCopies::plan`], [`REPEATS`]). The receiver takes copies
//! only in order, so one lost copy made every copy after it wait for the stream, which is
//! exactly what a loss holds up: at 3% loss on a 150 ms link nearly every stretch held up by
//! the stream also lost a copy, and paced messages' p50 doubled in some runs (`qmgr bench
//! wan`). A third time bought nothing measurable (p99 above 130 ms in one run of six either
//! way).
//!
//! Invariants: no copy of a frame larger than the peer's datagram limit; what was written is
//! counted over at most one round trip, in at most [`BUCKETS`] buckets; a copy goes at most
//! `1 + REPEATS` times, the last within a round trip of the first.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::VarInt;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tracing::warn;

use super::{Sink, code};
use crate::channel::connection::Event;
use crate::channel::frame::{self, ChannelFrame};

/// How often the writer asks quinn for the path: its window and round trip move once per
/// round of acknowledgements, and asking locks the connection.
const PATH_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// A copy must not travel in the packet that carries its batch on the stream: quinn puts
/// datagrams and stream data together, and a copy sent just after its stream write was lost
/// with its batch (`qmgr bench wan` saw one copy taken in a run with 3% loss). So copies go
/// first, and the stream write waits until quinn has put them in a packet, checking this many
/// times between yields to the runtime (past that it goes anyway). Waiting for the stream data
/// to go out before sending the copies instead is not exact (a write may span packets, the
/// rest travelling with the copy), and a timer's millisecond cost paced messages 2 to 3 ms of
/// p50 at 3% loss.
const SENT_CHECKS_MAX: u32 = 16;

/// The share of the congestion window that the last round trip's writes, copies included,
/// may fill for one more copy to go out.
pub(crate) const WINDOW_SHARE: f64 = 0.5;

/// How many later writes send a copy again.
pub(crate) const REPEATS: u8 = 1;

/// The round trip's writes are counted in this many buckets, oldest dropped first.
const BUCKETS: u32 = 8;

/// The path as quinn last reported it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Path {
    /// The congestion window, in bytes.
    pub window: u64,
    /// The smoothed round trip.
    pub rtt: Duration,
}

/// Which batches get early copies, and which copies go again; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct EarlyCopies {
    /// Bytes written (stream and copies) per bucket, each with its bucket's start, oldest first.
    written: VecDeque<(Instant, u64)>,
    /// The copies of recent writes, oldest first: when each write's went for the first time,
    /// and how many more times they go.
    recent: VecDeque<(Instant, Vec<Bytes>, u8)>,
}

impl EarlyCopies {
    /// `bytes` went on the stream (or out as a copy) at `now`.
    pub(crate) fn wrote(&mut self, now: Instant, bytes: usize, path: Path) {
        let width = bucket_width(path.rtt);
        match self.written.back_mut() {
            Some((start, sum)) if now.saturating_duration_since(*start) < width => {
                *sum += bytes as u64;
            }
            _ => self.written.push_back((now, bytes as u64)),
        }
        self.forget_before(now, path.rtt);
    }

    /// Whether a frame of `bytes` may go out as a copy too: it fits a datagram of at most
    /// `datagram_max` bytes (`None`: the peer takes none), and the link has room. Counts the
    /// copy as written if so.
    pub(crate) fn take(
        &mut self,
        now: Instant,
        bytes: usize,
        datagram_max: Option<usize>,
        path: Path,
    ) -> bool {
        if datagram_max.is_none_or(|max| bytes > max) {
            return false;
        }
        self.forget_before(now, path.rtt);
        let recent: u64 = self.written.iter().map(|(_, sum)| sum).sum();
        let room = (path.window as f64 * WINDOW_SHARE) as u64;
        if recent + bytes as u64 > room {
            return false;
        }
        self.wrote(now, bytes, path);
        true
    }

    /// The copies to send, in order, before a write whose batches are `candidates`: the
    /// recent writes' copies once more, oldest first, if they went less than a round trip ago
    /// (later, the stream has brought them), then this write's own, each as [`Self::take`]
    /// allows.
    pub(crate) fn plan(
        &mut self,
        now: Instant,
        candidates: impl IntoIterator<Item = Bytes>,
        datagram_max: Option<usize>,
        path: Path,
    ) -> Vec<Bytes> {
        self.recent
            .retain(|(at, _, left)| *left > 0 && now.saturating_duration_since(*at) < path.rtt);
        let mut plan = Vec::new();
        for (_, copies, left) in &mut self.recent {
            *left -= 1;
            plan.extend(copies.iter().cloned());
        }
        plan.retain(|copy| self.take(now, copy.len(), datagram_max, path));
        let repeated = plan.len();
        plan.extend(
            candidates
                .into_iter()
                .filter(|candidate| self.take(now, candidate.len(), datagram_max, path)),
        );
        if plan.len() > repeated {
            self.recent
                .push_back((now, plan[repeated..].to_vec(), REPEATS));
        }
        plan
    }

    /// Whether recent writes' copies may still be due to go again.
    pub(crate) fn repeats_pending(&self) -> bool {
        self.recent.iter().any(|(_, _, left)| *left > 0)
    }

    fn forget_before(&mut self, now: Instant, rtt: Duration) {
        let width = bucket_width(rtt);
        while let Some((start, _)) = self.written.front() {
            // A bucket ends `width` after it starts; it counts while its end is within a
            // round trip.
            if now.saturating_duration_since(*start + width) <= rtt {
                break;
            }
            self.written.pop_front();
        }
    }
}

/// The writer's side: which batches of an outbound connection also go out as datagrams,
/// just before the write that carries them on the stream.
pub(super) struct Copier {
    connection: quinn::Connection,
    copies: EarlyCopies,
    path: Option<(Path, Instant)>,
    /// The encoded batches of the write being made.
    candidates: Vec<Bytes>,
}

impl Copier {
    pub(super) fn new(connection: quinn::Connection) -> Copier {
        Copier {
            connection,
            copies: EarlyCopies::default(),
            path: None,
            candidates: Vec::new(),
        }
    }

    /// `encoded` is going on the stream; a batch is a candidate for a copy.
    pub(super) fn consider(&mut self, frame: &ChannelFrame, encoded: &Bytes) {
        if matches!(frame, ChannelFrame::Batch(_)) {
            self.candidates.push(encoded.clone());
        }
    }

    /// A write of `bytes` is about to go on the stream: copies of its batches go out first, as
    /// the budget allows, and this returns once they are in a packet (see [`SENT_CHECKS_MAX`]).
    pub(super) async fn send_before(&mut self, bytes: usize) {
        let now = Instant::now();
        let path = self.path(now);
        self.copies.wrote(now, bytes, path);
        if self.candidates.is_empty() && !self.copies.repeats_pending() {
            return;
        }
        let datagram_max = self.connection.max_datagram_size();
        let copies = self
            .copies
            .plan(now, self.candidates.drain(..), datagram_max, path);
        if copies.is_empty() {
            return;
        }
        // quinn's count of datagrams put in packets before these copies.
        let before = self.connection.stats().frame_tx.datagram;
        let mut sent = 0;
        for copy in copies {
            // Refused only when the connection is gone or the peer shrank its limit: the
            // stream carries the batch anyway.
            if self.connection.send_datagram(copy).is_ok() {
                sent += 1;
            }
        }
        for _ in 0..SENT_CHECKS_MAX {
            if self.connection.stats().frame_tx.datagram >= before + sent {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    fn path(&mut self, now: Instant) -> Path {
        match self.path {
            Some((path, at)) if now.saturating_duration_since(at) < PATH_SAMPLE_INTERVAL => path,
            _ => {
                let stats = self.connection.stats();
                let path = Path {
                    window: stats.path.cwnd,
                    rtt: stats.path.rtt,
                };
                self.path = Some((path, now));
                path
            }
        }
    }
}

/// Hands the early copies that arrive on an inbound connection to the core until the
/// connection ends. A datagram that is not one whole batch frame breaks the protocol and
/// closes the connection; a copy the core has no room for at once is dropped (its stream copy
/// follows).
pub(super) async fn read<E: Sink>(connection: quinn::Connection, id: u64, events: mpsc::Sender<E>) {
    while let Ok(datagram) = connection.read_datagram().await {
        let batch = match frame::decode(&datagram) {
            Ok(Some((ChannelFrame::Batch(batch), used))) if used == datagram.len() => batch,
            Ok(_) => return malformed(&connection, "a datagram that is not one batch frame"),
            Err(e) => return malformed(&connection, &e.to_string()),
        };
        let early = Event::EarlyBatch {
            connection: id,
            batch,
        };
        if let Err(TrySendError::Closed(_)) = events.try_send(early.into()) {
            return;
        }
    }
}

fn malformed(connection: &quinn::Connection, why: &str) {
    warn!(reason = %why, "closing channel: malformed datagram");
    connection.close(VarInt::from_u32(code::PROTOCOL), why.as_bytes());
}

fn bucket_width(rtt: Duration) -> Duration {
    (rtt / BUCKETS).max(Duration::from_micros(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: Path = Path {
        window: 100_000,
        rtt: Duration::from_millis(100),
    };

    #[test]
    fn copies_go_while_the_last_round_trip_leaves_room() {
        let start = Instant::now();
        let mut copies = EarlyCopies::default();
        let mut sent = 0;
        // A paced link: 1,000 B every 10 ms is 10,000 B per round trip, copies included
        // 20,000: well within half the window.
        for i in 0..100 {
            let now = start + Duration::from_millis(10 * i);
            copies.wrote(now, 1_000, PATH);
            if copies.take(now, 1_000, Some(1_200), PATH) {
                sent += 1;
            }
        }
        assert_eq!(sent, 100, "a paced link gets a copy of everything");
    }

    #[test]
    fn a_busy_link_gets_no_copies_until_it_calms_down() {
        let start = Instant::now();
        let mut copies = EarlyCopies::default();
        for i in 0..60 {
            copies.wrote(start + Duration::from_millis(i), 1_000, PATH);
        }
        let now = start + Duration::from_millis(60);
        assert!(
            !copies.take(now, 1_000, Some(1_200), PATH),
            "60,000 B in the last round trip fill more than half the window"
        );
        let later = now + PATH.rtt + PATH.rtt / 4;
        assert!(
            copies.take(later, 1_000, Some(1_200), PATH),
            "a round trip later the burst no longer counts"
        );
    }

    #[test]
    fn copies_count_against_the_room_too() {
        let now = Instant::now();
        let mut copies = EarlyCopies::default();
        let taken = (0..100)
            .filter(|_| copies.take(now, 1_000, Some(1_200), PATH))
            .count();
        assert_eq!(taken, 50, "half the window, in copies alone");
    }

    #[test]
    fn no_copy_of_what_a_datagram_cannot_hold() {
        let now = Instant::now();
        let mut copies = EarlyCopies::default();
        assert!(!copies.take(now, 1_201, Some(1_200), PATH));
        assert!(
            !copies.take(now, 100, None, PATH),
            "the peer takes no datagrams"
        );
        assert!(copies.take(now, 1_200, Some(1_200), PATH));
    }

    #[test]
    fn a_copy_goes_again_before_the_next_writes_within_a_round_trip() {
        assert_eq!(REPEATS, 1, "the cases below send each copy twice");
        let start = Instant::now();
        let mut copies = EarlyCopies::default();
        let batch = |name: &'static [u8]| Bytes::from_static(name);
        let mut plan = |at: Duration, batches: &[&'static [u8]]| {
            let candidates = batches.iter().map(|name| batch(name));
            copies.plan(start + at, candidates, Some(1_200), PATH)
        };
        let ms = Duration::from_millis;
        assert_eq!(plan(ms(0), &[b"a"]), [batch(b"a")]);
        assert_eq!(
            plan(ms(5), &[b"b", b"c"]),
            [batch(b"a"), batch(b"b"), batch(b"c")],
            "the last write's copy goes again, first"
        );
        assert_eq!(
            plan(ms(10), &[]),
            [batch(b"b"), batch(b"c")],
            "a went twice; a write without batches sends the last write's copies again"
        );
        assert_eq!(plan(ms(15), &[b"d"]), [batch(b"d")], "b and c went twice");
        assert_eq!(
            plan(ms(15) + PATH.rtt, &[b"e"]),
            [batch(b"e")],
            "a round trip later the stream has brought d"
        );
    }

    #[test]
    fn a_busy_link_sends_no_copy_again() {
        let start = Instant::now();
        let mut copies = EarlyCopies::default();
        let a = Bytes::from_static(&[1; 1_000]);
        assert_eq!(copies.plan(start, [a], Some(1_200), PATH).len(), 1);
        copies.wrote(start, 60_000, PATH);
        let b = Bytes::from_static(&[2; 1_000]);
        assert!(copies.plan(start, [b], Some(1_200), PATH).is_empty());
    }

    #[test]
    fn the_count_is_bounded_by_its_buckets() {
        let start = Instant::now();
        let mut copies = EarlyCopies::default();
        for i in 0..10_000 {
            copies.wrote(start + Duration::from_micros(50 * i), 10, PATH);
        }
        assert!(copies.written.len() <= BUCKETS as usize + 2);
    }
}

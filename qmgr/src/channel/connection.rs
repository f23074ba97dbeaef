//! A channel connection as the core sees it, and what the QUIC driver tells the core: the
//! types both sides share, so that the driver ([`super::quic`]) never imports the manager and
//! the core never holds a QUIC type. The core only queues what a connection's writer is to do
//! (frames, then perhaps a close) and reads the round-trip time the driver measured; tests and
//! the simulator, which have no QUIC, make a [`Channel`] with [`Channel::new`] and read its
//! queue themselves.
//!
//! Invariant: what waits in a connection's queue is bounded. Frames of the channel's numbered
//! stream are bounded by the sender's window; frames outside it (non-persistent publications)
//! by a byte budget per connection, [`UNWINDOWED_BYTES_MAX`], released as the writer takes
//! each frame, so a peer that stops reading never makes its queue pin more than that.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hopmq_routing::ManagerName;
use tokio::sync::{mpsc, oneshot};

use super::frame::{self, ChannelFrame};

/// Which way messages flow on a channel connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelDirection {
    /// This manager dialled it and sends on it.
    Outbound,
    /// The neighbour dialled it and sends on it.
    Inbound,
}

/// QUIC application close codes.
pub mod code {
    /// An orderly end (the manager stops, a newer connection replaced this one).
    pub const NORMAL: u32 = 0;
    /// An error ended it: a malformed frame, a protocol violation, a local fault.
    pub const PROTOCOL: u32 = 1;
    /// The peer was not admitted.
    pub const REFUSED: u32 = 2;
}

/// What the driver reports of its connections, in order per connection.
#[derive(Debug)]
pub enum Event {
    /// A connection was opened (and, inbound, admitted).
    Opened {
        /// The neighbour at the other end.
        neighbour: ManagerName,
        /// Which way messages flow on it.
        direction: ChannelDirection,
        /// Its frames out, and its handle.
        channel: Channel,
    },
    /// A frame arrived on a connection.
    Frame {
        /// The driver's id of the connection.
        connection: u64,
        /// The frame.
        frame: ChannelFrame,
    },
    /// An early copy of a batch: a datagram that may overtake the stream's copy when a lost
    /// packet holds the stream up. Its stream copy still follows.
    EarlyBatch {
        /// The driver's id of the connection.
        connection: u64,
        /// The batch.
        batch: frame::Batch,
    },
    /// A connection ended.
    Closed {
        /// The driver's id of the connection.
        connection: u64,
        /// Why, for the log and status.
        reason: String,
    },
}

/// One live connection of a link, as the driver opened it.
#[derive(Debug)]
pub struct Channel {
    /// The driver's id for it.
    pub id: u64,
    /// What its writer is to do, at most [`CHANNEL_FRAMES_MAX`] items queued; dropping this
    /// ends the connection once the writer has sent what was queued.
    frames: mpsc::Sender<ChannelOut>,
    /// A close that overtakes the queue (see [`Channel::close`]); `None` without a driver.
    close_now: Option<oneshot::Sender<Close>>,
    /// The round-trip time the driver keeps up to date; `None` without a driver.
    rtt: Option<Arc<RoundTrip>>,
    /// Bytes of frames outside the window that wait in `frames` (see [`Channel::send_unwindowed`]).
    unwindowed: Arc<AtomicUsize>,
}

/// What the core queues for a connection's writer.
#[derive(Debug)]
pub enum ChannelOut {
    /// A frame to send.
    Frame(ChannelFrame),
    /// A frame outside the channel's window, whose bytes count against the connection's
    /// budget until whoever carries the queue takes it out (the reservation's drop).
    Unwindowed(ChannelFrame, Reservation),
    /// The end of the connection: the last item the core queues on it.
    Close(Close),
}

impl ChannelOut {
    /// What the item puts on the stream: a close says goodbye first.
    pub fn into_frame(self) -> ChannelFrame {
        match self {
            ChannelOut::Frame(frame) | ChannelOut::Unwindowed(frame, _) => frame,
            ChannelOut::Close(close) => frame::goodbye(&close.reason),
        }
    }
}

/// Bytes of a queued frame held against its connection's budget for frames outside the
/// window; released when dropped, so a frame that is taken, refused or thrown away with its
/// queue gives its bytes back whatever the path.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// How a connection is to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// One of [`code`].
    pub code: u32,
    /// Why, for the peer's log.
    pub reason: String,
}

/// A round-trip time as the driver last measured it. An atomic rather than a lock: the driver
/// writes it while the core reads it, and neither may wait for the other.
#[derive(Debug, Default)]
pub struct RoundTrip {
    micros: AtomicU64,
}

impl RoundTrip {
    /// Records a new measurement.
    pub fn set(&self, rtt: Duration) {
        let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        self.micros.store(micros, Ordering::Relaxed);
    }

    /// The last measurement (zero before the first).
    pub fn get(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }
}

/// Items queued for one connection's writer. The sender's window bounds what an honest
/// exchange queues (a batch per few messages, an ack per store); a peer that stops reading
/// fills it and its connection is closed rather than buffered without bound.
pub const CHANNEL_FRAMES_MAX: usize = 32 * 1024;

const _: () = assert!(super::sender::WINDOW_MESSAGES_MAX * 2 <= CHANNEL_FRAMES_MAX);

/// Bytes of frames outside the window (non-persistent publications) that may wait for one
/// connection's writer. Past it such frames are refused, and their sender drops them: nothing
/// acknowledges them, so only this bounds what a slow or stalled peer makes a manager hold.
/// Sixteen of the largest batches: bursts pass, a link that cannot keep up loses the excess.
pub const UNWINDOWED_BYTES_MAX: usize = 16 * frame::BATCH_BYTES_MAX;

impl Channel {
    /// A connection without a driver: whoever holds the receiving end of `frames` carries
    /// them (a test, the simulator), and nothing measures its round trip.
    pub fn new(id: u64, frames: mpsc::Sender<ChannelOut>) -> Channel {
        Channel {
            id,
            frames,
            close_now: None,
            rtt: None,
            unwindowed: Arc::default(),
        }
    }

    /// A connection served by a driver's writer, which takes `frames` in order and also
    /// listens on `close_now`; the driver keeps `rtt` up to date.
    pub fn driven(
        id: u64,
        frames: mpsc::Sender<ChannelOut>,
        close_now: oneshot::Sender<Close>,
        rtt: Arc<RoundTrip>,
    ) -> Channel {
        Channel {
            id,
            frames,
            close_now: Some(close_now),
            rtt: Some(rtt),
            unwindowed: Arc::default(),
        }
    }

    /// Queues `frame`; false if the writer is gone or `CHANNEL_FRAMES_MAX` items wait.
    pub fn send(&self, frame: ChannelFrame) -> bool {
        self.frames.try_send(ChannelOut::Frame(frame)).is_ok()
    }

    /// Queues `frame`, which is outside the channel's window and `bytes` long, if the
    /// connection's budget for such frames ([`UNWINDOWED_BYTES_MAX`]) has room for it (a lone
    /// frame larger than the budget passes when nothing else waits); false if not, or if the
    /// writer is gone or its queue is full.
    pub fn send_unwindowed(&self, frame: ChannelFrame, bytes: usize) -> bool {
        let queued = self.unwindowed.fetch_add(bytes, Ordering::Relaxed);
        let reservation = Reservation {
            budget: Arc::clone(&self.unwindowed),
            bytes,
        };
        if queued > 0 && queued + bytes > UNWINDOWED_BYTES_MAX {
            return false;
        }
        let item = ChannelOut::Unwindowed(frame, reservation);
        self.frames.try_send(item).is_ok()
    }

    /// The connection's round-trip time as last measured; `None` if nothing measures it.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt.as_ref().map(|rtt| rtt.get())
    }

    /// Ends the connection with one of [`code`], without waiting: the goodbye goes first, then
    /// the close.
    pub fn close(self, code: u32, reason: &str) {
        let close = Close {
            code,
            reason: reason.to_owned(),
        };
        // Queued, the goodbye follows the frames queued before it, for a queue that is carried
        // whole (the simulator). It is lost if the queue is full, as a goodbye always was.
        let _ = self.frames.try_send(ChannelOut::Close(close.clone()));
        // The driver's writer also hears it past the queue: the queue may be full, or the
        // writer stuck behind a peer that stopped reading, and a close must happen at once
        // whatever waits (as `quinn::Connection::close`, called here before, did). A oneshot
        // because a close happens once, and its sender, unlike the queue's, never finds it
        // full; an error means the writer is gone, and with it the connection.
        if let Some(close_now) = self.close_now {
            let _ = close_now.send(close);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publications(bytes: usize) -> ChannelFrame {
        let message = frame::WireMessage {
            id: 1,
            payload: vec![0; bytes].into(),
        };
        ChannelFrame::Publications(vec![message])
    }

    #[test]
    fn frames_outside_the_window_are_bounded_by_bytes_until_the_writer_takes_them() {
        let (tx, mut rx) = mpsc::channel(CHANNEL_FRAMES_MAX);
        let channel = Channel::new(7, tx);
        let size = frame::BATCH_BYTES_MAX;
        let fit = UNWINDOWED_BYTES_MAX / size;
        for _ in 0..fit {
            assert!(channel.send_unwindowed(publications(size), size));
        }
        assert!(
            !channel.send_unwindowed(publications(size), size),
            "a peer that stops reading must not make the queue hold more than the budget"
        );
        assert!(
            channel.send(ChannelFrame::Ping { nonce: 1 }),
            "the window's frames do not count against it"
        );
        // The writer takes one: its bytes are free again, and only those.
        let _taken = rx.try_recv().map(ChannelOut::into_frame);
        assert!(channel.send_unwindowed(publications(size), size));
        assert!(!channel.send_unwindowed(publications(size), size));
        // Frames thrown away with the queue give their bytes back too.
        while rx.try_recv().is_ok() {}
        assert_eq!(channel.unwindowed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_lone_frame_larger_than_the_budget_passes_an_empty_queue() {
        let (tx, mut rx) = mpsc::channel(CHANNEL_FRAMES_MAX);
        let channel = Channel::new(7, tx);
        let huge = UNWINDOWED_BYTES_MAX + 1;
        assert!(channel.send_unwindowed(publications(16), huge));
        assert!(!channel.send_unwindowed(publications(16), 16));
        drop(rx.try_recv());
        assert!(channel.send_unwindowed(publications(16), 16));
    }

    #[test]
    fn a_refused_frame_gives_its_bytes_back() {
        let (tx, rx) = mpsc::channel(1);
        let channel = Channel::new(7, tx);
        assert!(channel.send(ChannelFrame::Ping { nonce: 1 }));
        assert!(!channel.send_unwindowed(publications(16), 16), "queue full");
        drop(rx);
        assert!(
            !channel.send_unwindowed(publications(16), 16),
            "writer gone"
        );
        assert_eq!(channel.unwindowed.load(Ordering::Relaxed), 0);
    }
}

//! A channel connection as the core sees it, and what the QUIC driver tells the core: the
//! types both sides share, so that the driver ([`super::quic`]) never imports the manager and
//! the core never holds a QUIC type. The core only queues what a connection's writer is to do
//! (frames, then perhaps a close) and reads the round-trip time the driver measured; tests and
//! the simulator, which have no QUIC, make a [`Channel`] with [`Channel::new`] and read its
//! queue themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

/// What the core queues for a connection's writer.
#[derive(Debug)]
pub enum ChannelOut {
    /// A frame to send.
    Frame(ChannelFrame),
    /// The end of the connection: the last item the core queues on it.
    Close(Close),
}

impl ChannelOut {
    /// What the item puts on the stream: a close says goodbye first.
    pub fn into_frame(self) -> ChannelFrame {
        match self {
            ChannelOut::Frame(frame) => frame,
            ChannelOut::Close(close) => frame::goodbye(&close.reason),
        }
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
pub const CHANNEL_FRAMES_MAX: usize = 16 * 1024;

const _: () = assert!(super::sender::WINDOW_MESSAGES_MAX * 2 <= CHANNEL_FRAMES_MAX);

impl Channel {
    /// A connection without a driver: whoever holds the receiving end of `frames` carries
    /// them (a test, the simulator), and nothing measures its round trip.
    pub fn new(id: u64, frames: mpsc::Sender<ChannelOut>) -> Channel {
        Channel {
            id,
            frames,
            close_now: None,
            rtt: None,
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
        }
    }

    /// Queues `frame`; false if the writer is gone or `CHANNEL_FRAMES_MAX` items wait.
    pub fn send(&self, frame: ChannelFrame) -> bool {
        self.frames.try_send(ChannelOut::Frame(frame)).is_ok()
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

//! A channel connection as the core sees it, and what the QUIC driver tells the core: the
//! types both sides share, so that the driver ([`super::quic`]) never imports the manager.

use hopmq_routing::ManagerName;
use tokio::sync::mpsc;

use super::frame::ChannelFrame;

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
    /// Frames to send on it, at most [`CHANNEL_FRAMES_MAX`] queued; dropping this closes the
    /// connection.
    pub frames: mpsc::Sender<ChannelFrame>,
    /// The QUIC connection, for its round-trip time; `None` in tests without sockets.
    pub quic: Option<quinn::Connection>,
}

/// Frames queued for one connection's writer. The sender's window bounds what an honest
/// exchange queues (a batch per few messages, an ack per store); a peer that stops reading
/// fills it and its connection is closed rather than buffered without bound.
pub const CHANNEL_FRAMES_MAX: usize = 16 * 1024;

const _: () = assert!(super::sender::WINDOW_MESSAGES_MAX * 2 <= CHANNEL_FRAMES_MAX);

impl Channel {
    /// Queues `frame`; false if the writer is gone or `CHANNEL_FRAMES_MAX` frames wait.
    pub fn send(&self, frame: ChannelFrame) -> bool {
        self.frames.try_send(frame).is_ok()
    }

    /// Ends the connection with one of [`code`].
    pub fn close(self, code: u32, reason: &str) {
        let _ = self.frames.try_send(super::frame::goodbye(reason));
        if let Some(quic) = &self.quic {
            // The writer may still be sending the goodbye; a short grace is not worth a
            // task, the peer treats a close like a goodbye.
            quic.close(code.into(), reason.as_bytes());
        }
    }
}

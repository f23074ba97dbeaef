//! A client connection's outgoing frames, bounded in bytes as well as in frames.
//!
//! The core queues frames without waiting; the connection's writer takes them off and writes
//! them. A client that stops reading (a `qmgr watch` stopped with SIGSTOP while large messages
//! are put) must cost the manager a bounded amount of memory: once the bytes queued for it
//! pass [`CONNECTION_BYTES_MAX`] the core closes the connection instead of queueing more.
//!
//! Invariant: `queued` is the sum of [`ToClient::bytes`] over the frames in the channel (it is
//! raised before a frame goes in and lowered as it comes out).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hopmq::protocol::{Reply, ServerFrame};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};

use super::ToClient;

/// How many frames may wait for one connection's writer.
pub const CONNECTION_FRAMES_MAX: usize = 64 * 1024;

/// How many bytes of frames may wait for one connection's writer: a few of the largest
/// messages. A single frame larger than this still goes out when nothing else waits, so every
/// reply can be sent.
pub const CONNECTION_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The core's end: where it queues a connection's frames.
#[derive(Debug)]
pub struct Outbox {
    frames: mpsc::Sender<ToClient>,
    queued: Arc<AtomicUsize>,
    /// The most bytes that ever waited, for the writer to tell a spike.
    peak: Arc<AtomicUsize>,
    bytes_max: usize,
}

/// The writer's end.
#[derive(Debug)]
pub struct Outgoing {
    frames: mpsc::Receiver<ToClient>,
    queued: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The client fell [`CONNECTION_FRAMES_MAX`] frames or [`CONNECTION_BYTES_MAX`] bytes
    /// behind.
    Stalled,
    /// The writer is gone.
    Closed,
}

/// A new connection's outbox and the writer's end of it.
pub fn channel() -> (Outbox, Outgoing) {
    bounded(CONNECTION_FRAMES_MAX, CONNECTION_BYTES_MAX)
}

/// An outbox with other limits than a connection's (for tests).
pub fn bounded(frames_max: usize, bytes_max: usize) -> (Outbox, Outgoing) {
    let (frames, receiver) = mpsc::channel(frames_max);
    let queued = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            frames,
            queued: Arc::clone(&queued),
            peak: Arc::clone(&peak),
            bytes_max,
        },
        Outgoing {
            frames: receiver,
            queued,
            peak,
        },
    )
}

impl Outbox {
    /// Queues `frame` for the writer, unless the client is too far behind or gone.
    pub fn try_send(&self, frame: ToClient) -> Result<(), Refused> {
        let bytes = frame.bytes();
        let queued = self.queued.load(Ordering::Acquire);
        if queued > 0 && queued + bytes > self.bytes_max {
            return Err(Refused::Stalled);
        }
        let now_queued = self.queued.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.peak.fetch_max(now_queued, Ordering::AcqRel);
        self.frames.try_send(frame).map_err(|error| {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            match error {
                TrySendError::Full(_) => Refused::Stalled,
                TrySendError::Closed(_) => Refused::Closed,
            }
        })
    }

    /// Bytes waiting for the writer.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

impl Outgoing {
    /// The next frame; `None` once the core dropped its end and every frame was taken.
    pub async fn recv(&mut self) -> Option<ToClient> {
        let frame = self.frames.recv().await?;
        self.queued.fetch_sub(frame.bytes(), Ordering::AcqRel);
        Some(frame)
    }

    /// The most bytes that ever waited for the writer.
    pub fn peak_bytes(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }

    /// The next frame if one waits.
    pub fn try_recv(&mut self) -> Result<ToClient, TryRecvError> {
        let frame = self.frames.try_recv()?;
        self.queued.fetch_sub(frame.bytes(), Ordering::AcqRel);
        Ok(frame)
    }
}

impl ToClient {
    /// About what the frame takes in memory and on the wire: its bodies and headers, or its
    /// bytes. What the limit of a connection counts.
    pub fn bytes(&self) -> usize {
        /// A frame's envelope and small fields.
        const OVERHEAD_BYTES: usize = 64;
        let deliveries = |messages: &[hopmq::protocol::Delivery]| -> usize {
            messages
                .iter()
                .map(|m| {
                    let headers: usize = m.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
                    OVERHEAD_BYTES + m.body.len() + headers
                })
                .sum()
        };
        match self {
            Self::Encoded(bytes) => bytes.len(),
            Self::Event { message, .. } => OVERHEAD_BYTES + message.len(),
            Self::Frame(ServerFrame::Event { message, .. }) => {
                deliveries(std::slice::from_ref(message))
            }
            Self::Frame(ServerFrame::Reply {
                result: Ok(Reply::Messages(messages)),
                ..
            }) => OVERHEAD_BYTES + deliveries(messages),
            Self::Frame(_) => OVERHEAD_BYTES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(bytes: usize) -> ToClient {
        ToClient::Encoded(vec![0; bytes])
    }

    #[test]
    fn a_client_that_stops_reading_is_refused_by_bytes_and_given_room_as_it_reads() {
        let (outbox, mut outgoing) = channel();
        let frame_bytes = CONNECTION_BYTES_MAX / 4;
        for _ in 0..4 {
            assert_eq!(outbox.try_send(encoded(frame_bytes)), Ok(()));
        }
        assert_eq!(outbox.try_send(encoded(1)), Err(Refused::Stalled));
        assert_eq!(outbox.queued_bytes(), CONNECTION_BYTES_MAX);
        assert!(outgoing.try_recv().is_ok());
        assert_eq!(outbox.queued_bytes(), 3 * frame_bytes);
        assert_eq!(outbox.try_send(encoded(1)), Ok(()));
        drop(outgoing);
        assert_eq!(outbox.try_send(encoded(1)), Err(Refused::Closed));
    }

    #[test]
    fn one_frame_over_the_limit_goes_out_when_nothing_waits() {
        let (outbox, mut outgoing) = channel();
        assert_eq!(outbox.try_send(encoded(CONNECTION_BYTES_MAX + 1)), Ok(()));
        assert_eq!(outbox.try_send(encoded(1)), Err(Refused::Stalled));
        assert!(outgoing.try_recv().is_ok());
        assert_eq!(outbox.queued_bytes(), 0);
    }
}

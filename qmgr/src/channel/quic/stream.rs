//! One connection's stream, both ways: frames read are handed to the core as they arrive,
//! and a writer task sends what the core queued on the connection's [`Channel`], and carries
//! out the core's close. The core never touches the QUIC connection, so this is also where its
//! round-trip time is sampled for the core.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use hopmq_routing::ManagerName;
use quinn::VarInt;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::{
    KEEP_ALIVE_INTERVAL, READ_CHUNK_BYTES, Shared, Sink, WRITE_COALESCE_BYTES, code, early,
};
use crate::channel::connection::{
    CHANNEL_FRAMES_MAX, Channel, ChannelDirection, ChannelOut, Close, Event, RoundTrip,
};
use crate::channel::frame::{self, FrameError};

/// How often a connection's round-trip time is copied for the core. quinn's estimate moves
/// only as acks arrive, on an idle link once per [`KEEP_ALIVE_INTERVAL`]; a few copies per
/// keep-alive keep the core's at most this stale, for a timer per connection instead of a
/// lock of the connection per frame.
const RTT_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

const _: () = assert!(RTT_SAMPLE_INTERVAL.as_millis() * 4 <= KEEP_ALIVE_INTERVAL.as_millis());

/// Moves frames both ways until the connection or the core ends it.
pub(super) async fn run<E: Sink>(
    shared: &Shared<E>,
    neighbour: ManagerName,
    direction: ChannelDirection,
    connection: quinn::Connection,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let id = shared.ids.fetch_add(1, Ordering::Relaxed) + 1;
    let (frames_tx, frames_rx) = mpsc::channel(CHANNEL_FRAMES_MAX);
    let (close_tx, close_rx) = oneshot::channel();
    let rtt = Arc::new(RoundTrip::default());
    rtt.set(connection.rtt());
    #[cfg(test)]
    shared
        .opened
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(connection.clone());
    let opened = Event::Opened {
        neighbour: neighbour.clone(),
        direction,
        channel: Channel::driven(id, frames_tx, close_tx, Arc::clone(&rtt)),
    };
    if shared.events.send(opened.into()).await.is_err() {
        return;
    }
    // Batches flow on outbound connections, so copies go out on those and are read on inbound
    // ones.
    let copier = (shared.early_copies && direction == ChannelDirection::Outbound)
        .then(|| early::Copier::new(connection.clone()));
    let early_reader = (shared.early_copies && direction == ChannelDirection::Inbound)
        .then(|| tokio::spawn(early::read(connection.clone(), id, shared.events.clone())));
    let writer = Writer {
        send,
        queue: frames_rx,
        close_now: CloseNow(Some(close_rx)),
        connection: connection.clone(),
        chunks: Vec::new(),
        copier,
    };
    let writer = tokio::spawn(writer.run());
    let sampler = tokio::spawn(sample_rtt(connection.clone(), rtt));
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
    sampler.abort();
    if let Some(reader) = early_reader {
        reader.abort();
    }
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

/// Copies the connection's round-trip time into `rtt` until the connection ends.
async fn sample_rtt(connection: quinn::Connection, rtt: Arc<RoundTrip>) {
    let mut every = tokio::time::interval(RTT_SAMPLE_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => rtt.set(connection.rtt()),
            _ = connection.closed() => return,
        }
    }
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

/// A connection's writer: sends what the core queued, in order, and ends the connection when
/// the core closes it.
struct Writer {
    send: quinn::SendStream,
    queue: mpsc::Receiver<ChannelOut>,
    close_now: CloseNow,
    connection: quinn::Connection,
    /// The frames of the write being made.
    chunks: Vec<Bytes>,
    /// Early copies of its batches, on an outbound connection with them switched on.
    copier: Option<early::Copier>,
}

impl Writer {
    async fn run(mut self) {
        loop {
            // A close heard past the queue comes first: it must not wait behind the queue.
            let first = tokio::select! {
                biased;
                close = self.close_now.requested() => return self.close(&close, true).await,
                first = self.queue.recv() => first,
            };
            let Some(first) = first else {
                // The core dropped the channel: it is done with this connection.
                let _ = self.send.finish();
                return;
            };
            let (then, bytes) = match self.gather(first) {
                Ok(gathered) => gathered,
                Err(e) => {
                    warn!(error = %e, "a frame could not be encoded; closing the channel");
                    let encoding = VarInt::from_u32(code::PROTOCOL);
                    self.connection.close(encoding, b"encoding error");
                    return;
                }
            };
            if let Some(copier) = &mut self.copier {
                copier.send_before(bytes).await;
            }
            // Nor behind a write that a peer which stopped reading holds up. Interrupted,
            // the write may have stopped inside a frame, where a goodbye would be misread.
            let written = tokio::select! {
                biased;
                close = self.close_now.requested() => return self.close(&close, false).await,
                written = self.send.write_all_chunks(&mut self.chunks) => written,
            };
            if written.is_err() {
                return self.after_write_failure().await;
            }
            self.chunks.clear();
            if let Some(close) = then {
                return self.close(&close, true).await;
            }
        }
    }

    /// The stream failed, perhaps not the connection (a peer may stop just the stream). Sends
    /// fail from now on, as to a writer that is gone, so the core closes the channel; that
    /// close must still end the connection, as when the core closed it itself.
    async fn after_write_failure(&mut self) {
        self.queue.close();
        tokio::select! {
            close = self.close_now.requested() => self.close(&close, false).await,
            _ = self.connection.closed() => {}
        }
    }

    /// Encodes `first` and the frames queued behind it, up to [`WRITE_COALESCE_BYTES`], into
    /// `chunks`, each into a buffer of its own size: quinn takes them in one call, where one
    /// growing buffer was re-copied every batch it held. Stops at a close, and returns it with
    /// the bytes gathered.
    fn gather(&mut self, first: ChannelOut) -> Result<(Option<Close>, usize), FrameError> {
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            // An unwindowed frame's reservation ends here: once encoded its bytes are this
            // write's, which the coalescing limit bounds.
            let frame = match item {
                ChannelOut::Frame(frame) | ChannelOut::Unwindowed(frame, _) => frame,
                ChannelOut::Close(close) => return Ok((Some(close), bytes)),
            };
            let encoded = Bytes::from(frame::encode(&frame)?);
            bytes += encoded.len();
            if let Some(copier) = &mut self.copier {
                copier.consider(&frame, &encoded);
            }
            self.chunks.push(encoded);
            if bytes < WRITE_COALESCE_BYTES {
                next = self.queue.try_recv().ok();
            }
        }
        Ok((None, bytes))
    }

    /// Ends the connection as the core asked: the goodbye first if the stream is between
    /// frames, then the QUIC close with the core's code.
    async fn close(&mut self, close: &Close, between_frames: bool) {
        if between_frames {
            // Only what the stream takes at once: a close does not wait for a peer that
            // stopped reading. quinn sends no stream data after the close, so the goodbye
            // gets through only if it goes out first; the peer treats a close like a goodbye.
            if let Ok(goodbye) = frame::encode(&frame::goodbye(&close.reason)) {
                let _ = ready_now(self.send.write_all(&goodbye)).await;
            }
        }
        let code = VarInt::from_u32(close.code);
        self.connection.close(code, close.reason.as_bytes());
    }
}

/// The writer's end of a close that overtakes the queue (see [`Channel::close`]).
struct CloseNow(Option<oneshot::Receiver<Close>>);

impl CloseNow {
    /// The close, once the core asks for one; never, if it dropped the channel instead (the
    /// queue's end then says the rest). Cancel-safe: a select may drop it and ask again.
    async fn requested(&mut self) -> Close {
        if let Some(receiver) = &mut self.0 {
            if let Ok(close) = receiver.await {
                return close;
            }
            self.0 = None;
        }
        std::future::pending().await
    }
}

/// `future`'s output if it is ready at once, without waiting for it.
async fn ready_now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    std::future::poll_fn(|context| {
        Poll::Ready(match future.as_mut().poll(context) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        })
    })
    .await
}

//! The sending side of a channel: drains one transmission queue to one neighbour.
//!
//! It owns the sequence numbers of the messages it was handed, which of them are in flight on
//! the current connection, the handshake's resend decision and the keep-alive timers. It does no
//! I/O: the driver feeds it frames and the time, sends what [`Sender::poll_transmit`] returns,
//! and carries out its effects (persist sequence assignments, delete acked messages).
//!
//! Invariants:
//! - held messages (pushed, not yet acked) have consecutive sequence numbers ending at
//!   `next_seq - 1`; acks only ever remove a prefix;
//! - a message is transmitted only once its sequence number is durable at this end
//!   ([`Sender::handle_seq_durable`]), so a crash never renumbers a message the receiver may
//!   hold (persist, then send);
//! - a message is deleted only when the receiver said it is durable there (an `Ack`, or the
//!   `stored_up_to` of a `Welcome` under the same receiver epoch);
//! - at most [`WINDOW_MESSAGES_MAX`] messages are in flight, and at most [`HELD_MESSAGES_MAX`]
//!   messages and [`HELD_BYTES_MAX`] bytes are held: the rest waits on disk in the
//!   transmission queue.
//!
//! A rollback of the receiver (restored from a backup, wiped: its `stored_up_to` is behind what
//! this side already deleted, or its epoch changed) never needs an operator: the sender logs it,
//! sends a [`Resync`] and carries on from the oldest message it still holds; the receiver then
//! deduplicates by message id.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::frame::{
    BATCH_BYTES_MAX, BATCH_MESSAGES_MAX, Batch, CHANNEL_PROTOCOL_VERSION, ChannelFrame, Hello,
    Resync, WIRE_MESSAGE_BYTES_MAX, Welcome, WireMessage,
};

/// The most messages sent and not yet acked on one connection. A message is acked once the
/// receiver's write of it is durable, so the window must cover a round trip and a sync: at
/// 150 ms, 16,384 messages keep ~100,000 msg/s going (4,096 capped such a link at 27,000, and
/// lower still while a lost packet holds up the stream; `qmgr bench wan`).
pub(crate) const WINDOW_MESSAGES_MAX: usize = 16_384;

/// The most messages the sender keeps in memory; the transmission queue keeps the rest on disk.
pub(crate) const HELD_MESSAGES_MAX: usize = 4 * WINDOW_MESSAGES_MAX;

/// The most payload bytes the sender keeps in memory (a lone larger message is still taken).
pub(crate) const HELD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Without any frame from the peer for this long, the sender pings.
pub(crate) const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(5);

/// Without any frame from the peer for this long, the link is dead.
pub(crate) const KEEP_ALIVE_DEAD: Duration = Duration::from_secs(15);

const _: () = assert!(BATCH_MESSAGES_MAX <= WINDOW_MESSAGES_MAX);
const _: () = assert!(WINDOW_MESSAGES_MAX <= HELD_MESSAGES_MAX);
const _: () = assert!(WIRE_MESSAGE_BYTES_MAX <= HELD_BYTES_MAX);
// At least two pings go unanswered before the link is declared dead.
const _: () = assert!(2 * KEEP_ALIVE_IDLE.as_millis() < KEEP_ALIVE_DEAD.as_millis());

/// What the sender's journal holds for the channel, besides the held messages themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderState {
    /// This side's channel epoch, random when the channel state was created.
    pub epoch: u64,
    /// The receiver's epoch last seen in a `Welcome`, `None` before the first handshake.
    pub receiver_epoch: Option<u64>,
    /// The next sequence number to assign (the first is 1).
    pub next_seq: u64,
}

/// A message handed to the sender, with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldMessage {
    /// The channel sequence number.
    pub seq: u64,
    /// The message id.
    pub id: u128,
    /// The encoded message.
    pub payload: bytes::Bytes,
}

/// Expected operating errors: each means "close this connection" (and, for a restore error,
/// "do not start the channel").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SenderError {
    /// The held messages given at restart break the invariants.
    #[error("restored channel state is inconsistent: {reason}")]
    Restore {
        /// What is wrong.
        reason: String,
    },
    /// The peer speaks another protocol version.
    #[error("receiver speaks channel protocol {theirs}, this manager {ours}")]
    Version {
        /// Theirs.
        theirs: u32,
        /// [`CHANNEL_PROTOCOL_VERSION`].
        ours: u32,
    },
    /// A frame that has no place in the current state.
    #[error("unexpected frame from receiver: {frame}")]
    Unexpected {
        /// The frame's kind.
        frame: &'static str,
    },
    /// The receiver acked a sequence number never sent.
    #[error("receiver acked up to {up_to} but only up to {sent_max} was ever sent")]
    AckBeyondSent {
        /// The ack.
        up_to: u64,
        /// The highest sequence number ever transmittable.
        sent_max: u64,
    },
    /// The receiver holds sequence numbers this side never assigned: this
    /// side's channel state was rolled back (restored from a backup). Reconciling that would
    /// mean renumbering held messages; it needs an operator for now.
    #[error("receiver holds up to {stored_up_to} but this side assigned only below {next_seq}")]
    ReceiverAhead {
        /// From the welcome.
        stored_up_to: u64,
        /// This side's counter.
        next_seq: u64,
    },
    /// The peer said goodbye.
    #[error("receiver closed the channel: {reason}")]
    Goodbye {
        /// Its reason.
        reason: String,
    },
}

/// Why [`Sender::push`] refused a message; the caller keeps it in the transmission queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PushError {
    /// [`HELD_MESSAGES_MAX`] or [`HELD_BYTES_MAX`] reached: push again after acks.
    #[error("the sender holds its limit of messages; retry after acks")]
    Full,
    /// Larger than [`WIRE_MESSAGE_BYTES_MAX`]: it can never travel (a bug upstream, which
    /// checks `max_message_bytes` at put).
    #[error("message of {bytes} bytes exceeds the wire limit of {bytes_max}")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// [`WIRE_MESSAGE_BYTES_MAX`].
        bytes_max: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Disconnected,
    AwaitingWelcome,
    Connected,
}

/// The sending side's state machine; see the module documentation.
#[derive(Debug)]
pub(crate) struct Sender {
    from: String,
    to: String,
    state: SenderState,
    /// Assignments up to here are durable; only those are transmitted.
    seq_durable_up_to: u64,
    held: VecDeque<HeldMessage>,
    held_bytes: usize,
    /// Next sequence number to transmit on the current connection.
    next_to_send: u64,
    link: Link,
    hello_pending: bool,
    resync_pending: Option<Resync>,
    ping_pending: Option<u64>,
    pong_pending: Option<u64>,
    ping_nonce: u64,
    last_received: Instant,
    last_ping_sent: Option<Instant>,
    dead: bool,
    /// While the receiver may hold messages below this under an older numbering.
    reconcile_until: Option<u64>,
}

impl Sender {
    /// Restarts from the journal: the channel state and the held messages (pushed, not yet
    /// deleted), in sequence order.
    pub(crate) fn new(
        from: impl Into<String>,
        to: impl Into<String>,
        state: SenderState,
        held: impl IntoIterator<Item = HeldMessage>,
        now: Instant,
    ) -> Result<Sender, SenderError> {
        if state.next_seq == 0 {
            return Err(SenderError::Restore {
                reason: "next_seq is 0; sequence numbers start at 1".into(),
            });
        }
        let held: VecDeque<HeldMessage> = held.into_iter().collect();
        if held.len() > HELD_MESSAGES_MAX {
            return Err(SenderError::Restore {
                reason: format!("{} held messages exceed {HELD_MESSAGES_MAX}", held.len()),
            });
        }
        let first = state.next_seq - held.len() as u64;
        for (i, message) in held.iter().enumerate() {
            if message.seq != first + i as u64 || message.seq == 0 {
                return Err(SenderError::Restore {
                    reason: format!(
                        "held sequence numbers must run consecutively up to next_seq - 1 = {}; \
                         found {} at position {i}",
                        state.next_seq - 1,
                        message.seq
                    ),
                });
            }
        }
        let held_bytes = held.iter().map(|m| m.payload.len()).sum();
        Ok(Sender {
            from: from.into(),
            to: to.into(),
            state,
            seq_durable_up_to: state.next_seq - 1,
            held,
            held_bytes,
            next_to_send: first,
            link: Link::Disconnected,
            hello_pending: false,
            resync_pending: None,
            ping_pending: None,
            pong_pending: None,
            ping_nonce: 0,
            last_received: now,
            last_ping_sent: None,
            dead: false,
            reconcile_until: None,
        })
    }

    /// The channel state to persist (with the next assignment or deletion record): it changes
    /// on push (`next_seq`) and on handshake (`receiver_epoch`).
    pub(crate) fn state(&self) -> SenderState {
        self.state
    }

    /// The highest sequence number whose assignment is durable.
    pub(crate) fn durable_up_to(&self) -> u64 {
        self.seq_durable_up_to
    }

    #[cfg(test)]
    /// How many messages are held (pushed, not yet acked).
    pub(crate) fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Whether [`Sender::push`] would accept a message of `bytes`.
    pub(crate) fn can_push(&self, bytes: usize) -> bool {
        self.held.len() < HELD_MESSAGES_MAX
            && (self.held.is_empty() || self.held_bytes + bytes <= HELD_BYTES_MAX)
    }

    #[cfg(test)]
    /// Whether the receiver may still hold some held messages under an older numbering.
    pub(crate) fn is_reconciling(&self) -> bool {
        self.reconcile_until.is_some()
    }

    /// Whether the keep-alive declared the link dead: the driver closes the connection and
    /// calls [`Sender::handle_disconnected`].
    pub(crate) fn is_dead(&self) -> bool {
        self.dead
    }

    /// Whether the handshake is done and batches may flow.
    pub(crate) fn is_connected(&self) -> bool {
        self.link == Link::Connected
    }

    /// Takes a message from the transmission queue and assigns it the next sequence number,
    /// which is returned. Effect: the driver persists the assignment (`id → seq` and
    /// [`Sender::state`]) and then calls [`Sender::handle_seq_durable`]; until then the message
    /// is not transmitted.
    pub(crate) fn push(&mut self, id: u128, payload: bytes::Bytes) -> Result<u64, PushError> {
        if payload.len() > WIRE_MESSAGE_BYTES_MAX {
            return Err(PushError::TooLarge {
                bytes: payload.len(),
                bytes_max: WIRE_MESSAGE_BYTES_MAX,
            });
        }
        if !self.can_push(payload.len()) {
            return Err(PushError::Full);
        }
        let seq = self.state.next_seq;
        self.state.next_seq += 1;
        self.held_bytes += payload.len();
        self.held.push_back(HeldMessage { seq, id, payload });
        Ok(seq)
    }

    /// The driver made the assignments up to `up_to` durable.
    pub(crate) fn handle_seq_durable(&mut self, up_to: u64) {
        debug_assert!(
            up_to < self.state.next_seq,
            "durable beyond what was assigned"
        );
        self.seq_durable_up_to = self
            .seq_durable_up_to
            .max(up_to.min(self.state.next_seq - 1));
    }

    /// The driver could not make the assignments above the durable point durable (the write
    /// failed): those messages were never transmitted, so they are handed back (oldest first)
    /// and their sequence numbers are reused. Returns their ids.
    pub(crate) fn handle_seq_lost(&mut self) -> Vec<u128> {
        let mut lost = Vec::new();
        while self
            .held
            .back()
            .is_some_and(|m| m.seq > self.seq_durable_up_to)
        {
            if let Some(message) = self.held.pop_back() {
                self.held_bytes -= message.payload.len();
                lost.push(message.id);
            }
        }
        lost.reverse();
        self.state.next_seq = self.seq_durable_up_to + 1;
        self.next_to_send = self.next_to_send.min(self.state.next_seq);
        lost
    }

    /// A new connection is open: the handshake starts ([`Hello`] comes out of
    /// [`Sender::poll_transmit`]).
    pub(crate) fn handle_connecting(&mut self, now: Instant) {
        self.reset_link();
        self.link = Link::AwaitingWelcome;
        self.hello_pending = true;
        self.last_received = now;
    }

    /// The connection is gone: everything unacked becomes unsent again.
    pub(crate) fn handle_disconnected(&mut self) {
        self.reset_link();
    }

    fn reset_link(&mut self) {
        self.link = Link::Disconnected;
        self.hello_pending = false;
        self.resync_pending = None;
        self.ping_pending = None;
        self.pong_pending = None;
        self.last_ping_sent = None;
        self.dead = false;
        self.next_to_send = self.oldest_held_seq();
    }

    fn oldest_held_seq(&self) -> u64 {
        self.held.front().map_or(self.state.next_seq, |m| m.seq)
    }

    /// Any frame from the receiver. Returns the sequence numbers now deletable from the
    /// transmission queue (effect: the driver deletes them).
    pub(crate) fn handle_frame(
        &mut self,
        now: Instant,
        frame: ChannelFrame,
    ) -> Result<Vec<u64>, SenderError> {
        match frame {
            ChannelFrame::Welcome(welcome) => self.handle_connected(now, welcome),
            ChannelFrame::Ack { up_to } => self.handle_ack(now, up_to),
            ChannelFrame::Ping { nonce } => {
                self.last_received = now;
                self.pong_pending = Some(nonce);
                Ok(Vec::new())
            }
            ChannelFrame::Pong { .. } => {
                self.last_received = now;
                Ok(Vec::new())
            }
            ChannelFrame::Goodbye { reason } => Err(SenderError::Goodbye { reason }),
            ChannelFrame::Hello(_) => Err(SenderError::Unexpected { frame: "Hello" }),
            ChannelFrame::Batch(_) => Err(SenderError::Unexpected { frame: "Batch" }),
            ChannelFrame::Resync(_) => Err(SenderError::Unexpected { frame: "Resync" }),
            // Routing's frame: the core hands it to the link-state database, never here.
            ChannelFrame::LinkState(_) => Err(SenderError::Unexpected { frame: "LinkState" }),
            ChannelFrame::Custody(_) => Err(SenderError::Unexpected { frame: "Custody" }),
            ChannelFrame::Publications(_) => Err(SenderError::Unexpected {
                frame: "Publications",
            }),
        }
    }

    /// The handshake's answer. Decides where to resume: messages the receiver holds durably
    /// (same epoch, `stored_up_to`) are deletable and returned; transmission resumes at the
    /// oldest message still held. If the receiver is behind what was already deleted, or its
    /// epoch changed, it was restored or wiped: log it, queue a [`Resync`], and carry on.
    pub(crate) fn handle_connected(
        &mut self,
        now: Instant,
        welcome: Welcome,
    ) -> Result<Vec<u64>, SenderError> {
        if self.link != Link::AwaitingWelcome {
            return Err(SenderError::Unexpected { frame: "Welcome" });
        }
        if welcome.protocol_version != CHANNEL_PROTOCOL_VERSION {
            return Err(SenderError::Version {
                theirs: welcome.protocol_version,
                ours: CHANNEL_PROTOCOL_VERSION,
            });
        }
        self.last_received = now;
        let epoch_changed = self
            .state
            .receiver_epoch
            .is_some_and(|epoch| epoch != welcome.epoch);
        // Even under a new receiver epoch the receiver's point is in this side's numbering (it
        // is kept per sender epoch), so a point ahead means this side was rolled back.
        if welcome.stored_up_to >= self.state.next_seq {
            return Err(SenderError::ReceiverAhead {
                stored_up_to: welcome.stored_up_to,
                next_seq: self.state.next_seq,
            });
        }
        let mut deletable = Vec::new();
        if !epoch_changed {
            deletable = self.delete_up_to(welcome.stored_up_to);
        }
        self.state.receiver_epoch = Some(welcome.epoch);
        let oldest = self.oldest_held_seq();
        let behind = welcome.stored_up_to.saturating_add(1) < oldest;
        if epoch_changed || behind {
            tracing::warn!(
                from = %self.from,
                to = %self.to,
                receiver_epoch = welcome.epoch,
                stored_up_to = welcome.stored_up_to,
                resume_at = oldest,
                epoch_changed,
                "receiver's channel state was rolled back (restored or wiped); resuming from \
                 the oldest held message, the receiver deduplicates by message id"
            );
            let resync = Resync {
                next_seq: oldest,
                reconcile_until: self.state.next_seq,
            };
            self.reconcile_until = Some(resync.reconcile_until);
            self.resync_pending = Some(resync);
        }
        self.next_to_send = oldest;
        self.link = Link::Connected;
        Ok(deletable)
    }

    /// The receiver holds everything up to `up_to` durably. Returns the sequence numbers now
    /// deletable from the transmission queue. An ack at or below an earlier one changes nothing
    /// (it may come from a store that completed across a reconnect).
    pub(crate) fn handle_ack(&mut self, now: Instant, up_to: u64) -> Result<Vec<u64>, SenderError> {
        if self.link != Link::Connected {
            return Err(SenderError::Unexpected { frame: "Ack" });
        }
        if up_to > self.seq_durable_up_to {
            return Err(SenderError::AckBeyondSent {
                up_to,
                sent_max: self.seq_durable_up_to,
            });
        }
        self.last_received = now;
        Ok(self.delete_up_to(up_to))
    }

    fn delete_up_to(&mut self, up_to: u64) -> Vec<u64> {
        let mut deleted = Vec::new();
        while let Some(front) = self.held.front() {
            if front.seq > up_to {
                break;
            }
            self.held_bytes -= front.payload.len();
            deleted.push(front.seq);
            self.held.pop_front();
        }
        self.next_to_send = self.next_to_send.max(self.oldest_held_seq());
        if let Some(until) = self.reconcile_until {
            if self.oldest_held_seq() >= until {
                tracing::info!(from = %self.from, to = %self.to, "reconciliation done");
                self.reconcile_until = None;
            }
        }
        deleted
    }

    /// The next frame to send, if any: the handshake, a resync, keep-alives, then batches while
    /// the window has room.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<ChannelFrame> {
        match self.link {
            Link::Disconnected => return None,
            Link::AwaitingWelcome => {
                if !std::mem::take(&mut self.hello_pending) {
                    return None;
                }
                return Some(ChannelFrame::Hello(Hello {
                    protocol_version: CHANNEL_PROTOCOL_VERSION,
                    from: self.from.clone(),
                    to: self.to.clone(),
                    epoch: self.state.epoch,
                    next_seq: self.state.next_seq,
                }));
            }
            Link::Connected => {}
        }
        if let Some(resync) = self.resync_pending.take() {
            return Some(ChannelFrame::Resync(resync));
        }
        if let Some(nonce) = self.pong_pending.take() {
            return Some(ChannelFrame::Pong { nonce });
        }
        if let Some(nonce) = self.ping_pending.take() {
            self.last_ping_sent = Some(now);
            return Some(ChannelFrame::Ping { nonce });
        }
        self.next_batch()
    }

    fn next_batch(&mut self) -> Option<ChannelFrame> {
        let oldest = self.oldest_held_seq();
        // Cannot truncate: bounded by HELD_MESSAGES_MAX.
        let in_flight = (self.next_to_send - oldest) as usize;
        let room = WINDOW_MESSAGES_MAX
            .saturating_sub(in_flight)
            .min(BATCH_MESSAGES_MAX);
        let first_seq = self.next_to_send;
        let start = (first_seq - oldest) as usize;
        let mut messages = Vec::new();
        let mut bytes = 0usize;
        for held in self.held.iter().skip(start).take(room) {
            if held.seq > self.seq_durable_up_to {
                break;
            }
            // A lone message larger than a batch still travels, alone.
            if !messages.is_empty() && bytes + held.payload.len() > BATCH_BYTES_MAX {
                break;
            }
            bytes += held.payload.len();
            messages.push(WireMessage {
                id: held.id,
                payload: held.payload.clone(),
            });
        }
        if messages.is_empty() {
            return None;
        }
        self.next_to_send += messages.len() as u64;
        Some(ChannelFrame::Batch(Batch {
            first_seq,
            messages,
        }))
    }

    #[cfg(test)]
    /// When [`Sender::handle_timeout`] should next be called, if ever.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.link == Link::Disconnected || self.dead {
            return None;
        }
        let dead_at = self.last_received + KEEP_ALIVE_DEAD;
        if self.ping_pending.is_some() || self.link == Link::AwaitingWelcome {
            return Some(dead_at);
        }
        let idle_since = self
            .last_ping_sent
            .map_or(self.last_received, |sent| sent.max(self.last_received));
        Some(dead_at.min(idle_since + KEEP_ALIVE_IDLE))
    }

    /// Time passed: ping an idle link, declare a silent one dead.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.link == Link::Disconnected || self.dead {
            return;
        }
        if now >= self.last_received + KEEP_ALIVE_DEAD {
            tracing::warn!(from = %self.from, to = %self.to, "channel link dead: no frame for {KEEP_ALIVE_DEAD:?}");
            self.dead = true;
            return;
        }
        if self.link != Link::Connected || self.ping_pending.is_some() {
            return;
        }
        let idle_since = self
            .last_ping_sent
            .map_or(self.last_received, |sent| sent.max(self.last_received));
        if now >= idle_since + KEEP_ALIVE_IDLE {
            self.ping_nonce += 1;
            self.ping_pending = Some(self.ping_nonce);
        }
    }
}

#[cfg(test)]
mod tests;

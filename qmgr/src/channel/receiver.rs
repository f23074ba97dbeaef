//! The receiving side of a channel: stores what one neighbour sends, exactly once.
//!
//! It owns the channel state of one sender (the highest sequence number handed to the journal,
//! the sender's epoch, the reconciliation bound) and a bounded window of recently stored message
//! ids. It does no I/O: for each batch it returns a [`Store`] that the driver writes to the
//! journal in one atomic record group (messages and channel state together), and only when the
//! driver reports that write durable ([`Receiver::handle_stored`]) does an `Ack` come out
//! (persist, then acknowledge).
//!
//! Invariants:
//! - sequence numbers arrive consecutively on a connection: a batch that would leave a gap is a
//!   protocol error (the connection closes, the sender resends from the handshake);
//! - a message with a sequence number at or below the accepted point is discarded (a resend);
//! - while reconciling (after a [`Resync`] or a new sender epoch), a message below the
//!   reconciliation bound whose id is in the recent window is discarded too, and counted;
//! - the window holds at most [`RECENT_IDS_MAX`] ids;
//! - `Welcome` reports only what is durable; `Ack`s report only what is durable;
//! - a batch that brings nothing new and changes no state asks for no write;
//! - an early copy of a batch (a datagram beside the stream, [`Receiver::takes_early`]) is
//!   taken only if the stream could have brought it next: it never opens a gap, and its
//!   stream copy is then a resend like any other.

use std::collections::VecDeque;

use rustc_hash::{FxHashMap, FxHashSet};

use super::frame::{
    BATCH_MESSAGES_MAX, Batch, CHANNEL_PROTOCOL_VERSION, ChannelFrame, Hello, Resync,
    WIRE_MESSAGE_BYTES_MAX, Welcome, WireMessage,
};

/// How many of the most recently stored message ids the receiver remembers for dedup after a
/// rollback: 100k ids cost ~3 MiB and cover far more than one window of resends
/// ([`super::sender::HELD_MESSAGES_MAX`]).
pub(crate) const RECENT_IDS_MAX: usize = 100_000;

const _: () = assert!(super::sender::HELD_MESSAGES_MAX <= RECENT_IDS_MAX);

/// What the receiver's journal holds for one sender, written atomically with every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverState {
    /// This side's channel epoch: random when the state was created, new after a wipe or a
    /// restore from backup (the restore procedure draws a new one).
    pub epoch: u64,
    /// The sender's epoch last seen in a `Hello`.
    pub sender_epoch: Option<u64>,
    /// Highest sequence number from this sender stored (or deliberately skipped).
    pub stored_up_to: u64,
    /// While reconciling: messages with a sequence number below this are checked against the
    /// recent ids. 0 when not reconciling.
    pub reconcile_until: u64,
}

/// `reconcile_until` of a state restored from a backup (or otherwise rolled back) and not yet
/// greeted: the next `Hello` replaces it with the sender's `next_seq`, below which the sender
/// may resend anything.
pub(crate) const RECONCILE_AT_NEXT_HELLO: u64 = u64::MAX;

impl ReceiverState {
    /// The state to start from after restoring this one from a backup: a new epoch (so a sender
    /// that knew the old one resyncs) and reconciliation by id from the next handshake (so one
    /// that did not know it still cannot make this side store a message twice).
    pub fn restored(self, new_epoch: u64) -> ReceiverState {
        assert_ne!(new_epoch, self.epoch, "a restored state needs a new epoch");
        ReceiverState {
            epoch: new_epoch,
            reconcile_until: RECONCILE_AT_NEXT_HELLO,
            ..self
        }
    }
}

/// One message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredMessage {
    /// Its channel sequence number.
    pub seq: u64,
    /// Its id.
    pub id: u128,
    /// The encoded message.
    pub payload: bytes::Bytes,
}

/// Effect: write these messages and this channel state in one atomic journal group, then call
/// [`Receiver::handle_stored`] with `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Store {
    /// New messages, in sequence order (possibly none: a batch of resends still moves nothing,
    /// but a skip by id or a resync moves `state`).
    pub messages_to_store: Vec<StoredMessage>,
    /// The channel state after these messages.
    pub state: ReceiverState,
}

impl Store {
    #[cfg(test)]
    /// `state.stored_up_to`, for short.
    pub(crate) fn stored_up_to(&self) -> u64 {
        self.state.stored_up_to
    }
}

/// Expected operating errors: each means "close this connection".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReceiverError {
    /// The peer speaks another protocol version.
    #[error("sender speaks channel protocol {theirs}, this manager {ours}")]
    Version {
        /// Theirs.
        theirs: u32,
        /// [`CHANNEL_PROTOCOL_VERSION`].
        ours: u32,
    },
    /// A frame before the handshake, or one the sender never sends.
    #[error("unexpected frame from sender: {frame}")]
    Unexpected {
        /// The frame's kind.
        frame: &'static str,
    },
    /// A batch that starts after the next expected sequence number.
    #[error("batch starts at {first_seq} but {expected} was expected")]
    Gap {
        /// What arrived.
        first_seq: u64,
        /// `stored_up_to + 1`.
        expected: u64,
    },
    /// A batch that breaks a limit or the numbering (empty, too many messages, sequence 0,
    /// overflow, a message too large).
    #[error("invalid batch: {reason}")]
    InvalidBatch {
        /// Which rule.
        reason: &'static str,
    },
    /// The peer said goodbye.
    #[error("sender closed the channel: {reason}")]
    Goodbye {
        /// Its reason.
        reason: String,
    },
}

/// The ids of the most recently stored messages, at most [`RECENT_IDS_MAX`].
///
/// Only a reconciliation looks ids up, so the index is built when one first asks and dropped
/// when it ends: otherwise every stored message would pay for a hash insert and removal.
#[derive(Debug, Default)]
struct RecentIds {
    order: VecDeque<u128>,
    /// While reconciling: how many times each id of `order` is in it (a message that came
    /// through twice, say around a routing loop, is there twice).
    index: Option<FxHashMap<u128, u32>>,
}

impl RecentIds {
    fn insert(&mut self, id: u128) {
        self.order.push_back(id);
        if let Some(index) = &mut self.index {
            *index.entry(id).or_default() += 1;
        }
        if self.order.len() > RECENT_IDS_MAX {
            if let Some(old) = self.order.pop_front() {
                self.unindex(old);
            }
        }
    }

    fn unindex(&mut self, id: u128) {
        if let Some(index) = &mut self.index {
            if let Some(count) = index.get_mut(&id) {
                *count -= 1;
                if *count == 0 {
                    index.remove(&id);
                }
            }
        }
    }

    fn remove(&mut self, ids: &FxHashSet<u128>) {
        self.order.retain(|id| !ids.contains(id));
        if let Some(index) = &mut self.index {
            index.retain(|id, _| !ids.contains(id));
        }
    }

    fn contains(&mut self, id: u128) -> bool {
        let order = &self.order;
        self.index
            .get_or_insert_with(|| {
                let mut index = FxHashMap::default();
                for &id in order {
                    *index.entry(id).or_default() += 1;
                }
                index
            })
            .contains_key(&id)
    }

    /// Reconciliation is over: nothing looks ids up until the next one.
    fn drop_index(&mut self) {
        self.index = None;
    }
}

/// What answering one frame asks of the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReceiverOutput {
    /// Send this frame.
    Send(ChannelFrame),
    /// Persist this, then call [`Receiver::handle_stored`].
    Store(Store),
    /// Nothing: the frame was a copy of what this side already took.
    Nothing,
}

/// The receiving side's state machine; see the module documentation.
#[derive(Debug)]
pub(crate) struct Receiver {
    /// The accepted state: everything handed to the driver to store, durable or not.
    state: ReceiverState,
    /// `stored_up_to` known durable (what `Welcome` reports).
    durable_up_to: u64,
    recent: RecentIds,
    greeted: bool,
    duplicates_skipped_by_id: u64,
}

impl Receiver {
    /// Restarts from the journal: the durable channel state and the ids of the messages most
    /// recently stored through this channel, oldest first (only the last [`RECENT_IDS_MAX`] are
    /// kept).
    pub(crate) fn new(
        state: ReceiverState,
        recent_ids: impl IntoIterator<Item = u128>,
    ) -> Receiver {
        let mut recent = RecentIds::default();
        for id in recent_ids {
            recent.insert(id);
        }
        Receiver {
            state,
            durable_up_to: state.stored_up_to,
            recent,
            greeted: false,
            duplicates_skipped_by_id: 0,
        }
    }

    #[cfg(test)]
    /// The accepted channel state (what the next [`Store`] carries).
    pub(crate) fn state(&self) -> ReceiverState {
        self.state
    }

    #[cfg(test)]
    /// Highest sequence number known durable.
    pub(crate) fn durable_up_to(&self) -> u64 {
        self.durable_up_to
    }

    /// Whether messages may still be skipped by id.
    pub(crate) fn is_reconciling(&self) -> bool {
        self.state.reconcile_until > self.state.stored_up_to + 1
    }

    /// How many messages were discarded because their id was recently stored.
    pub(crate) fn duplicates_skipped_by_id(&self) -> u64 {
        self.duplicates_skipped_by_id
    }

    /// The connection is gone; the next one starts with a `Hello`.
    pub(crate) fn handle_disconnected(&mut self) {
        self.greeted = false;
    }

    /// Any frame from the sender.
    pub(crate) fn handle_frame(
        &mut self,
        frame: ChannelFrame,
    ) -> Result<ReceiverOutput, ReceiverError> {
        match frame {
            ChannelFrame::Hello(hello) => Ok(ReceiverOutput::Send(ChannelFrame::Welcome(
                self.handle_hello(hello)?,
            ))),
            ChannelFrame::Batch(Batch {
                first_seq,
                messages,
            }) => {
                let before = self.state;
                let store = self.handle_batch(first_seq, messages)?;
                // A copy already taken (an early copy's stream twin, a resend) needs no write:
                // whatever took it first is acknowledged when durable.
                Ok(
                    if store.messages_to_store.is_empty() && store.state == before {
                        ReceiverOutput::Nothing
                    } else {
                        ReceiverOutput::Store(store)
                    },
                )
            }
            ChannelFrame::Resync(resync) => Ok(ReceiverOutput::Store(self.handle_resync(resync)?)),
            ChannelFrame::Ping { nonce } => Ok(ReceiverOutput::Send(ChannelFrame::Pong { nonce })),
            ChannelFrame::Pong { .. } => Err(ReceiverError::Unexpected { frame: "Pong" }),
            ChannelFrame::Goodbye { reason } => Err(ReceiverError::Goodbye { reason }),
            ChannelFrame::Welcome(_) => Err(ReceiverError::Unexpected { frame: "Welcome" }),
            ChannelFrame::Ack { .. } => Err(ReceiverError::Unexpected { frame: "Ack" }),
            // Routing's frame: the core hands it to the link-state database, never here.
            ChannelFrame::LinkState(_) => Err(ReceiverError::Unexpected { frame: "LinkState" }),
            ChannelFrame::Custody(_) => Err(ReceiverError::Unexpected { frame: "Custody" }),
            ChannelFrame::Publications(_) => Err(ReceiverError::Unexpected {
                frame: "Publications",
            }),
        }
    }

    /// Whether an early copy of a batch of `count` messages from `first_seq` is worth taking:
    /// the connection is greeted, and the batch brings the next sequence number or a later
    /// one without leaving a gap. One that is not is dropped, which costs nothing: its stream
    /// copy follows, in order. `queued_up_to` is the last sequence number of batches taken
    /// and waiting, on this connection, to be handled in order before this one (0: none):
    /// a copy that follows on from them follows on when its turn comes.
    pub(crate) fn takes_early(&self, first_seq: u64, count: usize, queued_up_to: u64) -> bool {
        let expected = self.state.stored_up_to.max(queued_up_to) + 1;
        let last = first_seq.saturating_add(count as u64).saturating_sub(1);
        self.greeted && count > 0 && first_seq >= 1 && first_seq <= expected && last >= expected
    }

    /// The handshake. A sender with a new epoch was wiped (or is new): its numbering starts
    /// over, so this side starts over too and reconciles by id for the next
    /// [`RECENT_IDS_MAX`] sequence numbers.
    pub(crate) fn handle_hello(&mut self, hello: Hello) -> Result<Welcome, ReceiverError> {
        if hello.protocol_version != CHANNEL_PROTOCOL_VERSION {
            return Err(ReceiverError::Version {
                theirs: hello.protocol_version,
                ours: CHANNEL_PROTOCOL_VERSION,
            });
        }
        match self.state.sender_epoch {
            Some(epoch) if epoch != hello.epoch => {
                tracing::warn!(
                    from = %hello.from,
                    old_epoch = epoch,
                    new_epoch = hello.epoch,
                    "sender's channel state is new (wiped or restored); restarting its numbering \
                     and deduplicating by message id"
                );
                // A wiped sender may push old messages from its transmission queue after the
                // handshake, so its `next_seq` does not bound the resends; but an id can only be
                // caught while it is in the window, which the next RECENT_IDS_MAX stored
                // messages push out. Reconcile that far.
                self.state = ReceiverState {
                    epoch: self.state.epoch,
                    sender_epoch: Some(hello.epoch),
                    stored_up_to: 0,
                    reconcile_until: hello.next_seq.saturating_add(RECENT_IDS_MAX as u64),
                };
                // Stores in flight belong to the old numbering: handle_stored ignores them.
                self.durable_up_to = 0;
            }
            Some(_) => {}
            None => self.state.sender_epoch = Some(hello.epoch),
        }
        if self.state.reconcile_until == RECONCILE_AT_NEXT_HELLO {
            tracing::warn!(
                from = %hello.from,
                stored_up_to = self.state.stored_up_to,
                reconcile_until = hello.next_seq,
                "this side's channel state was restored; deduplicating by message id"
            );
            self.state.reconcile_until = hello.next_seq;
        }
        self.greeted = true;
        Ok(Welcome {
            protocol_version: CHANNEL_PROTOCOL_VERSION,
            epoch: self.state.epoch,
            stored_up_to: self.durable_up_to,
        })
    }

    /// The sender holds nothing below `next_seq` (this side was rolled back): move there (never
    /// backwards), and deduplicate by id below `reconcile_until`.
    pub(crate) fn handle_resync(&mut self, resync: Resync) -> Result<Store, ReceiverError> {
        if !self.greeted {
            return Err(ReceiverError::Unexpected { frame: "Resync" });
        }
        if resync.next_seq == 0 || resync.reconcile_until < resync.next_seq {
            return Err(ReceiverError::InvalidBatch {
                reason: "resync out of order",
            });
        }
        tracing::warn!(
            stored_up_to = self.state.stored_up_to,
            next_seq = resync.next_seq,
            reconcile_until = resync.reconcile_until,
            "sender reports this side's channel state rolled back; resuming at its oldest held \
             message and deduplicating by message id"
        );
        // Never backwards: within one sender epoch the numbering is the sender's, so whatever
        // this side accepted up to its point is those very messages. (Moving back would also
        // let a write already in flight report a point ahead of the accepted one.)
        self.state.stored_up_to = self.state.stored_up_to.max(resync.next_seq - 1);
        self.state.reconcile_until = resync.reconcile_until;
        Ok(Store {
            messages_to_store: Vec::new(),
            state: self.state,
        })
    }

    /// A batch: returns what to store. Resends (at or below the accepted point) are skipped;
    /// while reconciling, so are recently stored ids.
    pub(crate) fn handle_batch(
        &mut self,
        first_seq: u64,
        messages: Vec<WireMessage>,
    ) -> Result<Store, ReceiverError> {
        if !self.greeted {
            return Err(ReceiverError::Unexpected { frame: "Batch" });
        }
        if messages.is_empty() {
            return Err(ReceiverError::InvalidBatch { reason: "empty" });
        }
        if messages.len() > BATCH_MESSAGES_MAX {
            return Err(ReceiverError::InvalidBatch {
                reason: "more messages than BATCH_MESSAGES_MAX",
            });
        }
        if first_seq == 0 {
            return Err(ReceiverError::InvalidBatch {
                reason: "sequence numbers start at 1",
            });
        }
        if first_seq.checked_add(messages.len() as u64).is_none() {
            return Err(ReceiverError::InvalidBatch {
                reason: "sequence numbers overflow",
            });
        }
        if messages
            .iter()
            .any(|m| m.payload.len() > WIRE_MESSAGE_BYTES_MAX)
        {
            return Err(ReceiverError::InvalidBatch {
                reason: "message larger than WIRE_MESSAGE_BYTES_MAX",
            });
        }
        let expected = self.state.stored_up_to + 1;
        if first_seq > expected {
            return Err(ReceiverError::Gap {
                first_seq,
                expected,
            });
        }
        let mut messages_to_store = Vec::new();
        let mut skipped_by_id = 0u64;
        for (seq, message) in (first_seq..).zip(messages) {
            let skip_dedup = crate::mutation::active(crate::mutation::Mutation::SkipDedup);
            if seq <= self.state.stored_up_to && !skip_dedup {
                continue;
            }
            self.state.stored_up_to = self.state.stored_up_to.max(seq);
            if seq < self.state.reconcile_until && self.recent.contains(message.id) && !skip_dedup {
                skipped_by_id += 1;
                continue;
            }
            self.recent.insert(message.id);
            messages_to_store.push(StoredMessage {
                seq,
                id: message.id,
                payload: message.payload,
            });
        }
        if skipped_by_id > 0 {
            self.duplicates_skipped_by_id += skipped_by_id;
            tracing::info!(
                skipped_by_id,
                stored_up_to = self.state.stored_up_to,
                "reconciling: discarded messages already stored (by id)"
            );
        }
        if self.state.reconcile_until != 0 && !self.is_reconciling() {
            tracing::info!(
                stored_up_to = self.state.stored_up_to,
                "reconciliation done"
            );
            self.state.reconcile_until = 0;
            self.recent.drop_index();
        }
        Ok(Store {
            messages_to_store,
            state: self.state,
        })
    }

    /// The driver could not make a [`Store`] durable (its write failed): back to the durable
    /// state `durable`, forgetting the ids of the messages that were not stored (their resends
    /// must be taken), but keeping the rest of the window. The connection must be closed; the
    /// sender resends from the next handshake.
    pub(crate) fn handle_store_failed(&mut self, durable: ReceiverState, failed_ids: &[u128]) {
        let failed: FxHashSet<u128> = failed_ids.iter().copied().collect();
        self.recent.remove(&failed);
        self.state = durable;
        self.durable_up_to = durable.stored_up_to;
        self.greeted = false;
    }

    /// The ids of the recently stored messages, oldest first (for a state record that must
    /// carry the window across the deletion of older records).
    pub(crate) fn recent_ids(&self) -> impl Iterator<Item = u128> + '_ {
        self.recent.order.iter().copied()
    }

    /// The driver made `stored` (the state of a [`Store`]) durable: acknowledge it. `None` if
    /// that store belongs to a sender epoch since replaced (its numbering means nothing now), or
    /// if no connection is greeted.
    pub(crate) fn handle_stored(&mut self, stored: &ReceiverState) -> Option<ChannelFrame> {
        if stored.sender_epoch != self.state.sender_epoch {
            return None;
        }
        // Journal writes complete in order, so this is the latest durable state.
        self.durable_up_to = stored.stored_up_to;
        // Before this connection's Hello, the sender expects a Welcome, not an Ack; the
        // Welcome will carry this point.
        if !self.greeted {
            return None;
        }
        Some(ChannelFrame::Ack {
            up_to: stored.stored_up_to,
        })
    }
}

#[cfg(test)]
mod tests;

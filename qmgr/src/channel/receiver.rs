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
//! - `Welcome` reports only what is durable; `Ack`s report only what is durable.

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
            }) => Ok(ReceiverOutput::Store(
                self.handle_batch(first_seq, messages)?,
            )),
            ChannelFrame::Resync(resync) => Ok(ReceiverOutput::Store(self.handle_resync(resync)?)),
            ChannelFrame::Ping { nonce } => Ok(ReceiverOutput::Send(ChannelFrame::Pong { nonce })),
            ChannelFrame::Pong { .. } => Err(ReceiverError::Unexpected { frame: "Pong" }),
            ChannelFrame::Goodbye { reason } => Err(ReceiverError::Goodbye { reason }),
            ChannelFrame::Welcome(_) => Err(ReceiverError::Unexpected { frame: "Welcome" }),
            ChannelFrame::Ack { .. } => Err(ReceiverError::Unexpected { frame: "Ack" }),
            // Routing's frame: the core hands it to the link-state database, never here.
            ChannelFrame::LinkState(_) => Err(ReceiverError::Unexpected { frame: "LinkState" }),
        }
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
mod tests {
    use super::*;

    const SENDER_EPOCH: u64 = 5;

    fn state(stored_up_to: u64) -> ReceiverState {
        ReceiverState {
            epoch: 1,
            sender_epoch: Some(SENDER_EPOCH),
            stored_up_to,
            reconcile_until: 0,
        }
    }

    fn hello(epoch: u64, next_seq: u64) -> Hello {
        Hello {
            protocol_version: CHANNEL_PROTOCOL_VERSION,
            from: "alpha".into(),
            to: "bravo".into(),
            epoch,
            next_seq,
        }
    }

    fn messages(ids: std::ops::Range<u128>) -> Vec<WireMessage> {
        ids.map(|id| WireMessage {
            id,
            payload: id.to_le_bytes().to_vec().into(),
        })
        .collect()
    }

    fn greeted(stored_up_to: u64, recent: impl IntoIterator<Item = u128>) -> Receiver {
        let mut receiver = Receiver::new(state(stored_up_to), recent);
        receiver.handle_hello(hello(SENDER_EPOCH, 100)).unwrap();
        receiver
    }

    fn seqs(store: &Store) -> Vec<u64> {
        store.messages_to_store.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn a_failed_store_rolls_back_to_the_durable_point_and_takes_the_resends() {
        let mut receiver = greeted(5, 1..=5);
        let durable = receiver.state();
        let store = receiver.handle_batch(6, messages(6..9)).unwrap();
        assert_eq!(seqs(&store), vec![6, 7, 8]);
        receiver.handle_store_failed(durable, &[6, 7, 8]);
        assert_eq!(receiver.durable_up_to(), 5);
        assert_eq!(
            receiver.recent_ids().collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5],
            "the window keeps what was stored and forgets what failed"
        );
        receiver.handle_hello(hello(SENDER_EPOCH, 100)).unwrap();
        let retry = receiver.handle_batch(6, messages(6..9)).unwrap();
        assert_eq!(
            seqs(&retry),
            vec![6, 7, 8],
            "resends of what failed are taken"
        );
    }

    #[test]
    fn the_welcome_reports_the_durable_point_and_epoch() {
        let mut receiver = Receiver::new(state(7), []);
        let welcome = receiver.handle_hello(hello(SENDER_EPOCH, 9)).unwrap();
        assert_eq!(
            welcome,
            Welcome {
                protocol_version: CHANNEL_PROTOCOL_VERSION,
                epoch: 1,
                stored_up_to: 7
            }
        );
        let mut other = hello(SENDER_EPOCH, 9);
        other.protocol_version += 1;
        assert!(matches!(
            receiver.handle_hello(other),
            Err(ReceiverError::Version { .. })
        ));
    }

    #[test]
    fn nothing_is_accepted_before_the_hello() {
        let mut receiver = Receiver::new(state(0), []);
        assert!(matches!(
            receiver.handle_batch(1, messages(1..2)),
            Err(ReceiverError::Unexpected { .. })
        ));
        receiver.handle_hello(hello(SENDER_EPOCH, 2)).unwrap();
        receiver.handle_disconnected();
        assert!(receiver.handle_batch(1, messages(1..2)).is_err());
    }

    #[test]
    fn resends_at_or_below_the_stored_point_are_discarded() {
        let mut receiver = greeted(3, []);
        // Seqs 2..=6: 2 and 3 are resends.
        let store = receiver.handle_batch(2, messages(2..7)).unwrap();
        assert_eq!(seqs(&store), vec![4, 5, 6]);
        assert_eq!(store.stored_up_to(), 6);
        let again = receiver.handle_batch(4, messages(4..7)).unwrap();
        assert!(again.messages_to_store.is_empty());
        assert_eq!(again.stored_up_to(), 6);
    }

    #[test]
    fn a_gap_is_a_protocol_error() {
        let mut receiver = greeted(3, []);
        assert_eq!(
            receiver.handle_batch(5, messages(5..6)),
            Err(ReceiverError::Gap {
                first_seq: 5,
                expected: 4
            })
        );
    }

    #[test]
    fn invalid_batches_are_refused() {
        let mut receiver = greeted(0, []);
        assert!(receiver.handle_batch(1, Vec::new()).is_err());
        assert!(receiver.handle_batch(0, messages(0..1)).is_err());
        assert!(
            receiver
                .handle_batch(1, messages(0..BATCH_MESSAGES_MAX as u128 + 1))
                .is_err()
        );
        let mut receiver = greeted(u64::MAX - 1, []);
        assert!(receiver.handle_batch(u64::MAX, messages(0..2)).is_err());
    }

    #[test]
    fn acks_wait_for_durability_and_the_welcome_reports_only_what_is_durable() {
        let mut receiver = greeted(0, []);
        let store = receiver.handle_batch(1, messages(1..4)).unwrap();
        assert_eq!(receiver.durable_up_to(), 0);
        // Reconnect before the write is durable: the welcome must not claim it.
        receiver.handle_disconnected();
        let welcome = receiver.handle_hello(hello(SENDER_EPOCH, 4)).unwrap();
        assert_eq!(welcome.stored_up_to, 0);
        // The resend is discarded: the write in flight already carries it.
        assert!(
            receiver
                .handle_batch(1, messages(1..4))
                .unwrap()
                .messages_to_store
                .is_empty()
        );
        assert_eq!(
            receiver.handle_stored(&store.state),
            Some(ChannelFrame::Ack { up_to: 3 })
        );
        assert_eq!(receiver.durable_up_to(), 3);
    }

    #[test]
    fn no_ack_goes_out_before_the_connection_is_greeted() {
        let mut receiver = greeted(0, []);
        let store = receiver.handle_batch(1, messages(1..2)).unwrap();
        receiver.handle_disconnected();
        assert_eq!(receiver.handle_stored(&store.state), None);
        assert_eq!(
            receiver
                .handle_hello(hello(SENDER_EPOCH, 2))
                .unwrap()
                .stored_up_to,
            1
        );
    }

    #[test]
    fn a_resync_moves_the_stored_point_and_dedups_by_id_below_the_bound() {
        // Ids 1..=20 are stored; the channel state says only 10.
        let mut receiver = greeted(10, 1..=20);
        let store = receiver
            .handle_resync(Resync {
                next_seq: 16,
                reconcile_until: 25,
            })
            .unwrap();
        assert!(store.messages_to_store.is_empty());
        assert_eq!(store.stored_up_to(), 15);
        assert!(receiver.is_reconciling());
        // Seqs 16..=26 carry ids 16..=26: 16..=20 were stored already.
        let store = receiver.handle_batch(16, messages(16..27)).unwrap();
        let ids: Vec<u128> = store.messages_to_store.iter().map(|m| m.id).collect();
        assert_eq!(ids, (21..27).collect::<Vec<u128>>());
        assert_eq!(receiver.duplicates_skipped_by_id(), 5);
        assert_eq!(store.stored_up_to(), 26);
        assert!(!receiver.is_reconciling());
        assert_eq!(
            store.state.reconcile_until, 0,
            "done, and persisted as done"
        );
    }

    #[test]
    fn outside_reconciliation_ids_are_not_checked() {
        let mut receiver = greeted(0, [1]);
        let store = receiver.handle_batch(1, messages(1..2)).unwrap();
        assert_eq!(seqs(&store), vec![1]);
    }

    #[test]
    fn a_restored_state_reconciles_below_the_senders_next_seq() {
        let restored = state(10).restored(2);
        let mut receiver = Receiver::new(restored, 1..=15);
        let welcome = receiver.handle_hello(hello(SENDER_EPOCH, 16)).unwrap();
        assert_eq!((welcome.epoch, welcome.stored_up_to), (2, 10));
        assert_eq!(receiver.state().reconcile_until, 16);
        let store = receiver.handle_batch(11, messages(11..18)).unwrap();
        assert_eq!(seqs(&store), vec![16, 17]);
    }

    #[test]
    fn a_new_sender_epoch_restarts_the_numbering() {
        let mut receiver = greeted(50, 1..=50);
        let in_flight = receiver.handle_batch(51, messages(51..52)).unwrap();
        receiver.handle_disconnected();
        let welcome = receiver.handle_hello(hello(SENDER_EPOCH + 1, 3)).unwrap();
        assert_eq!(welcome.stored_up_to, 0);
        assert_eq!(receiver.state().sender_epoch, Some(SENDER_EPOCH + 1));
        // A write of the old numbering completing now acks nothing.
        assert_eq!(receiver.handle_stored(&in_flight.state), None);
        // The wiped sender resends ids 50 and 51 as seqs 1 and 2, then a new one.
        let resent = vec![
            WireMessage {
                id: 50,
                payload: Vec::new().into(),
            },
            WireMessage {
                id: 51,
                payload: Vec::new().into(),
            },
            WireMessage {
                id: 99,
                payload: Vec::new().into(),
            },
        ];
        let store = receiver.handle_batch(1, resent).unwrap();
        let ids: Vec<u128> = store.messages_to_store.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![99]);
    }

    #[test]
    fn an_id_in_the_window_twice_stays_known_until_both_leave() {
        let mut recent = RecentIds::default();
        recent.insert(7);
        assert!(recent.contains(7));
        recent.insert(7);
        for id in 0..RECENT_IDS_MAX as u128 - 1 {
            recent.insert(1000 + id);
        }
        // The first 7 has left the window, the second not yet.
        assert!(recent.contains(7));
        recent.insert(1);
        assert!(!recent.contains(7));
        recent.drop_index();
        assert!(recent.contains(1) && !recent.contains(7));
    }

    #[test]
    fn the_recent_window_is_bounded() {
        let mut receiver = Receiver::new(state(0), 0..(RECENT_IDS_MAX as u128 + 10));
        assert_eq!(receiver.recent.order.len(), RECENT_IDS_MAX);
        assert!(!receiver.recent.contains(9));
        assert!(receiver.recent.contains(10));
        receiver.handle_hello(hello(SENDER_EPOCH, 1)).unwrap();
        receiver
            .handle_batch(1, messages(1_000_000..1_000_100))
            .unwrap();
        assert_eq!(receiver.recent.order.len(), RECENT_IDS_MAX);
        assert!(!receiver.recent.contains(109));
        assert!(receiver.recent.contains(1_000_099));
        // The index built for those lookups follows the window as it moves.
        receiver
            .handle_batch(101, messages(2_000_000..2_000_100))
            .unwrap();
        assert_eq!(receiver.recent.order.len(), RECENT_IDS_MAX);
        assert_eq!(
            receiver.recent.index.as_ref().unwrap().len(),
            RECENT_IDS_MAX
        );
        assert!(!receiver.recent.contains(209));
        assert!(receiver.recent.contains(2_000_000));
    }

    #[test]
    fn pings_are_answered_and_sender_only_frames_refused() {
        let mut receiver = greeted(0, []);
        assert_eq!(
            receiver.handle_frame(ChannelFrame::Ping { nonce: 3 }),
            Ok(ReceiverOutput::Send(ChannelFrame::Pong { nonce: 3 }))
        );
        assert!(
            receiver
                .handle_frame(ChannelFrame::Ack { up_to: 1 })
                .is_err()
        );
        assert!(matches!(
            receiver.handle_frame(crate::channel::frame::goodbye("bye")),
            Err(ReceiverError::Goodbye { .. })
        ));
    }
}

//! The operator's operations: listing, removing and moving the messages of a queue (`qmgr
//! purge`, `delete-message`, `move`, `dlq list|replay|move`).
//!
//! Each acts on the messages present when it starts (those put later are left alone), a
//! bounded number at a time, and is answered once everything it did is durable. A move writes
//! each batch's new copies and the removal of the originals in one atomic journal group, so a
//! crash in the middle leaves every message in exactly one of the two places; a removal cut
//! short by a crash has removed a prefix. Messages leased to a consumer are never touched:
//! they are counted as such.

use serde::{Deserialize, Serialize};

use crate::message::MessageId;

/// Which messages of a queue an operator operation acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Selection {
    /// Every message.
    All,
    /// The messages with these ids (at most [`super::BATCH_MESSAGES_MAX`]).
    Ids(Vec<MessageId>),
    /// Messages whose dead-letter reason (the header `hopmq.dead_letter_reason`) contains this
    /// text.
    Reason(String),
}

/// Where moved messages go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveTarget {
    /// Each message to the address it was put to (a dead letter's replay), resolved as a put
    /// to that address would be: a local queue, or on towards another manager.
    Original,
    /// Every message to this address (`QUEUE` or `QUEUE@MANAGER`), as a put to it would go.
    Address(String),
}

/// A move of messages from one local queue to an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRequest {
    /// The local queue they are in.
    pub from: String,
    /// Which of them.
    pub selection: Selection,
    /// Where they go.
    pub to: MoveTarget,
    /// A replay: the dead-letter headers (`hopmq.dead_letter_*`) are taken off and the copy
    /// goes as a fresh delivery. Otherwise the headers stay (dead letters parked elsewhere keep
    /// their reasons).
    pub replay: bool,
}

/// What a removal or a move did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveOutcome {
    /// Messages examined.
    pub examined: u64,
    /// Messages selected and removed, or moved (their copies durable in their new place).
    pub done: u64,
    /// Selected messages leased to a consumer at the time: left where they are.
    pub leased: u64,
    /// Selected messages that could not be moved, grouped by why; they stay where they are.
    pub left: Vec<LeftMessages>,
    /// Ids asked for that are not in the queue.
    pub missing: Vec<MessageId>,
    /// Why the operation stopped before the end, if it did (a full queue, a failed write, the
    /// manager shutting down); what it had done by then stays done.
    pub stopped: Option<String>,
}

/// Selected messages left in place for one reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftMessages {
    /// Why they stay.
    pub reason: String,
    /// How many.
    pub messages: u64,
    /// The first few of their ids.
    pub ids: Vec<MessageId>,
}

/// One message of a listing: everything but its body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSummary {
    /// Its id.
    pub id: MessageId,
    /// The address it was put to.
    pub destination: String,
    /// The manager where it was put.
    pub origin: String,
    /// When it was put, in milliseconds since the Unix epoch.
    pub put_at_ms: u64,
    /// Body size.
    pub bytes: u64,
    /// 0 to 9.
    pub priority: u8,
    /// Deliveries so far.
    pub delivery_count: u32,
    /// Its headers (a dead letter's reason and former queue among them).
    pub headers: Vec<(String, String)>,
    /// When it expires, in milliseconds since the Unix epoch.
    pub expires_at_ms: Option<u64>,
}

/// The messages of a queue, without bodies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// The first `max` selected messages, in delivery order within a priority.
    pub messages: Vec<MessageSummary>,
    /// How many messages were selected in all.
    pub selected: u64,
    /// Selected messages per dead-letter reason (`""` for none), most frequent first.
    pub reasons: Vec<(String, u64)>,
}

/// The header a manager adds to a dead-lettered message, saying why.
pub const DEAD_LETTER_REASON_HEADER: &str = "hopmq.dead_letter_reason";
/// The header naming the queue a dead-lettered message came from.
pub const DEAD_LETTER_QUEUE_HEADER: &str = "hopmq.dead_letter_queue";
/// The dead-letter queue every manager has.
pub const DEAD_LETTER_QUEUE: &str = "DLQ";

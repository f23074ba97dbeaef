//! Operator jobs in progress: what each was asked, what it has left to examine, and what it
//! found so far.
//!
//! Invariants: a job is in `ready` exactly when it has no write in flight (the timer then runs
//! its next pass); `pending` holds only seqs that were in the queue when the job began, in
//! delivery order, and shrinks at every pass.

use std::collections::{BTreeMap, VecDeque};

use hopmq::protocol::{
    DEAD_LETTER_REASON_HEADER, LeftMessages, Listing, MessageSummary, MoveOutcome, MoveTarget,
    Selection,
};
use hopmq::{MessageId, QueueName};

use crate::record::StoredMessage;

/// The first ids kept per reason a message is left.
const LEFT_IDS_MAX: usize = 10;

/// Bytes of summaries (headers, addresses) a listing holds at most, far within a frame
/// whatever the headers of the messages listed; the rest are counted, not listed.
const LISTING_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Which messages a job acts on.
#[derive(Debug)]
pub(in crate::manager::core) enum Selected {
    All,
    /// The ids asked for, each with whether it was found.
    Ids(BTreeMap<u128, bool>),
    Reason(String),
}

impl Selected {
    pub(in crate::manager::core) fn new(selection: Selection) -> Self {
        match selection {
            Selection::All => Self::All,
            Selection::Ids(ids) => Self::Ids(ids.into_iter().map(|id| (id.0, false)).collect()),
            Selection::Reason(text) => Self::Reason(text),
        }
    }

    /// Whether telling needs the message's record (`All` does not).
    pub(in crate::manager::core) fn reads(&self) -> bool {
        !matches!(self, Self::All)
    }

    /// Whether `stored` is selected.
    pub(in crate::manager::core) fn matches(&self, stored: &StoredMessage<'_>) -> bool {
        match self {
            Self::All => true,
            Self::Ids(ids) => ids.contains_key(&stored.id),
            Self::Reason(text) => reason(stored).is_some_and(|r| r.contains(text.as_str())),
        }
    }

    /// Notes that the selected message `id` was found in the queue.
    pub(in crate::manager::core) fn found(&mut self, id: u128) {
        if let Self::Ids(ids) = self {
            if let Some(found) = ids.get_mut(&id) {
                *found = true;
            }
        }
    }

    /// True once every id asked for was found (nothing more to look for).
    pub(in crate::manager::core) fn complete(&self) -> bool {
        matches!(self, Self::Ids(ids) if ids.values().all(|&found| found))
    }

    /// The ids asked for and not found.
    pub(in crate::manager::core) fn not_found(&self) -> Vec<u128> {
        match self {
            Self::Ids(ids) => ids
                .iter()
                .filter(|(_, found)| !**found)
                .map(|(&id, _)| id)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A dead letter's reason.
pub(in crate::manager::core) fn reason<'a>(stored: &StoredMessage<'a>) -> Option<&'a str> {
    stored
        .headers
        .iter()
        .find(|(key, _)| *key == DEAD_LETTER_REASON_HEADER)
        .map(|(_, value)| *value)
}

/// What a job does with the messages it selects.
#[derive(Debug)]
pub(in crate::manager::core) enum Action {
    Remove,
    Move { to: MoveTarget, replay: bool },
    List { max: usize },
}

/// One operator job.
#[derive(Debug)]
pub(in crate::manager::core) struct Job {
    pub connection: u64,
    pub request: u64,
    pub queue: QueueName,
    pub selected: Selected,
    pub action: Action,
    /// Seqs of the messages present at the start, not examined yet, in delivery order.
    pub pending: VecDeque<u64>,
    pub outcome: MoveOutcome,
    left: BTreeMap<String, LeftMessages>,
    pub listing: Listing,
    /// Bytes of the summaries in `listing`, roughly.
    listing_bytes: usize,
    reasons: BTreeMap<String, u64>,
    pub in_flight: bool,
}

impl Job {
    pub(in crate::manager::core) fn new(
        (connection, request): (u64, u64),
        queue: QueueName,
        selected: Selected,
        action: Action,
        pending: VecDeque<u64>,
    ) -> Self {
        Self {
            connection,
            request,
            queue,
            selected,
            action,
            pending,
            outcome: MoveOutcome::default(),
            left: BTreeMap::new(),
            listing: Listing::default(),
            listing_bytes: 0,
            reasons: BTreeMap::new(),
            in_flight: false,
        }
    }

    /// A selected message stays where it is, for `reason`.
    pub(in crate::manager::core) fn leave(&mut self, id: u128, reason: String) {
        let left = self.left.entry(reason.clone()).or_insert(LeftMessages {
            reason,
            messages: 0,
            ids: Vec::new(),
        });
        left.messages += 1;
        if left.ids.len() < LEFT_IDS_MAX {
            left.ids.push(MessageId(id));
        }
    }

    /// A selected message, for a listing.
    pub(in crate::manager::core) fn list(
        &mut self,
        stored: &StoredMessage<'_>,
        delivery_count: u32,
        max: usize,
    ) {
        self.listing.selected += 1;
        *self
            .reasons
            .entry(reason(stored).unwrap_or_default().to_owned())
            .or_default() += 1;
        let bytes = 128
            + stored.destination.len()
            + stored.origin.len()
            + stored
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>();
        if self.listing.messages.len() < max && self.listing_bytes + bytes <= LISTING_BYTES_MAX {
            self.listing_bytes += bytes;
            self.listing.messages.push(MessageSummary {
                id: MessageId(stored.id),
                destination: stored.destination.to_owned(),
                origin: stored.origin.to_owned(),
                put_at_ms: stored.put_at_ms,
                bytes: stored.body.len() as u64,
                priority: stored.priority,
                delivery_count,
                headers: stored
                    .headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                expires_at_ms: stored.expires_at_ms,
            });
        }
    }

    /// Stops before the end: nothing more is examined.
    pub(in crate::manager::core) fn stop(&mut self, why: String) {
        self.pending.clear();
        self.outcome.stopped.get_or_insert(why);
    }

    /// The outcome, with the messages left and missing filled in.
    pub(in crate::manager::core) fn finish_outcome(&mut self, missing: Vec<u128>) -> MoveOutcome {
        let mut outcome = std::mem::take(&mut self.outcome);
        outcome.left = std::mem::take(&mut self.left).into_values().collect();
        outcome.missing = missing.into_iter().map(MessageId).collect();
        outcome
    }

    /// The listing, with its reasons counted, most frequent first.
    pub(in crate::manager::core) fn finish_listing(&mut self) -> Listing {
        let mut listing = std::mem::take(&mut self.listing);
        let mut reasons: Vec<(String, u64)> =
            std::mem::take(&mut self.reasons).into_iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        listing.reasons = reasons;
        listing
    }
}

/// Every job in progress.
#[derive(Debug, Default)]
pub(in crate::manager::core) struct Jobs {
    next_id: u64,
    jobs: BTreeMap<u64, Job>,
    /// The jobs ready for a pass, with when (monotonic milliseconds).
    ready: BTreeMap<u64, u64>,
}

/// The pause before a job's next pass: the core's task then waits on its timer, so the tasks
/// that carry other clients' requests run between two passes.
const PASS_PAUSE_MS: u64 = 1;

impl Jobs {
    /// Adds a job (its first pass is run at once by the caller); its id.
    pub(in crate::manager::core) fn add(&mut self, job: Job) -> u64 {
        self.next_id += 1;
        self.jobs.insert(self.next_id, job);
        self.next_id
    }

    /// Takes job `id` out for a pass (or to finish it); [`Jobs::put_back`] returns it.
    pub(in crate::manager::core) fn take(&mut self, id: u64) -> Option<Job> {
        self.ready.remove(&id);
        self.jobs.remove(&id)
    }

    /// Returns a job taken out at `now_ms`; ready for its next pass a moment later unless a
    /// write is in flight.
    pub(in crate::manager::core) fn put_back(&mut self, id: u64, job: Job, now_ms: u64) {
        if !job.in_flight {
            self.ready.insert(id, now_ms + PASS_PAUSE_MS);
        }
        self.jobs.insert(id, job);
    }

    /// The jobs ready for a pass at `now_ms`.
    pub(in crate::manager::core) fn ready(&self, now_ms: u64) -> Vec<u64> {
        self.ready
            .iter()
            .filter(|&(_, &at)| at <= now_ms)
            .map(|(&id, _)| id)
            .collect()
    }

    /// When the next pass is due.
    pub(in crate::manager::core) fn next_pass_ms(&self) -> Option<u64> {
        self.ready.values().min().copied()
    }

    /// Every job's id.
    pub(in crate::manager::core) fn ids(&self) -> Vec<u64> {
        self.jobs.keys().copied().collect()
    }

    /// The ids of the jobs `connection` asked for.
    pub(in crate::manager::core) fn of_connection(&self, connection: u64) -> Vec<u64> {
        self.jobs
            .iter()
            .filter(|(_, job)| job.connection == connection)
            .map(|(&id, _)| id)
            .collect()
    }
}

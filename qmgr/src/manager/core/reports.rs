//! Delivery reports (see `hopmq::report`): what a put asked to be told of its message (its
//! arrival in its destination queue, its delivery to an application, its dead-lettering)
//! sent to its `reply_to` as ordinary persistent messages, stamped when they leave so that
//! custody carries them exactly once like any other.
//!
//! Invariants:
//! - A report is written in the journal group of the event it reports (the record that
//!   stores, removes or dead-letters the message): a crash keeps both or neither. Reports
//!   made while handling an event wait in `pending` and ride the next write the core
//!   appends, which the handler makes right after making them; an event that writes nothing
//!   (a non-persistent message) has its reports written alone when it ends. Custody's own
//!   record never carries them. Only past [`PENDING_BYTES_MAX`] (a huge batch on a journal
//!   with tiny segments) are they written ahead of their event, alone.
//! - A report never asks for reports, and a dead-lettered message owes none: reports cannot
//!   breed. A report that cannot be placed is dead-lettered with why.
//! - A queued message's entry keeps the kinds still due ([`Entry::reports`]); the kinds are
//!   read from the record's `hopmq.reports` header at put, arrival and recovery alike.

use std::collections::{BTreeMap, VecDeque};

use hopmq::report::{
    REPORT_HEADER, REPORT_MANAGER_HEADER, REPORT_QUEUE_HEADER, REPORT_REASON_HEADER,
    REPORTS_HEADER, Report, Reports,
};

// The core's types and imports: these handlers are part of `Core`, split by concern.
use super::*;
use crate::custody::Chain;

/// The most bytes of reports one write carries; past it they are written ahead, alone.
const PENDING_BYTES_MAX: u64 = 1024 * 1024;

/// Reports on their way into the journal.
#[derive(Debug, Default)]
pub(super) struct Reporting {
    /// Made for the write about to be appended.
    pending: Vec<PutItem>,
    pending_bytes: u64,
    /// Riding writes in flight: the write's number (see `Commits::made_count`) and them.
    riding: VecDeque<(u64, Vec<PutItem>)>,
    /// Reports made since start.
    made: u64,
}

/// Reports a write completed brings: their items, and their locations if it is durable.
pub(super) type Landed = (Vec<PutItem>, Option<Vec<Location>>);

impl Reporting {
    /// The reports a write about to be appended carries (none for custody's own record):
    /// their records go at the end of its group.
    pub(super) fn board(&mut self, custody: bool, payloads: &mut Vec<Bytes>) -> Vec<PutItem> {
        if custody || self.pending.is_empty() {
            return Vec::new();
        }
        self.pending_bytes = 0;
        let items = std::mem::take(&mut self.pending);
        payloads.extend(items.iter().map(|item| item.payload.clone()));
        items
    }

    /// `items` ride write number `write`.
    pub(super) fn ride(&mut self, write: u64, items: Vec<PutItem>) {
        if !items.is_empty() {
            self.riding.push_back((write, items));
        }
    }

    /// Write number `write` completed with `result`: its own result, and the reports it
    /// carried with their trailing locations.
    pub(super) fn landed(
        &mut self,
        write: u64,
        result: Result<Vec<Location>, StoreError>,
    ) -> (Result<Vec<Location>, StoreError>, Option<Landed>) {
        if self
            .riding
            .front()
            .is_none_or(|(number, _)| *number != write)
        {
            return (result, None);
        }
        let Some((_, items)) = self.riding.pop_front() else {
            return (result, None);
        };
        match result {
            Ok(mut locations) => {
                let own = locations.len().saturating_sub(items.len());
                let theirs = locations.split_off(own);
                (Ok(locations), Some((items, Some(theirs))))
            }
            Err(error) => (Err(error), Some((items, None))),
        }
    }

    /// Reports made since start.
    pub(super) fn made(&self) -> u64 {
        self.made
    }
}

/// The reports a stored message owes, from its `hopmq.reports` header: none in the
/// dead-letter queue, and none for a header that does not parse (a put with one is refused).
pub(crate) fn requested(header: Option<&str>, queue: &str) -> Reports {
    if queue == DEAD_LETTER_QUEUE {
        return Reports::NONE;
    }
    header.and_then(|h| h.parse().ok()).unwrap_or_default()
}

/// True if messages in `queue` have reached their destination: an application's queue or a
/// reply queue, not one of those the manager keeps for messages on their way.
pub(super) fn is_destination(queue: &QueueName) -> bool {
    !queue.as_str().starts_with(SYSTEM_QUEUE_PREFIX) || conversations::is_reply_queue(queue)
}

/// A put asking for reports must name them rightly and have somewhere to send them.
pub(super) fn check(message: &OutgoingMessage) -> Result<(), ApiError> {
    let Some(header) = message.headers.get(REPORTS_HEADER) else {
        return Ok(());
    };
    let reports: Reports =
        header
            .parse()
            .map_err(|e: hopmq::report::BadReports| ApiError::BadRequest {
                reason: e.to_string(),
            })?;
    if !reports.is_empty() && message.reply_to.is_none() {
        return Err(ApiError::BadRequest {
            reason: format!("a message asking for reports (`{REPORTS_HEADER}`) needs a reply_to"),
        });
    }
    Ok(())
}

/// Reports are for messages put to queues: a publication's copies go to many places, and
/// would report from each.
pub(super) fn check_publication(message: &OutgoingMessage) -> Result<(), ApiError> {
    if message.headers.contains_key(REPORTS_HEADER) {
        return Err(ApiError::BadRequest {
            reason: format!(
                "reports (`{REPORTS_HEADER}`) are for messages put to queues, not publications"
            ),
        });
    }
    Ok(())
}

/// The message a report is about.
pub(super) struct About<'a> {
    pub id: u128,
    pub reply_to: &'a str,
    /// Its queue here (for an arrival or delivery), or where it was going (an exception).
    pub queue: &'a str,
    pub priority: u8,
}

impl<'a> About<'a> {
    /// The message of a stored record, in `queue`.
    pub(super) fn stored(stored: &record::StoredMessage<'a>, queue: &'a str) -> Option<Self> {
        Some(Self {
            id: stored.id,
            reply_to: stored.reply_to?,
            queue,
            priority: stored.priority,
        })
    }
}

impl Core {
    /// Makes a report of `kind` (with why, for an exception) about a message; it rides the
    /// next write.
    pub(super) fn report(
        &mut self,
        kind: Report,
        about: &About<'_>,
        reason: Option<&str>,
        now: Now,
    ) {
        let mut headers = BTreeMap::new();
        headers.insert(REPORT_HEADER.to_owned(), kind.as_str().to_owned());
        headers.insert(REPORT_MANAGER_HEADER.to_owned(), self.name.to_string());
        headers.insert(REPORT_QUEUE_HEADER.to_owned(), about.queue.to_owned());
        if let Some(reason) = reason {
            headers.insert(REPORT_REASON_HEADER.to_owned(), reason.to_owned());
        }
        let mut message = OutgoingMessage {
            body: Vec::new(),
            headers,
            priority: about.priority,
            ttl_ms: None,
            correlation_id: Some(MessageId(about.id).to_string()),
            reply_to: None,
            persistent: true,
        };
        let (queue, home) = match self.report_target(about.reply_to) {
            Ok(target) => target,
            Err(why) => {
                let why = format!("its report could not be placed: {why}");
                warn!(reply_to = about.reply_to, %why, "report dead-lettered");
                let headers = &mut message.headers;
                headers.insert(DEAD_LETTER_REASON_HEADER.to_owned(), why);
                headers.insert(
                    DEAD_LETTER_QUEUE_HEADER.to_owned(),
                    about.reply_to.to_owned(),
                );
                (dead_letter_queue(), None)
            }
        };
        let stamp = home.as_ref().map(|home| {
            let chain = Chain {
                queue: about.reply_to.split('@').next().unwrap_or(about.reply_to),
                priority: about.priority,
                expires_ms: None,
            };
            self.stamp_for(home, chain)
        });
        let (seq, _, payload, entry) =
            self.stored_put(about.reply_to, &message, &queue, stamp.as_deref(), now);
        if let Some(home) = &home {
            self.custody.stamped_put(seq, home.as_str(), None);
        }
        self.ensure_slot(&queue).accept(false);
        let reporting = &mut self.reporting;
        reporting.made += 1;
        reporting.pending_bytes += payload.len() as u64;
        reporting.pending.push(PutItem {
            queue,
            entry,
            payload,
            persistent: true,
            handoff: None,
            channel_seq: None,
        });
        if reporting.pending_bytes > PENDING_BYTES_MAX {
            self.write_pending_reports();
        }
    }

    /// Reports of `kind` for the stored messages of `entries` (in `queue`) that asked for it.
    /// `reason` is an exception's.
    pub(super) fn report_entries<'e>(
        &mut self,
        kind: Report,
        queue: &QueueName,
        entries: impl IntoIterator<Item = &'e Entry>,
        reason: Option<&str>,
        now: Now,
    ) {
        for entry in entries {
            if !entry.reports.has(kind) {
                continue;
            }
            let payload = match self.payloads.get(entry, &*self.storage) {
                Ok(payload) => payload,
                Err(error) => {
                    error!(%queue, seq = entry.seq, %error, "cannot read a message back for its report");
                    continue;
                }
            };
            let Ok(stored) = delivery::stored(&payload) else {
                continue;
            };
            // An exception names where the message was going, not the queue it waited in.
            let queue = match kind {
                Report::Exception => stored.destination.split('@').next().unwrap_or_default(),
                _ => queue.as_str(),
            };
            if let Some(about) = About::stored(&stored, queue) {
                self.report(kind, &about, reason, now);
            }
        }
    }

    /// A message whose delivery was reported, about to be stored again because its getter left
    /// before it was handed over: it is not to be reported delivered a second time when it is
    /// taken for good, so neither its entry nor its record (read again after a restart) ask
    /// for that any more.
    pub(super) fn delivery_reported(&self, mut entry: Entry, payload: Bytes) -> (Entry, Bytes) {
        if !entry.reports.has(Report::Delivery) {
            return (entry, payload);
        }
        entry.reports = entry.reports.without(Report::Delivery);
        match delivery::encode_asking(&payload, entry.reports) {
            Ok(record) => (entry, Bytes::from(record)),
            Err(error) => {
                // Stored as it was: its delivery may then be reported twice, never lost.
                warn!(seq = entry.seq, %error, "cannot rewrite a message's reports header");
                (entry, payload)
            }
        }
    }

    /// Where a report to `reply_to` goes: a local queue with room, or the queue of messages
    /// waiting to leave with the manager they go to.
    fn report_target(
        &mut self,
        reply_to: &str,
    ) -> Result<(QueueName, Option<ManagerName>), String> {
        let (queue, home) = self.resolve(reply_to).map_err(|e| e.to_string())?;
        if home.is_none() {
            let slot = &self.queues[&queue];
            let held = slot.held(self.leases.leased(queue.as_str()));
            if held >= slot.max_depth() {
                return Err(format!(
                    "queue `{queue}` is full (max_depth {})",
                    slot.max_depth()
                ));
            }
        }
        Ok((queue, home))
    }

    /// Writes the reports no write took (their event wrote nothing), alone.
    pub(super) fn write_pending_reports(&mut self) {
        if !self.reporting.pending.is_empty() {
            let continuation = Continuation::Fanned {
                items: Vec::new(),
                old: None,
                admitted: Vec::new(),
            };
            self.commit(Vec::new(), continuation);
        }
    }

    /// The reports a completed write carried take their places (or, if it failed, are given
    /// up: their event is undone too, and reports again when it is done again).
    pub(super) fn place_reports(&mut self, (items, locations): Landed, now: Now) {
        match locations {
            Some(locations) => {
                let placed = self.place(
                    items,
                    &mut locations.into_iter(),
                    Vec::new(),
                    Vec::new(),
                    now,
                );
                self.finish_placing(placed, now);
            }
            None => self.place_failed(items, Vec::new(), Vec::new()),
        }
    }
}

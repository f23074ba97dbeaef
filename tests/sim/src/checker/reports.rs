//! The checker's share of delivery reports (`--reports`): which queue messages asked for which
//! reports and where to, what became of them as the clients saw it, and every report that
//! turned up (taken from a report queue, or dead-lettered itself), held against these
//! promises, per message that asked:
//!
//! - every report is well formed: an empty persistent body, the message's id as correlation
//!   id, its kind, manager and queue (the message's own queue) in headers, a reason for an
//!   exception, no `reply_to`, and never `hopmq.reports` itself (reports do not breed);
//! - no report of a kind it did not ask for, no report for a message that was never put (an
//!   unknown correlation id, see below), none for a message whose put failed;
//! - at most one report of each kind, and not both a delivery and an exception (a message is
//!   removed once: by a get, an ack or a dead-lettering);
//! - a delivery report only for a message a client took (it saw the get's answer or the ack's
//!   `Done`) or whose removal a crash kept unseen (*in doubt*); an exception report, or an
//!   arrival report, for a persistent message that never expires, only if a client saw it in
//!   a queue or a dead-letter queue, or it is in doubt (it cannot vanish unseen otherwise);
//! - once faults stop, for a persistent message: exactly one arrival report if a client was
//!   handed it from a queue, exactly one delivery report if a client took it, exactly one
//!   exception report if a client found it dead-lettered. These hold because a report rides
//!   the write of its event: what a client was answered was durable, and so is its report,
//!   which custody then carries to its `reply_to` exactly once.
//!
//! Why the edges are excused, and only they:
//! - a destructive get whose answer a crash ate: the crash kept the removal (and so its
//!   delivery report) but the client never saw it. The main checker marks such a message in
//!   doubt; a delivery report for it is then allowed but not required. The same holds for
//!   reports themselves: a report whose removal from a report queue (or a dead-letter queue)
//!   a crash kept unseen is in doubt, and its kind is no longer required for its message.
//! - non-persistent messages: an event that writes nothing has its reports written alone
//!   after it, so a crash may lose them while a client saw the event (the documented
//!   best-effort of non-persistent messages). They are held to everything but the required
//!   reports.
//! - a lost disk (hopmq keeps no replicas): a message lost with a disk (main checker), or
//!   whose report queue's manager lost its disk after its put, is excused from every count;
//!   one whose report names a manager that lost its disk after its put is excused from the
//!   at-most-once counts (that manager may have done the event again); a dead letter found
//!   on a manager that lost its disk after the put is not owed its exception report.
//! - a message's id is learnt from its put's answer, from any delivery of it, or from the
//!   disk of a manager that crashed with its put unanswered (its put record, if the crash
//!   kept it: if not, the message does not exist). Only a non-persistent message can exist
//!   with no record and no answer, so reports with unknown ids are allowed up to the number
//!   of non-persistent messages asking for reports whose ids stayed unknown.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use hopmq::protocol::Delivery;
use hopmq::report::{
    REPORT_HEADER, REPORT_MANAGER_HEADER, REPORT_QUEUE_HEADER, REPORT_REASON_HEADER, REPORTS_HEADER,
};
use hopmq::{Report, Reports};
use qmgr::record::{self, Record};

use super::{Checker, Message, PutState};

/// The queue on each manager that reports are sent to (`reports@mN`).
pub const REPORT_QUEUE: &str = "reports";

fn slot(kind: Report) -> usize {
    match kind {
        Report::Arrival => 0,
        Report::Delivery => 1,
        Report::Exception => 2,
    }
}

/// A message that asked for reports.
#[derive(Debug)]
struct Asked {
    kinds: Reports,
    /// The manager of its `reply_to`.
    reply_to: String,
    /// Messages that asked before it (to tell which disk losses came after its put).
    ordinal: usize,
    /// Its id (32 hex digits), once known.
    id: Option<String>,
    /// The manager whose dead-letter queue a client found it in.
    dead_letter_at: Option<String>,
}

/// Reports that turned up with one correlation id.
#[derive(Debug, Default)]
struct Seen {
    count: [u32; 3],
    /// A report of that kind was removed by a get a crash left unanswered.
    doubt: [bool; 3],
    /// Managers and queues the reports named.
    managers: BTreeSet<String>,
    queues: BTreeSet<String>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Reporting {
    /// By message key.
    asked: BTreeMap<String, Asked>,
    /// Message keys by id.
    ids: BTreeMap<String, String>,
    /// By correlation id.
    seen: BTreeMap<String, Seen>,
    /// Disk losses: the manager, and how many messages had asked by then.
    disk_losses: Vec<(String, usize)>,
    /// Reports that turned up.
    pub(super) received: u64,
}

impl Reporting {
    /// Whether `manager` lost its disk after message `asked` was put.
    fn lost_after(&self, manager: &str, asked: &Asked) -> bool {
        self.disk_losses
            .iter()
            .any(|(lost, count)| lost == manager && *count > asked.ordinal)
    }
}

/// What the checks conclude about one message.
#[derive(Debug, Default)]
struct Verdict {
    wrong: Vec<String>,
    /// Reports it must still get.
    owed: Vec<Report>,
    /// Events its reports show that a client has not seen yet (and must, once drained).
    unseen: Vec<Report>,
}

impl Checker {
    /// Message `key` (just put) asks for `kinds` to `reply_to@manager`.
    pub fn reports_asked(&mut self, key: &str, kinds: Reports, manager: &str) {
        let ordinal = self.reports.asked.len();
        self.reports.asked.insert(
            key.to_owned(),
            Asked {
                kinds,
                reply_to: manager.to_owned(),
                ordinal,
                id: None,
                dead_letter_at: None,
            },
        );
    }

    /// Message `key` has id `id` (from its put's answer, a delivery or a disk).
    pub fn message_id(&mut self, key: &str, id: &str) {
        let Some(asked) = self.reports.asked.get_mut(key) else {
            return;
        };
        match &asked.id {
            Some(known) if known != id => {
                let violation = format!("message {key} has two ids: {known} and {id}");
                self.violations.push(violation);
            }
            Some(_) => {}
            None => {
                asked.id = Some(id.to_owned());
                self.reports.ids.insert(id.to_owned(), key.to_owned());
            }
        }
    }

    /// A client found message `key` in the dead-letter queue of `manager`.
    pub fn report_dead_letter_at(&mut self, key: &str, manager: &str) {
        if let Some(asked) = self.reports.asked.get_mut(key) {
            asked.dead_letter_at = Some(manager.to_owned());
        }
    }

    /// A report turned up: taken from a report queue, or dead-lettered itself.
    pub fn report_received(&mut self, report: &Delivery) {
        self.reports.received += 1;
        let header = |name: &str| report.headers.get(name).map(String::as_str);
        let mut wrong = Vec::new();
        if header(REPORTS_HEADER).is_some() {
            wrong.push(format!("asks for reports itself ({REPORTS_HEADER})"));
        }
        if !report.body.is_empty() || report.reply_to.is_some() || !report.persistent {
            wrong.push("a body, a reply_to or no persistence".to_owned());
        }
        let kind = header(REPORT_HEADER).and_then(|kind| kind.parse::<Report>().ok());
        if kind.is_none() {
            wrong.push(format!("kind {:?}", header(REPORT_HEADER)));
        }
        let reason = header(REPORT_REASON_HEADER).filter(|r| !r.is_empty());
        if kind == Some(Report::Exception) && reason.is_none() {
            wrong.push("an exception without a reason".to_owned());
        }
        let (manager, queue) = (header(REPORT_MANAGER_HEADER), header(REPORT_QUEUE_HEADER));
        if manager.is_none() || queue.is_none() {
            wrong.push("no manager or queue".to_owned());
        }
        let correlation = report.correlation_id.as_deref();
        if correlation.is_none_or(|id| id.len() != 32) {
            wrong.push(format!("correlation id {correlation:?}"));
        }
        if !wrong.is_empty() {
            self.violations.push(format!(
                "a report {:?} has {}",
                report.headers,
                wrong.join(", ")
            ));
        }
        let (Some(kind), Some(correlation)) = (kind, correlation) else {
            return;
        };
        let seen = self.reports.seen.entry(correlation.to_owned()).or_default();
        seen.count[slot(kind)] += 1;
        seen.managers.extend(manager.map(str::to_owned));
        seen.queues.extend(queue.map(str::to_owned));
    }

    /// `manager`'s disk was destroyed (see the module documentation).
    pub(super) fn reports_disk_lost(&mut self, manager: &str) {
        let count = self.reports.asked.len();
        self.reports.disk_losses.push((manager.to_owned(), count));
    }

    /// A crash: the ids of messages whose put it left unanswered, from their put records on
    /// `records` (the disk now, which holds `survived`), and the reports whose removal from a
    /// report or dead-letter queue it kept (`removed`) while their getter never saw them.
    pub(super) fn reports_crash(
        &mut self,
        records: &[Bytes],
        survived: &[Bytes],
        removed: &BTreeSet<u64>,
    ) {
        if self.reports.asked.is_empty() {
            return;
        }
        let unknown = self.reports.asked.values().any(|a| a.id.is_none());
        let mut ids = Vec::new();
        for payload in records.iter().chain(survived) {
            let Ok(Record::Enqueue(message)) = record::decode(payload) else {
                continue;
            };
            let header = |name: &str| {
                message
                    .headers
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| *value)
            };
            if let (Some(kind), Some(correlation)) = (header(REPORT_HEADER), message.correlation_id)
            {
                let taken = message.queue == REPORT_QUEUE
                    || message.queue == qmgr::manager::DEAD_LETTER_QUEUE;
                if taken && removed.contains(&message.seq) {
                    if let Ok(kind) = kind.parse::<Report>() {
                        let seen = self.reports.seen.entry(correlation.to_owned()).or_default();
                        seen.doubt[slot(kind)] = true;
                    }
                }
                continue;
            }
            if unknown {
                if let Ok(key) = std::str::from_utf8(message.body) {
                    ids.push((key.to_owned(), hopmq::MessageId(message.id).to_string()));
                }
            }
        }
        for (key, id) in ids {
            if self.reports.asked.get(&key).is_some_and(|a| a.id.is_none()) {
                self.message_id(&key, &id);
            }
        }
    }

    /// What the reports of message `key` owe and break (see the module documentation).
    fn report_verdict(&self, key: &str, asked: &Asked) -> Verdict {
        let mut verdict = Verdict::default();
        let (Some(message), Some(id)) = (self.messages.get(key), asked.id.as_deref()) else {
            return verdict;
        };
        let empty = Seen::default();
        let seen = self.reports.seen.get(id).unwrap_or(&empty);
        let count = |kind: Report| seen.count[slot(kind)];
        let total: u32 = seen.count.iter().sum();
        for kind in Report::ALL {
            if count(kind) > 0 && !asked.kinds.has(kind) {
                verdict
                    .wrong
                    .push(format!("a {kind} report it did not ask for"));
            }
        }
        if total > 0 && message.put == PutState::Failed {
            verdict.wrong.push("reports, yet its put failed".to_owned());
        }
        let queue = &message.stream.1;
        if seen.queues.iter().any(|q| q != queue) {
            verdict
                .wrong
                .push(format!("reports naming queues {:?}", seen.queues));
        }
        let reporting = &self.reports;
        if message.lost_with_disk || reporting.lost_after(&asked.reply_to, asked) {
            return verdict;
        }
        let maker_lost = seen.managers.iter().any(|m| reporting.lost_after(m, asked));
        if !maker_lost {
            once(&mut verdict, message, count);
        }
        if !message.persistent {
            return verdict;
        }
        let durable = !message.expires;
        let doubt = |kind: Report| seen.doubt[slot(kind)];
        let dead_letter_kept = asked
            .dead_letter_at
            .as_deref()
            .is_some_and(|m| !reporting.lost_after(m, asked));
        let needs = [
            (Report::Arrival, message.first_seen),
            (Report::Delivery, message.deliveries > 0),
            (Report::Exception, message.dead_lettered && dead_letter_kept),
        ];
        for (kind, happened) in needs {
            if happened && asked.kinds.has(kind) && !doubt(kind) && count(kind) == 0 {
                verdict.owed.push(kind);
            }
        }
        // What its reports show happened must show itself to a client (unless in doubt).
        let resolved = message.first_seen || message.dead_lettered || message.in_doubt;
        if durable && !maker_lost && !resolved {
            for kind in [Report::Arrival, Report::Exception] {
                if count(kind) > 0 {
                    verdict.unseen.push(kind);
                }
            }
        }
        verdict
    }

    /// Reports (or the events they show) still to come.
    pub(super) fn reports_owed(&self) -> usize {
        let reporting = &self.reports;
        let owed = reporting.asked.iter().filter(|(key, asked)| {
            let verdict = self.report_verdict(key, asked);
            !verdict.owed.is_empty() || !verdict.unseen.is_empty()
        });
        owed.count()
    }

    /// The messages whose reports are still to come (for a traced run's last words).
    pub(super) fn reports_missing(&self) -> Vec<String> {
        let reporting = &self.reports;
        reporting
            .asked
            .iter()
            .filter_map(|(key, asked)| {
                let verdict = self.report_verdict(key, asked);
                (!verdict.owed.is_empty() || !verdict.unseen.is_empty())
                    .then(|| format!("reports of {key}"))
            })
            .collect()
    }

    /// The run's end: every message's reports, and reports about no message.
    pub(super) fn report_checks(&mut self) {
        let mut found = Vec::new();
        for (key, asked) in &self.reports.asked {
            let verdict = self.report_verdict(key, asked);
            let mut wrong = verdict.wrong;
            if !verdict.owed.is_empty() {
                wrong.push(format!(
                    "no {:?} report(s) once faults stopped",
                    verdict.owed
                ));
            }
            if !verdict.unseen.is_empty() {
                wrong.push(format!(
                    "{:?} report(s) while no client ever saw it in a queue or dead-lettered",
                    verdict.unseen
                ));
            }
            if !wrong.is_empty() {
                let seen = asked.id.as_ref().and_then(|id| self.reports.seen.get(id));
                found.push(format!(
                    "reports of {key} (asked {}, to {}, seen {seen:?}): {}",
                    asked.kinds,
                    asked.reply_to,
                    wrong.join("; ")
                ));
            }
        }
        self.violations.extend(found);
        let unknown: Vec<&String> = (self.reports.seen.keys())
            .filter(|id| !self.reports.ids.contains_key(*id))
            .collect();
        let unidentified = self.reports.asked.iter().filter(|(key, asked)| {
            let message = self.messages.get(*key);
            asked.id.is_none()
                && message.is_some_and(|m| !m.persistent && m.put != PutState::Failed)
        });
        let allowed = unidentified.count();
        if unknown.len() > allowed {
            let shown: Vec<&&String> = unknown.iter().take(5).collect();
            self.violations.push(format!(
                "{} report(s) with correlation ids of no message that asked (at most {allowed} \
                 could be of messages whose ids are unknown), e.g. {shown:?}",
                unknown.len()
            ));
        }
    }
}

/// At most one report of each kind, and not both a delivery and an exception; a delivery
/// report only for a message a client took (or in doubt).
fn once(verdict: &mut Verdict, message: &Message, count: impl Fn(Report) -> u32) {
    for kind in Report::ALL {
        if count(kind) > 1 {
            verdict
                .wrong
                .push(format!("{} {kind} reports", count(kind)));
        }
    }
    let (delivery, exception) = (count(Report::Delivery), count(Report::Exception));
    if delivery > 0 && exception > 0 {
        verdict
            .wrong
            .push("both delivery and exception reports".to_owned());
    }
    if delivery > 0 && message.deliveries == 0 && !message.in_doubt {
        verdict
            .wrong
            .push("a delivery report, yet no client took it".to_owned());
    }
}

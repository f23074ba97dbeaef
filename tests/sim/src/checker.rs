//! The checker: what the simulated clients saw, held against the delivery guarantees.
//!
//! - no acknowledged persistent put is lost: once faults stop, each is delivered (a
//!   destructive get's answer, or an ack's `Done`) or dead-lettered within a bounded time;
//! - nothing is delivered twice (deliveries and dead letters of one message count together);
//! - per origin, queue and priority, messages are first handed out in put order whatever
//!   the routes, relays and links did meanwhile, unless the origin restarted between the two
//!   puts (a new incarnation starts new streams), the queue's home moved after the earlier
//!   one's put or managers still disagreed on it then (the old home passes messages on as
//!   their new custodian, and keeps those it had stored), or a
//!   message between them went on without its earlier one at the custody timeout (it says
//!   so in its `hopmq.unordered` header);
//! - every dead-lettered message says why.
//!
//! A message is *lost with a disk* when a manager's disk was destroyed while the message was
//! its own (put there) or its queue's home was there: hopmq keeps no replicas, so it may be
//! lost, and a destination that forgot what it stored may deliver it again. It is excused
//! from the loss, duplicate and order checks; everything else must survive the disk's loss
//! (a relay lost with its disk strands nothing: custody).
//!
//! A message is *in doubt*, and excused from the loss check, when a crash kept the unsynced
//! removal of it from an application queue: the get or ack that wrote it never got its
//! answer, so the client cannot know (the documented at-most-once edge of a destructive get
//! whose client loses its manager before the answer). A non-persistent message needs no
//! removal record: it is in doubt when an ack of it, or a get from its queue, was left
//! unanswered by a crash.
//!
//! Publications (module `publications`) are held against exactly-once per durable subscription.
//! When a publish is handed to its manager's core, the core says which managers it sends the
//! publication to; it must reach every subscription on those managers that was answered
//! `Done` by then and whose filter matches its topic. It must never reach a subscription
//! whose filter does not match, nor one on a manager it was not sent to, nor any subscription
//! twice (a leased copy handed out again after a nack or an expiry is not a second delivery).
//! Once faults stop, each acknowledged persistent publication must have been delivered from,
//! or dead-lettered out of, each of its subscriptions (non-persistent ones are checked for
//! duplicates only). Per publisher and subscription, persistent publications are first handed
//! out in publish order whatever routes their copies took and whatever crashed, unless the
//! publisher restarted between the two publishes, or a publication between them went on
//! without an earlier one at its destination's custody timeout (its `hopmq.unordered` header
//! says so). A manager's lost disk takes its
//! subscriptions with it (what reaches them again is no duplicate), excuses the publications
//! it published before from the loss and duplicate checks (custody of them was on that disk),
//! and every publication published before it from the order check; publications it only
//! relayed must still arrive once, since their publishers keep custody of them until each
//! destination confirms (see `Checker::publications_disk_lost`). An unstamped share of a
//! publication left on the channel of a link a topology edit removed waits for that link's
//! return, which the run does not see: its managers' subscriptions are excused from it (a
//! stamped one is sent around). A crash keeping the unsynced removal of
//! a copy puts that copy *in doubt*, as for queue messages.
//!
//! Requests and their replies (module `conversations`) are held against at most one reply per
//! request, each delivered only to its requester, and their arrival once faults stop.
//!
//! Delivery reports (module `reports`) are held against exactly one arrival, delivery and
//! exception report per message that asked, for what its clients saw happen, and none for
//! what did not.

mod conversations;
mod publications;
mod reports;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use qmgr::record::{self, Record};

pub use conversations::{REPLY_MARK, REQUEST_MARK, is_conversation};
pub use publications::is_publication;
pub use reports::REPORT_QUEUE;

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PutState {
    Pending,
    Acked,
    Failed,
    /// Its manager crashed before the answer: stored or not.
    Unknown,
}

#[derive(Debug)]
struct Message {
    stream: Stream,
    index: usize,
    persistent: bool,
    expires: bool,
    put: PutState,
    /// Its origin's incarnation, the simulated time, and whether every manager saw the
    /// queue's home in one place, when it was put.
    put_at: (u64, u64, bool),
    first_seen: bool,
    /// It was handed out (or read from a dead-letter queue) with the `hopmq.unordered` header.
    unordered: bool,
    /// Deliveries plus dead letters.
    resolved: u32,
    /// Deliveries: a destructive get's answer, or an ack's `Done`.
    deliveries: u32,
    dead_lettered: bool,
    in_doubt: bool,
    /// Lost with a manager's disk (see the module documentation).
    lost_with_disk: bool,
}

type Stream = (String, String, u8);

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Checker {
    messages: BTreeMap<String, Message>,
    streams: BTreeMap<Stream, (usize, Vec<String>)>,
    /// Per manager, the queues it ever homed.
    homed: BTreeMap<String, BTreeSet<String>>,
    /// Restarts per origin.
    restarts: BTreeMap<String, u64>,
    /// When topology edits moved a queue's home (simulated ms).
    home_moves: Vec<u64>,
    violations: Vec<String>,
    /// (later, earlier): `later` was handed out while `earlier`, put before it, was not. A
    /// violation unless `earlier` turns out to have been dead-lettered (a full queue at its
    /// home), or a message between them went on unordered, which is known only later.
    overtaken: Vec<(String, String)>,
    /// Subscriptions and publications (module `publications`).
    publications: publications::Publications,
    /// Requests and replies (module `conversations`).
    conversations: conversations::Conversations,
    /// Delivery reports (module `reports`).
    reports: reports::Reporting,
    /// Counters for the run's summary line.
    pub delivered: u64,
    /// Dead letters seen.
    pub dead_lettered: u64,
}

impl Checker {
    /// A put request was sent, at `now_ms`, while every manager agreed on its queue's home
    /// or not.
    pub fn put(
        &mut self,
        key: &str,
        (origin, queue, priority): (&str, &str, u8),
        (persistent, expires): (bool, bool),
        (now_ms, homes_agree): (u64, bool),
    ) {
        let stream = (origin.to_owned(), queue.to_owned(), priority);
        let (_, keys) = self.streams.entry(stream.clone()).or_default();
        keys.push(key.to_owned());
        let index = keys.len() - 1;
        let put_at = (
            self.restarts.get(origin).copied().unwrap_or(0),
            now_ms,
            homes_agree,
        );
        self.messages.insert(
            key.to_owned(),
            Message {
                stream,
                index,
                persistent,
                expires,
                put: PutState::Pending,
                put_at,
                first_seen: false,
                unordered: false,
                resolved: 0,
                deliveries: 0,
                dead_lettered: false,
                in_doubt: false,
                lost_with_disk: false,
            },
        );
    }

    /// The put of `keys` was answered.
    pub fn put_answered(&mut self, keys: &[String], ok: bool) {
        for key in keys {
            if let Some(message) = self.messages.get_mut(key) {
                message.put = if ok {
                    PutState::Acked
                } else {
                    PutState::Failed
                };
            }
        }
    }

    /// The put of `keys` will never be answered (its manager crashed).
    pub fn put_unanswered(&mut self, keys: &[String]) {
        for key in keys {
            if let Some(message) = self.messages.get_mut(key) {
                message.put = PutState::Unknown;
            }
        }
    }

    /// The acks of `keys` were never answered (their manager crashed): a non-persistent one
    /// needs no write, so it may have been taken (and reported delivered) with its answer
    /// lost. A persistent one is in doubt only if the crash kept its removal (see
    /// [`Checker::crash`]).
    pub fn taken_unanswered(&mut self, keys: &[String]) {
        for key in keys {
            if let Some(message) = self.messages.get_mut(key) {
                if !message.persistent {
                    message.in_doubt = true;
                }
            }
        }
    }

    /// A destructive get from `queue` was never answered (its manager crashed): any
    /// non-persistent message of that queue still unseen may have been taken by it.
    pub fn get_unanswered(&mut self, queue: &str) {
        for message in self.messages.values_mut() {
            if !message.persistent && message.stream.1 == queue && message.deliveries == 0 {
                message.in_doubt = true;
            }
        }
    }

    /// Manager `origin` restarted (its streams start again).
    pub fn restarted(&mut self, origin: &str) {
        *self.restarts.entry(origin.to_owned()).or_default() += 1;
    }

    /// A topology edit moved a queue's home at `now_ms`.
    pub fn home_moved(&mut self, now_ms: u64) {
        self.home_moves.push(now_ms);
    }

    /// `key` was handed out (leased or not) from an application queue; `unordered` if it
    /// went on without an earlier message.
    pub fn handed_out(&mut self, key: &str, unordered: bool, now_ms: u64) {
        let Some(message) = self.messages.get_mut(key) else {
            self.violations
                .push(format!("a message nobody put was handed out: {key:?}"));
            return;
        };
        if message.first_seen {
            return;
        }
        message.first_seen = true;
        message.unordered = unordered;
        let (stream, index) = (message.stream.clone(), message.index);
        let life = message.put_at.0;
        // A home moved while the earlier one was on its way.
        let moved = |put_ms: u64| {
            self.home_moves
                .iter()
                .any(|&at| (put_ms..=now_ms).contains(&at))
        };
        let Some((cursor, keys)) = self.streams.get_mut(&stream) else {
            return;
        };
        for earlier in &keys[*cursor..index] {
            let Some(a) = self.messages.get(earlier) else {
                continue;
            };
            let checkable = !a.first_seen
                && a.put == PutState::Acked
                && a.persistent
                && !a.expires
                && !a.in_doubt
                && !a.lost_with_disk
                && !a.dead_lettered
                && a.put_at.0 == life
                && a.put_at.2
                && !moved(a.put_at.1);
            if checkable {
                self.overtaken.push((key.to_owned(), earlier.clone()));
            }
        }
        while *cursor < keys.len()
            && self
                .messages
                .get(&keys[*cursor])
                .is_some_and(|m| m.first_seen || m.put == PutState::Failed)
        {
            *cursor += 1;
        }
    }

    /// `key` was delivered for good (a destructive get's answer, or an ack's `Done`).
    pub fn delivered(&mut self, key: &str) {
        self.delivered += 1;
        if let Some(message) = self.messages.get_mut(key) {
            message.deliveries += 1;
        }
        self.resolve(key, "delivered");
    }

    /// `key` was got from a dead-letter queue, with `reason`; `unordered` if it came with the
    /// `hopmq.unordered` header (it went on without an earlier message, then was dead-lettered
    /// at its destination: the messages after it may still pass that earlier one).
    pub fn dead_letter(&mut self, key: &str, reason: Option<&str>, unordered: bool) {
        self.dead_lettered += 1;
        if reason.is_none_or(str::is_empty) {
            self.violations
                .push(format!("dead letter without a reason: {key}"));
        }
        if let Some(message) = self.messages.get_mut(key) {
            message.dead_lettered = true;
            message.unordered |= unordered;
        }
        self.resolve(key, "dead-lettered");
    }

    fn resolve(&mut self, key: &str, how: &str) {
        let Some(message) = self.messages.get_mut(key) else {
            self.violations
                .push(format!("{how} a message nobody put: {key:?}"));
            return;
        };
        message.resolved += 1;
        if message.resolved == 2 && !message.lost_with_disk {
            self.violations
                .push(format!("twice: {key} was {how} a second time"));
        }
    }

    /// An edit homes `queue` on `manager`.
    pub fn homed(&mut self, queue: &str, manager: &str) {
        self.homed
            .entry(manager.to_owned())
            .or_default()
            .insert(queue.to_owned());
    }

    /// `manager`'s disk was destroyed: what it originated, and what was put so far to the
    /// queues it ever homed (it may have been their destination, or passed them on), may be
    /// lost, or delivered again.
    pub fn disk_lost(&mut self, manager: &str) {
        self.publications_disk_lost(manager);
        self.conversations_disk_lost(manager);
        self.reports_disk_lost(manager);
        let queues = self.homed.get(manager).cloned().unwrap_or_default();
        for message in self.messages.values_mut() {
            if message.stream.0 == manager || queues.contains(&message.stream.1) {
                message.lost_with_disk = true;
            }
        }
    }

    /// A crash kept `survived`, the unsynced records of that manager that made it to disk;
    /// `records` is everything on its disk now.
    pub fn crash(&mut self, records: &[Bytes], survived: &[Bytes]) {
        let removed: BTreeSet<u64> = survived
            .iter()
            .filter_map(|payload| match record::decode(payload) {
                Ok(Record::Remove(seqs)) => Some(seqs),
                _ => None,
            })
            .flatten()
            .collect();
        self.reports_crash(records, survived, &removed);
        if removed.is_empty() {
            return;
        }
        for payload in records.iter().chain(survived) {
            if let Ok(Record::Enqueue(message)) = record::decode(payload) {
                let application = !message
                    .queue
                    .starts_with(qmgr::manager::SYSTEM_QUEUE_PREFIX);
                if !removed.contains(&message.seq) {
                    continue;
                }
                if let Ok(key) = std::str::from_utf8(message.body) {
                    if is_conversation(key) {
                        self.conversation_removal_kept(key, message.queue);
                        continue;
                    }
                    if is_publication(key) {
                        self.publication_removal_kept(key, message.queue, message.destination);
                        continue;
                    }
                }
                if application {
                    if let Some(tracked) = std::str::from_utf8(message.body)
                        .ok()
                        .and_then(|key| self.messages.get_mut(key))
                    {
                        tracked.in_doubt = true;
                    }
                }
            }
        }
    }

    /// The messages that must still arrive (for a traced run's last words).
    pub fn missing(&self) -> Vec<String> {
        self.messages
            .iter()
            .filter(|(_, m)| must_arrive(m))
            .map(|(key, _)| key.clone())
            .chain(self.publications_missing())
            .chain(self.conversations_missing())
            .chain(self.reports_missing())
            .collect()
    }

    /// Messages (and publications' copies) that must still be delivered or dead-lettered.
    pub fn outstanding(&self) -> usize {
        self.messages.values().filter(|m| must_arrive(m)).count()
            + self.publications_outstanding()
            + self.conversations_owed()
            + self.reports_owed()
    }

    /// Everything found wrong, the never-delivered messages included.
    pub fn finish(mut self) -> Vec<String> {
        for (later, earlier) in std::mem::take(&mut self.overtaken) {
            if !self.excused(&later, &earlier) {
                let stream = &self.messages[&earlier].stream;
                self.violations.push(format!(
                    "order: {later} was handed out before {earlier}, put earlier to {} from {}",
                    stream.1, stream.0
                ));
            }
        }
        self.publication_order();
        if !self.violations.is_empty() {
            // The run stopped at the first violation: what had not arrived yet is not lost.
            return self.violations;
        }
        let lost: Vec<&String> = self
            .messages
            .iter()
            .filter(|(_, m)| must_arrive(m))
            .map(|(key, _)| key)
            .collect();
        if !lost.is_empty() {
            let shown: Vec<&str> = lost.iter().take(5).map(|k| k.as_str()).collect();
            self.violations.push(format!(
                "lost: {} acknowledged persistent message(s) never delivered nor dead-lettered once faults stopped, e.g. {shown:?}",
                lost.len()
            ));
        }
        self.publication_losses();
        self.conversation_losses();
        self.report_checks();
        self.violations
    }

    /// Reports that turned up.
    pub fn reports_received(&self) -> u64 {
        self.reports.received
    }

    /// Requests sent, and replies delivered to their requesters.
    pub fn conversations_counted(&self) -> (u64, u64) {
        (self.conversations.sent, self.conversations.replied)
    }

    /// Whether `later` may have overtaken `earlier`: `earlier` was dead-lettered or is in
    /// doubt, or a message after `earlier` up to `later` went on without its earlier one.
    fn excused(&self, later: &str, earlier: &str) -> bool {
        let (Some(a), Some(b)) = (self.messages.get(earlier), self.messages.get(later)) else {
            return true;
        };
        if a.dead_lettered || a.in_doubt || a.lost_with_disk || b.lost_with_disk {
            return true;
        }
        let Some((_, keys)) = self.streams.get(&a.stream) else {
            return true;
        };
        keys[a.index + 1..=b.index]
            .iter()
            .any(|key| self.messages.get(key).is_some_and(|m| m.unordered))
    }

    /// Something else found wrong.
    pub fn violation(&mut self, violation: String) {
        self.violations.push(violation);
    }

    /// Violations found so far.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }
}

fn must_arrive(message: &Message) -> bool {
    message.put == PutState::Acked
        && message.persistent
        && !message.expires
        && !message.in_doubt
        && !message.lost_with_disk
        && message.resolved == 0
}

//! The checker's share of request/reply: every request the simulated requesters sent, what
//! the servers were handed and answered, and every reply that turned up (as a request's
//! answer, or in a dead-letter queue), held against these promises:
//!
//! - each request has at most one reply in all: replies delivered to its requester and
//!   replies found dead-lettered count together, whatever became of the request's put (a
//!   request whose requester lost its answer to a crash or a disconnect may still be served,
//!   and its reply must still be one);
//! - a request's answer is its own reply: the body derived from the request's, its
//!   correlation id, on the connection that sent it (the answer to that connection's
//!   request), and never more than one message;
//! - at most one server's `Reply` is accepted (`Reply::Put`) per request, and once one is
//!   sent and accepted the request is gone: never handed to a server again, nor
//!   dead-lettered;
//! - servers are handed each request with the requester's reply queue as its `reply_to` and
//!   its correlation id (the one the requester gave, or the same one each time);
//! - once faults stop, every request sent then (to servers that answer everything, by a
//!   requester that stays) is answered with its reply, and every persistent reply a server
//!   had accepted turns up, delivered or dead-lettered (a late one is in a dead-letter queue).
//!
//! Excused: a request put before its requester's manager or the service queue's home lost
//! its disk (hopmq keeps no replicas: a destination that forgot may take a request again,
//! and a reply may be lost), from every check but the shape of its answer; and from the
//! reply loss check, a reply whose removal from a reply queue or a dead-letter queue a crash
//! kept while its getter never had the answer (*in doubt*, as for queue messages).

use std::collections::BTreeMap;

use hopmq::protocol::Delivery;

use super::Checker;

/// Request bodies start with this; their replies' with [`REPLY_MARK`] then the request's.
pub const REQUEST_MARK: &str = "rq-";
/// See [`REQUEST_MARK`].
pub const REPLY_MARK: &str = "re:";

/// Whether `key` is a request's or a reply's body.
pub fn is_conversation(key: &str) -> bool {
    key.starts_with(REQUEST_MARK) || key.starts_with(REPLY_MARK)
}

/// What became of a request, as its requester knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Waiting,
    /// Answered with its reply.
    Replied,
    /// Answered with nothing: no reply within its timeout.
    TimedOut,
    /// Refused: it was not put.
    Refused,
    /// Its connection or manager went before the answer: put or not.
    Abandoned,
}

#[derive(Debug)]
struct Asked {
    /// The requester's manager and its connection (the simulator's id).
    requester: (String, u64),
    /// The service queue's home.
    home: String,
    /// The correlation id: the requester's, or the first one a server saw.
    correlation: Option<String>,
    /// Sent once faults stopped: it must be answered with its reply.
    must_answer: bool,
    outcome: Outcome,
    /// Replies delivered to its requester plus replies dead-lettered.
    replies: u32,
    /// Servers' `Reply`s answered `Put`, and whether the last was persistent.
    accepted: u32,
    accepted_persistent: bool,
    /// The checker's clock when a `Reply` for it was last sent, and when a server was last
    /// handed it.
    reply_sent_at: Option<u64>,
    served_at: Option<u64>,
    /// Dead letters of the request itself.
    dead_lettered: u32,
    in_doubt: bool,
    lost_with_disk: bool,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Conversations {
    requests: BTreeMap<String, Asked>,
    /// Orders events as the simulator saw them: the simulator reads every answer before it
    /// sends anything in a step, so what is seen after a send happened after it in the core.
    clock: u64,
    /// Requests sent, and replies delivered to their requesters.
    pub(super) sent: u64,
    pub(super) replied: u64,
}

impl Checker {
    fn asked(&mut self, key: &str, what: &str) -> Option<&mut Asked> {
        if !self.conversations.requests.contains_key(key) {
            self.violations
                .push(format!("{what} a request nobody sent: {key:?}"));
        }
        self.conversations.requests.get_mut(key)
    }

    fn tick(&mut self) -> u64 {
        self.conversations.clock += 1;
        self.conversations.clock
    }

    /// Request `key` was sent by connection `requester` to the service queue homed on
    /// `home`, with `correlation` if the requester chose one.
    pub fn request_sent(
        &mut self,
        key: &str,
        requester: (&str, u64),
        home: &str,
        correlation: Option<String>,
        must_answer: bool,
    ) {
        self.conversations.sent += 1;
        self.conversations.requests.insert(
            key.to_owned(),
            Asked {
                requester: (requester.0.to_owned(), requester.1),
                home: home.to_owned(),
                correlation,
                must_answer,
                outcome: Outcome::Waiting,
                replies: 0,
                accepted: 0,
                accepted_persistent: false,
                reply_sent_at: None,
                served_at: None,
                dead_lettered: 0,
                in_doubt: false,
                lost_with_disk: false,
            },
        );
    }

    /// Request `key`, sent by connection `connection`, was answered with `messages`.
    pub fn request_answered(&mut self, key: &str, connection: u64, messages: &[Delivery]) {
        let Some(asked) = self.asked(key, "answered") else {
            return;
        };
        if asked.outcome != Outcome::Waiting {
            let outcome = asked.outcome;
            self.violations
                .push(format!("request {key} answered again (it was {outcome:?})"));
            return;
        }
        let expected_body = format!("{REPLY_MARK}{key}");
        let mut wrong = Vec::new();
        if asked.requester.1 != connection {
            wrong.push(format!(
                "on connection {connection}, not its requester's {}",
                asked.requester.1
            ));
        }
        match messages {
            [] => asked.outcome = Outcome::TimedOut,
            [reply] => {
                asked.outcome = Outcome::Replied;
                let body = String::from_utf8_lossy(&reply.body);
                if body != expected_body {
                    wrong.push(format!("the reply {body:?}, not {expected_body:?}"));
                }
                if asked.correlation.is_none() {
                    asked.correlation.clone_from(&reply.correlation_id);
                }
                if reply.correlation_id.is_none() || reply.correlation_id != asked.correlation {
                    wrong.push(format!(
                        "correlation id {:?}, not {:?}",
                        reply.correlation_id, asked.correlation
                    ));
                }
            }
            more => wrong.push(format!("{} messages, not one reply", more.len())),
        }
        if !wrong.is_empty() {
            self.violations.push(format!(
                "request {key} was answered with {}",
                wrong.join(", ")
            ));
        }
        if messages.len() == 1 {
            self.conversations.replied += 1;
            self.reply_turned_up(key, "delivered to its requester");
        }
    }

    /// Request `key` was refused: it was not put.
    pub fn request_refused(&mut self, key: &str) {
        let Some(asked) = self.asked(key, "refused") else {
            return;
        };
        asked.outcome = Outcome::Refused;
        if asked.replies > 0 && !asked.lost_with_disk {
            self.violations
                .push(format!("request {key} was refused, yet it had a reply"));
        }
    }

    /// Request `key`'s answer will never come (its connection or manager went).
    pub fn request_abandoned(&mut self, key: &str) {
        if let Some(asked) = self.asked(key, "abandoned") {
            if asked.outcome == Outcome::Waiting {
                asked.outcome = Outcome::Abandoned;
            }
        }
    }

    /// A server was handed request `key` (leased).
    pub fn request_served(&mut self, key: &str, delivery: &Delivery) {
        let now = self.tick();
        let Some(asked) = self.asked(key, "served") else {
            return;
        };
        asked.served_at = Some(now);
        let mut wrong = Vec::new();
        let queue = delivery.reply_to.as_deref().unwrap_or_default();
        let ours = queue.strip_prefix(hopmq::protocol::REPLY_QUEUE_PREFIX);
        if !ours.is_some_and(|rest| rest.ends_with(&format!("@{}", asked.requester.0))) {
            wrong.push(format!("reply_to {:?}", delivery.reply_to));
        }
        match (&asked.correlation, &delivery.correlation_id) {
            (_, None) => wrong.push("no correlation id".to_owned()),
            (None, Some(given)) => asked.correlation = Some(given.clone()),
            (Some(known), Some(given)) if known != given => {
                wrong.push(format!("correlation id {given:?}, not {known:?}"));
            }
            _ => {}
        }
        let (accepted, excused) = (asked.accepted, asked.lost_with_disk);
        if !wrong.is_empty() {
            self.violations.push(format!(
                "request {key} was handed to a server with {}",
                wrong.join(", ")
            ));
        }
        if accepted > 0 && !excused {
            self.violations.push(format!(
                "request {key} was handed to a server again after a reply to it was accepted"
            ));
        }
    }

    /// A server sent a `Reply` to request `key`.
    pub fn reply_sent(&mut self, key: &str) {
        let now = self.tick();
        if let Some(asked) = self.asked(key, "replied to") {
            asked.reply_sent_at = Some(now);
        }
    }

    /// A server's `Reply` to request `key` was accepted (`Reply::Put`) or refused.
    pub fn reply_answered(&mut self, key: &str, accepted: bool, persistent: bool) {
        let Some(asked) = self.asked(key, "replied to") else {
            return;
        };
        if !accepted {
            return;
        }
        asked.accepted += 1;
        asked.accepted_persistent = persistent;
        if asked.lost_with_disk {
            return;
        }
        let served_again = asked
            .served_at
            .zip(asked.reply_sent_at)
            .is_some_and(|(served, sent)| served > sent);
        let (count, dead) = (asked.accepted, asked.dead_lettered);
        if count > 1 {
            self.violations.push(format!(
                "request {key} was answered twice: {count} servers' replies were accepted"
            ));
        }
        if served_again {
            self.violations.push(format!(
                "request {key} was handed to another server while the reply that removed it \
                 was being written"
            ));
        }
        if dead > 0 {
            self.violations.push(format!(
                "request {key} was dead-lettered, yet a reply to it was accepted"
            ));
        }
    }

    /// A dead letter whose body is a request or a reply, with `reason`.
    pub fn conversation_dead_letter(&mut self, key: &str, reason: Option<&str>) {
        self.dead_lettered += 1;
        if reason.is_none_or(str::is_empty) {
            self.violations
                .push(format!("dead letter without a reason: {key}"));
        }
        if let Some(request) = key.strip_prefix(REPLY_MARK) {
            if self.asked(request, "a reply dead-lettered to").is_some() {
                self.reply_turned_up(request, "dead-lettered");
            }
            return;
        }
        let Some(asked) = self.asked(key, "dead-lettered") else {
            return;
        };
        asked.dead_lettered += 1;
        let (count, accepted) = (asked.dead_lettered, asked.accepted);
        if !asked.lost_with_disk && (count > 1 || accepted > 0) {
            self.violations.push(format!(
                "request {key} was dead-lettered {count} time(s) and answered by {accepted} \
                 accepted reply(ies): at most one of these"
            ));
        }
    }

    /// A reply to request `key` turned up (`how`): the second is a violation.
    fn reply_turned_up(&mut self, key: &str, how: &str) {
        let Some(asked) = self.conversations.requests.get_mut(key) else {
            return;
        };
        asked.replies += 1;
        let (replies, outcome) = (asked.replies, asked.outcome);
        if asked.lost_with_disk {
            return;
        }
        if replies > 1 {
            self.violations.push(format!(
                "request {key} has {replies} replies: the last was {how}"
            ));
        }
        if outcome == Outcome::Refused {
            self.violations.push(format!(
                "request {key} was refused, yet its reply was {how}"
            ));
        }
    }

    /// A crash kept the removal of `key` (a request's or a reply's) from `queue`, while its
    /// getter may never have had the answer.
    pub(super) fn conversation_removal_kept(&mut self, key: &str, queue: &str) {
        let taken = queue == qmgr::manager::DEAD_LETTER_QUEUE
            || queue.starts_with(hopmq::protocol::REPLY_QUEUE_PREFIX);
        if let Some(request) = key.strip_prefix(REPLY_MARK) {
            if let Some(asked) = self.conversations.requests.get_mut(request) {
                asked.in_doubt |= taken;
            }
        }
    }

    /// `manager`'s disk was destroyed: the requests sent so far from it or to its service
    /// queue are excused (see the module documentation).
    pub(super) fn conversations_disk_lost(&mut self, manager: &str) {
        for asked in self.conversations.requests.values_mut() {
            if asked.requester.0 == manager || asked.home == manager {
                asked.lost_with_disk = true;
            }
        }
    }

    /// Requests whose reply must still come: those sent once faults stopped and still
    /// waiting, and those with an accepted persistent reply that has not turned up.
    pub(super) fn conversations_missing(&self) -> Vec<String> {
        self.conversations
            .requests
            .iter()
            .filter(|(_, asked)| must_come(asked))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// How many requests [`Checker::conversations_missing`] would name.
    pub(super) fn conversations_owed(&self) -> usize {
        let owed = self
            .conversations
            .requests
            .values()
            .filter(|a| must_come(a));
        owed.count()
    }

    /// The run's end: what never came once faults stopped.
    pub(super) fn conversation_losses(&mut self) {
        let mut unanswered = Vec::new();
        let mut lost = Vec::new();
        for (key, asked) in &self.conversations.requests {
            if asked.must_answer && asked.outcome != Outcome::Replied {
                unanswered.push(format!("{key} ({:?})", asked.outcome));
            } else if must_come(asked) {
                lost.push(key.as_str());
            }
        }
        if !unanswered.is_empty() {
            let shown: Vec<&String> = unanswered.iter().take(5).collect();
            self.violations.push(format!(
                "unanswered: {} request(s) sent once faults stopped got no reply, e.g. {shown:?}",
                unanswered.len()
            ));
        }
        if !lost.is_empty() {
            let shown: Vec<&&str> = lost.iter().take(5).collect();
            self.violations.push(format!(
                "lost reply: {} accepted persistent reply(ies) neither delivered nor \
                 dead-lettered once faults stopped, e.g. to {shown:?}",
                lost.len()
            ));
        }
    }
}

fn must_come(asked: &Asked) -> bool {
    let waits = asked.must_answer && asked.outcome == Outcome::Waiting;
    let reply_owed = asked.accepted > 0
        && asked.accepted_persistent
        && asked.replies == 0
        && !asked.in_doubt
        && !asked.lost_with_disk;
    waits || reply_owed
}

//! Retained publications: `publish --retain` keeps the last publication of a topic at its
//! publishing manager (a message of `hopmq.retained`, the one it replaces removed in the same
//! journal group); a new subscription receives the retained publication of every topic its
//! filter matches, once: this manager's at once, the others' in answer to a request it sends
//! every other manager as a publication (so the request and the answers travel with the
//! promises of publications: exactly once per hop, through crashes).
//!
//! Invariant: a retained publication sent to a new subscription carries its token
//! ([`RETAINED_FOR_HEADER`]) and reaches that subscription only, never the others of its
//! manager (which had it, or did not want it, when it was published).

use super::publish::{Placing, copy_record, topic_of};
use super::*;
use crate::pubsub::{
    Destinations, RETAINED_FOR_HEADER, RETAINED_HEADER, RETAINED_QUEUE, RETAINED_REQUEST_HEADER,
};
use crate::record::StoredMessage;
use hopmq::protocol::TOPIC_HEADER;
use hopmq_routing::topic::{Filter, Topic};

/// Which subscription a retained publication is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Token {
    /// A durable subscription, by name.
    Durable(QueueName),
    /// A transient one: (connection, subscription id).
    Transient(u64, u64),
}

impl Token {
    pub(super) fn encode(&self) -> String {
        match self {
            Self::Durable(name) => format!("d:{name}"),
            Self::Transient(connection, id) => format!("t:{connection}:{id}"),
        }
    }

    pub(super) fn parse(text: &str) -> Option<Self> {
        if let Some(name) = text.strip_prefix("d:") {
            return QueueName::new(name).ok().map(Self::Durable);
        }
        let (connection, id) = text.strip_prefix("t:")?.split_once(':')?;
        Some(Self::Transient(connection.parse().ok()?, id.parse().ok()?))
    }
}

fn retained_queue() -> QueueName {
    QueueName::new(RETAINED_QUEUE)
        .unwrap_or_else(|e| unreachable!("`{RETAINED_QUEUE}` is valid: {e}"))
}

impl Core {
    /// Rebuilds the index of retained publications from `hopmq.retained` after replay.
    pub(super) fn restore_retained(&mut self) {
        let queue = retained_queue();
        let Some(slot) = self.queues.get(&queue) else {
            return;
        };
        let mut entries: Vec<Entry> = slot.queue.entries().copied().collect();
        entries.sort_unstable_by_key(|e| e.seq);
        let mut stale = Vec::new();
        for entry in entries {
            let topic = self
                .payloads
                .get(&entry, &*self.storage)
                .map_err(|e| e.to_string())
                .and_then(|p| {
                    let stored = delivery::stored(&p).map_err(|e| e.to_string())?;
                    topic_of(&stored)
                });
            match topic {
                // Seq order: a later one replaces an earlier one of its topic (left by a write
                // that failed after its replacement was kept).
                Ok(topic) => stale.extend(self.pubsub.retained.retain(topic, entry.seq)),
                Err(error) => {
                    error!(seq = entry.seq, %error, "a retained publication cannot be read; it stays");
                }
            }
        }
        let entries: Vec<Entry> = stale
            .into_iter()
            .filter_map(|seq| {
                self.queues
                    .get_mut(&queue)
                    .and_then(|s| s.queue.remove(seq))
            })
            .collect();
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        if !seqs.is_empty() {
            self.commit_removal(seqs, Continuation::Removed { entries });
        }
    }

    /// Keeps `stored`, just published to `topic`, as its topic's retained publication: its copy
    /// into `items`, the seq of the one it replaces into `removed` (written in the same group).
    pub(super) fn retain_publication(
        &mut self,
        (stored, topic): (&StoredMessage<'_>, &Topic),
        persistent: bool,
        (items, removed): (&mut Vec<PutItem>, &mut Vec<u64>),
        now: Now,
    ) {
        let queue = retained_queue();
        let seq = self.next_seq;
        self.next_seq += 1;
        let record = copy_record(stored, (RETAINED_QUEUE, seq, stored.destination), None, &[]);
        items.push(self.publication_item(queue, stored, (seq, record), (persistent, None), now));
        if let Some(old) = self.pubsub.retained.retain(topic.clone(), seq) {
            removed.push(old);
        }
    }

    /// Whether `topic` may be retained here.
    pub(super) fn check_retain(&self, topic: &Topic) -> Result<(), ApiError> {
        if self.pubsub.retained.has_room_for(topic) {
            return Ok(());
        }
        Err(ApiError::BadRequest {
            reason: format!(
                "this manager retains publications for {} topics, its limit; `{topic}` would be one more",
                crate::pubsub::RETAINED_TOPICS_MAX
            ),
        })
    }

    /// `removed` (replaced retained publications) go once the commit made before this call
    /// completed.
    pub(super) fn retire_retained_after_commit(&mut self, removed: Vec<u64>) {
        let made = self.commits.made_count();
        for seq in removed {
            self.pubsub.retained.retire_after(made, seq);
        }
    }

    /// Drops replaced retained publications whose removal is durable.
    pub(super) fn retire_retained(&mut self) {
        let due = self.pubsub.retained.due(self.commits.done());
        if due.is_empty() {
            return;
        }
        let queue = retained_queue();
        for seq in due {
            let entry = self
                .queues
                .get_mut(&queue)
                .and_then(|s| s.queue.remove(seq));
            if let Some(entry) = entry {
                self.forget(&entry);
            }
        }
    }

    /// A transient subscription was just made: it receives this manager's retained
    /// publications that match, and every other manager is asked for theirs.
    pub(super) fn send_retained(&mut self, token: &Token, filter: &Filter, now: Now) {
        let items = self.retained_items(token, filter, now);
        if items.is_empty() {
            return;
        }
        let journal: Vec<Bytes> = super::publish::journaled(&items).collect();
        let continuation = Continuation::Fanned {
            items,
            old: None,
            admitted: Vec::new(),
        };
        if journal.is_empty() {
            self.apply(continuation, Ok(Vec::new()), now);
        } else {
            self.commit(journal, continuation);
        }
    }

    /// What a new subscription's retained publications here and its request for the others'
    /// take: copies into `token`'s subscription (a transient one is sent them instead) and a
    /// request to every other manager.
    pub(super) fn retained_items(
        &mut self,
        token: &Token,
        filter: &Filter,
        now: Now,
    ) -> Vec<PutItem> {
        let mut items = Vec::new();
        let queue = retained_queue();
        for seq in self.pubsub.retained.matching(filter) {
            let Some(entry) = self.queues.get(&queue).and_then(|s| s.queue.get(seq)) else {
                continue;
            };
            let persistent = !matches!(entry.body, BodyRef::Memory);
            let Ok(payload) = self.payloads.get(&entry, &*self.storage) else {
                continue;
            };
            let marked = delivery::stored(&payload)
                .map(|s| copy_record(&s, ("", 0, ""), None, &[(RETAINED_HEADER, "true")]));
            let Ok(marked) = marked else { continue };
            let Ok(stored) = delivery::stored(&marked) else {
                continue;
            };
            let Ok(topic) = topic_of(&stored) else {
                continue;
            };
            let out = (&mut items, None);
            self.deliver_here((&stored, &topic), None, persistent, Some(token), out, now);
        }
        self.request_retained(token, filter, &mut items, now);
        items
    }

    /// The request for other managers' retained publications matching `filter`, a publication
    /// to every other manager of the topology, into `items`.
    fn request_retained(
        &mut self,
        token: &Token,
        filter: &Filter,
        items: &mut Vec<PutItem>,
        now: Now,
    ) {
        let others: Vec<ManagerName> = self
            .routing
            .topology()
            .managers()
            .map(|m| m.name.clone())
            .filter(|m| *m != self.name)
            .collect();
        if others.is_empty() {
            return;
        }
        let message = OutgoingMessage {
            headers: [
                (TOPIC_HEADER, RETAINED_QUEUE.to_owned()),
                (RETAINED_REQUEST_HEADER, filter.to_string()),
                (RETAINED_FOR_HEADER, token.encode()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            priority: hopmq::PRIORITY_DEFAULT,
            persistent: true,
            ..OutgoingMessage::default()
        };
        let destinations = Destinations::new(others);
        let destination = destinations.encode();
        let envelope = Envelope {
            seq: 0,
            queue: "",
            id: self.ids.next(),
            destination: &destination,
            origin: self.name.as_str(),
            put_at_ms: now.wall_ms,
            stamp: None,
        };
        let base = delivery::encode_put(&envelope, &message);
        let (Ok(stored), Ok(topic)) = (delivery::stored(&base), Topic::new(RETAINED_QUEUE)) else {
            return;
        };
        let copies = (&stored, &destinations, &topic);
        self.fan_out(copies, None, true, (items, Placing::default()), now);
    }

    /// A request for this manager's retained publications matching `filter`: each goes to the
    /// requesting manager, for the subscription the request names only.
    pub(super) fn answer_retained_request(
        &mut self,
        request: &StoredMessage<'_>,
        filter: &str,
        items: &mut Vec<PutItem>,
        now: Now,
    ) {
        let (Ok(filter), Some(token), Ok(requester)) = (
            Filter::new(filter),
            request.header(RETAINED_FOR_HEADER),
            ManagerName::new(request.origin),
        ) else {
            warn!(
                origin = request.origin,
                "a malformed request for retained publications; ignored"
            );
            return;
        };
        let destinations = Destinations::new([requester]);
        let destination = destinations.encode();
        let queue = retained_queue();
        for seq in self.pubsub.retained.matching(&filter) {
            let Some(entry) = self.queues.get(&queue).and_then(|s| s.queue.get(seq)) else {
                continue;
            };
            let Ok(payload) = self.payloads.get(&entry, &*self.storage) else {
                continue;
            };
            let headers = [(RETAINED_FOR_HEADER, token), (RETAINED_HEADER, "true")];
            let marked = delivery::stored(&payload)
                .map(|s| copy_record(&s, ("", 0, &destination), None, &headers));
            let Ok(marked) = marked else { continue };
            let Ok(mut stored) = delivery::stored(&marked) else {
                continue;
            };
            // An id of its own: answers to two subscriptions of one manager would otherwise be
            // copies of one message on one link, and a receiver deduplicating by id keeps one.
            stored.id = self.ids.next().0;
            let Ok(topic) = topic_of(&stored) else {
                continue;
            };
            let copies = (&stored, &destinations, &topic);
            self.fan_out(copies, None, true, (&mut *items, Placing::default()), now);
        }
    }
}

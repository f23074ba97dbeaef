//! The simulated clients' publish/subscribe: the durable subscriptions each manager's client
//! makes (and asks for again when a crash ate the answer), the publications it publishes with
//! where its core says each goes, and the search for publications stranded on links the
//! topology no longer has.

use std::collections::{BTreeMap, BTreeSet};

use hopmq::protocol::{Operation, OutgoingMessage, Reply};
use qmgr::record::{self, Record};

use crate::Sim;
use crate::checker::is_publication;
use crate::node::Request;

/// The queue names of a manager's transmission queues (`TRANSMISSION_QUEUE_PREFIX` in the
/// core, which it does not export).
const TRANSMISSION_QUEUE_PREFIX: &str = "hopmq.xmit.";

/// The topics publications go to.
const TOPICS: [&str; 3] = ["t.a", "t.b", "t.a.x"];
/// The filters subscriptions take: literal, one-token and rest wildcards, overlapping.
const FILTERS: [&str; 6] = ["t.a", "t.*", "t.>", "t.a.>", "t.b", "t.a.x"];
/// Durable subscriptions one client makes at most (over a run, lost disks aside).
const SUBSCRIPTIONS_MAX: usize = 3;
/// The depth limit of the odd small subscription, so that publications overflow it to the
/// dead-letter queue now and then.
const SMALL_SUBSCRIPTION_DEPTH: u64 = 30;

/// Where a client's subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Made {
    /// Its create is in flight.
    Asked,
    /// Answered `Done`.
    Live,
    /// Not asked yet, refused, or its answer lost with a crash: to be asked (again).
    Unknown,
}

/// A durable subscription a client wants.
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    pub(crate) name: String,
    filter: &'static str,
    max_depth: Option<u64>,
    pub(crate) made: Made,
}

impl Sim {
    /// Manager `index`'s client asks again for a subscription whose answer it lost, or makes
    /// a new one.
    pub(crate) fn subscribe_at(&mut self, index: usize) {
        if !self.nodes[index].serves() {
            return;
        }
        let node = &mut self.nodes[index];
        if let Some(i) = node
            .subscriptions
            .iter()
            .position(|s| s.made == Made::Unknown)
        {
            // A create is idempotent with the same filter: asking again is safe.
            self.ask_subscription(index, i);
            return;
        }
        if node.subscriptions.len() >= SUBSCRIPTIONS_MAX {
            return;
        }
        let name = format!("s-{}-{}", node.name, node.subscription_count);
        node.subscription_count += 1;
        let filter = FILTERS[self.rng.index(FILTERS.len())];
        let max_depth = self.rng.chance(250).then_some(SMALL_SUBSCRIPTION_DEPTH);
        self.nodes[index].subscriptions.push(Wanted {
            name,
            filter,
            max_depth,
            made: Made::Unknown,
        });
        let last = self.nodes[index].subscriptions.len() - 1;
        self.ask_subscription(index, last);
    }

    /// Manager `index`'s client asks for its `i`th subscription.
    fn ask_subscription(&mut self, index: usize, i: usize) {
        let manager = self.nodes[index].name.to_string();
        let wanted = self.nodes[index].subscriptions[i].clone();
        self.checker
            .subscription_asked(&wanted.name, &manager, wanted.filter);
        self.digest.add(&format!(
            "subscribe {index} {} {} {:?}",
            wanted.name, wanted.filter, wanted.max_depth
        ));
        let operation = Operation::CreateSubscription {
            name: wanted.name.clone(),
            filter: wanted.filter.to_owned(),
            max_depth: wanted.max_depth,
        };
        if self.request(index, operation, Request::Subscribe(wanted.name)) {
            self.nodes[index].subscriptions[i].made = Made::Asked;
        }
    }

    /// Manager `index`'s client was answered about subscription `name`.
    pub(crate) fn subscription_answered(&mut self, index: usize, name: &str, done: bool) {
        let Some(wanted) = self.nodes[index]
            .subscriptions
            .iter_mut()
            .find(|s| s.name == name)
        else {
            return;
        };
        if done {
            wanted.made = Made::Live;
            self.checker.subscription_made(name);
        } else {
            wanted.made = Made::Unknown;
        }
    }

    /// A random manager's client makes or remakes a subscription.
    pub(crate) fn random_subscribe(&mut self) {
        let index = self.rng.index(self.nodes.len());
        self.subscribe_at(index);
    }

    /// A publish of one to three messages, mostly persistent, from a random manager to a
    /// random topic.
    pub(crate) fn random_publish(&mut self) {
        let index = self.rng.index(self.nodes.len());
        if !self.nodes[index].serves() {
            return;
        }
        let topic = TOPICS[self.rng.index(TOPICS.len())];
        // Asked at the moment the core takes the request (the call below is synchronous):
        // exactly where this publish goes.
        let managers: Vec<String> = self.nodes[index]
            .core
            .as_ref()
            .map(|core| core.publication_destinations(topic))
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect();
        let publisher = self.nodes[index].name.to_string();
        let count = self.rng.between(1, 3);
        let mut publications = Vec::new();
        let mut keys = Vec::new();
        for _ in 0..count {
            let node = &mut self.nodes[index];
            node.publish_count += 1;
            let key = format!("{}/p{}", node.name, node.publish_count);
            let persistent = !self.rng.chance(150);
            self.checker.published(
                &key,
                (&publisher, topic),
                persistent,
                self.now_ms,
                &managers,
            );
            publications.push((
                topic.to_owned(),
                OutgoingMessage {
                    body: key.clone().into_bytes(),
                    persistent,
                    ..OutgoingMessage::default()
                },
            ));
            keys.push(key);
        }
        self.digest
            .add(&format!("publish {index} {topic} {keys:?} to {managers:?}"));
        let operation = Operation::Publish {
            publications,
            retain: false,
        };
        if !self.request(index, operation, Request::Publish(keys.clone())) {
            // Not sent: the client has too much outstanding.
            self.checker.publish_answered(&keys, false);
        }
    }

    /// The answer to a publish of `keys`.
    pub(crate) fn publish_answered(
        &mut self,
        keys: &[String],
        result: &Result<Reply, hopmq::ApiError>,
    ) {
        let ok = matches!(result, Ok(Reply::Put(_)));
        self.checker.publish_answered(keys, ok);
    }

    /// Tells the checker of the unstamped publications' shares given to the channel of a
    /// link the newest topology no longer has, and still unacknowledged: a message a channel
    /// holds stays with it under its sequence number, and only stamped messages are copied
    /// around a link out of use (custody), so these wait for the link's return for ever. A
    /// persistent publication is stamped unless `skip-publication-custody` broke the core.
    pub(crate) fn note_stranded(&mut self) {
        for index in 0..self.nodes.len() {
            let records = self.nodes[index].disk.records();
            let mut removed = BTreeSet::new();
            // Message seq -> the neighbour whose channel it was given to.
            let mut assigned: BTreeMap<u64, String> = BTreeMap::new();
            let mut shares = Vec::new();
            for payload in &records {
                match record::decode(payload) {
                    Ok(Record::Remove(seqs)) => removed.extend(seqs),
                    Ok(Record::ChannelSend(send)) => {
                        for seq in send.assigned {
                            assigned.insert(seq, send.to.to_owned());
                        }
                    }
                    Ok(Record::ChannelAssigned(copied)) => {
                        for (seq, _) in copied.pairs {
                            assigned.insert(seq, copied.to.to_owned());
                        }
                    }
                    Ok(Record::Enqueue(m)) => {
                        let key = std::str::from_utf8(m.body).unwrap_or_default();
                        if let Some(neighbour) = m.queue.strip_prefix(TRANSMISSION_QUEUE_PREFIX) {
                            // A stamped share is sent around (custody).
                            let stamped = m
                                .headers
                                .iter()
                                .any(|(k, _)| *k == qmgr::custody::STAMP_HEADER);
                            if is_publication(key) && !stamped {
                                let share = (m.seq, neighbour.to_owned(), key.to_owned());
                                shares.push((share, m.destination.to_owned()));
                            }
                        }
                    }
                    _ => {}
                }
            }
            for ((seq, neighbour, key), destination) in shares {
                let other = neighbour.strip_prefix('m').and_then(|n| n.parse().ok());
                let unlinked = other.is_some_and(|other| !self.shape.linked(index, other));
                let held = assigned.get(&seq) == Some(&neighbour) && !removed.contains(&seq);
                if unlinked && held {
                    let managers: Vec<String> = destination
                        .trim_start_matches(qmgr::pubsub::PUBLICATION_MARK)
                        .split(',')
                        .map(str::to_owned)
                        .collect();
                    self.checker.publication_stranded(&key, &managers);
                }
            }
        }
    }
}

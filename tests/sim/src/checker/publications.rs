//! The checker's share of publish/subscribe: the durable subscriptions the clients made, the
//! publications they published with the subscriptions each must reach, and what the clients
//! got from those subscriptions, held against exactly-once per subscription and publish order
//! (the promises are listed in the parent module's documentation).

use std::collections::{BTreeMap, BTreeSet};

use hopmq_routing::topic::{Filter, Topic};

use super::{Checker, PutState};

/// Whether `key` names a publication (`<manager>/p<n>`) rather than a queue message
/// (`<manager>/<n>`).
pub fn is_publication(key: &str) -> bool {
    key.split_once('/').is_some_and(|(_, n)| n.starts_with('p'))
}

/// Where a durable subscription stands, as its client knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Asked for, not (yet) answered `Done`: it may exist or not.
    Asked,
    /// Answered `Done`: it exists, journaled.
    Live,
    /// Its manager lost its disk, and the subscription with it.
    Gone,
}

#[derive(Debug)]
struct Subscription {
    manager: String,
    filter: Filter,
    standing: Standing,
}

#[derive(Debug)]
struct Publication {
    publisher: String,
    topic: Topic,
    /// Its place in its publisher's publications.
    index: usize,
    persistent: bool,
    put: PutState,
    /// Its publisher's incarnation and the simulated time, when it was published.
    published_at: (u64, u64),
    /// The managers its publisher sent it to.
    managers: BTreeSet<String>,
    /// The subscriptions that must receive it: live when it was published, on one of
    /// `managers`, with a filter that matches its topic.
    expected: BTreeSet<String>,
    /// Per subscription: deliveries plus dead letters.
    resolved: BTreeMap<String, u32>,
    /// Subscriptions that handed it out already (leased or not).
    seen: BTreeSet<String>,
    /// Subscriptions it was dead-lettered from (full, or too many deliveries).
    dead_in: BTreeSet<String>,
    /// Dead-lettered on its way, before any subscription (a hop limit, a bad destination).
    dead_on_way: bool,
    /// Subscriptions whose copy a crash removed without the client's knowing (see the
    /// parent module's *in doubt*).
    in_doubt: BTreeSet<String>,
    /// Managers whose share of it waits on the channel of a link the topology no longer has.
    stranded: BTreeSet<String>,
    /// Published before a manager lost its disk (see [`Checker::publications_disk_lost`]).
    lost_with_disk: bool,
    /// Published before its publisher lost its disk, and custody of it with it.
    publisher_lost: bool,
    /// A copy of it was handed out (or read from a dead-letter queue) with the
    /// `hopmq.unordered` header: its hold at a destination ended without the earlier
    /// publication it waited for.
    unordered: bool,
}

impl Publication {
    /// Whether its copy in `subscription` is settled: delivered or dead-lettered from there,
    /// or removed by a crash without the client's knowing.
    fn settled_in(&self, subscription: &str) -> bool {
        self.resolved.get(subscription).is_some_and(|&n| n > 0)
            || self.in_doubt.contains(subscription)
    }
}

/// `later` was first handed out from `subscription` while `earlier`, published before it by
/// the same publisher and expected there too, was not.
#[derive(Debug)]
struct Overtaken {
    later: String,
    earlier: String,
    subscription: String,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Publications {
    subscriptions: BTreeMap<String, Subscription>,
    publications: BTreeMap<String, Publication>,
    /// Per publisher, its publications' keys in publish order.
    streams: BTreeMap<String, Vec<String>>,
    /// Per (publisher, subscription), the first publication whose order may still matter.
    cursors: BTreeMap<(String, String), usize>,
    overtaken: Vec<Overtaken>,
    /// Per acknowledged persistent publication, the subscriptions it must still reach.
    awaited: BTreeMap<String, BTreeSet<String>>,
    /// Publications published (requests sent).
    pub(super) published: u64,
    /// Publication copies delivered for good, from any subscription.
    pub(super) delivered: u64,
}

impl Publications {
    /// Whether a publication of `publisher` after its `from`th up to `later` went on without
    /// an earlier one it waited for at a destination.
    fn went_unordered(&self, publisher: &str, from: usize, later: &str) -> bool {
        let (Some(keys), Some(later)) = (self.streams.get(publisher), self.publications.get(later))
        else {
            return true;
        };
        keys.get(from + 1..=later.index).is_none_or(|between| {
            between
                .iter()
                .any(|key| self.publications.get(key).is_some_and(|p| p.unordered))
        })
    }

    /// `key` no longer needs to reach `subscription`.
    fn settle(&mut self, key: &str, subscription: &str) {
        if let Some(waiting) = self.awaited.get_mut(key) {
            waiting.remove(subscription);
            if waiting.is_empty() {
                self.awaited.remove(key);
            }
        }
    }
}

impl Checker {
    /// Manager `manager`'s client asked for durable subscription `name` to `filter`.
    pub fn subscription_asked(&mut self, name: &str, manager: &str, filter: &str) {
        let Ok(filter) = Filter::new(filter) else {
            self.violations
                .push(format!("the simulator asked for a bad filter {filter:?}"));
            return;
        };
        self.publications
            .subscriptions
            .entry(name.to_owned())
            .or_insert(Subscription {
                manager: manager.to_owned(),
                filter,
                standing: Standing::Asked,
            });
    }

    /// Durable subscription `name` was answered `Done`: it exists from now on.
    pub fn subscription_made(&mut self, name: &str) {
        if let Some(subscription) = self.publications.subscriptions.get_mut(name) {
            if subscription.standing == Standing::Asked {
                subscription.standing = Standing::Live;
            }
        }
    }

    /// A publish request of `key` to `topic` was sent by `publisher` at `now_ms`, which
    /// sends it (as the core says) to `managers`.
    pub fn published(
        &mut self,
        key: &str,
        (publisher, topic): (&str, &str),
        persistent: bool,
        now_ms: u64,
        managers: &[String],
    ) {
        let Ok(topic) = Topic::new(topic) else {
            self.violations
                .push(format!("the simulator published to a bad topic {topic:?}"));
            return;
        };
        let managers: BTreeSet<String> = managers.iter().cloned().collect();
        let expected = self
            .publications
            .subscriptions
            .iter()
            .filter(|(_, s)| {
                s.standing == Standing::Live
                    && managers.contains(&s.manager)
                    && s.filter.matches(&topic)
            })
            .map(|(name, _)| name.clone())
            .collect();
        let keys = self
            .publications
            .streams
            .entry(publisher.to_owned())
            .or_default();
        keys.push(key.to_owned());
        let index = keys.len() - 1;
        let incarnation = self.restarts.get(publisher).copied().unwrap_or(0);
        self.publications.published += 1;
        self.publications.publications.insert(
            key.to_owned(),
            Publication {
                publisher: publisher.to_owned(),
                topic,
                index,
                persistent,
                put: PutState::Pending,
                published_at: (incarnation, now_ms),
                managers,
                expected,
                resolved: BTreeMap::new(),
                seen: BTreeSet::new(),
                dead_in: BTreeSet::new(),
                dead_on_way: false,
                in_doubt: BTreeSet::new(),
                stranded: BTreeSet::new(),
                lost_with_disk: false,
                publisher_lost: false,
                unordered: false,
            },
        );
    }

    /// The publish of `keys` was answered (`Put`, or an error), or not sent at all.
    pub fn publish_answered(&mut self, keys: &[String], ok: bool) {
        let pubs = &mut self.publications;
        for key in keys {
            let Some(p) = pubs.publications.get_mut(key) else {
                continue;
            };
            p.put = if ok {
                PutState::Acked
            } else {
                PutState::Failed
            };
            if ok && p.persistent && !p.dead_on_way && !p.publisher_lost {
                let waiting: BTreeSet<String> = p
                    .expected
                    .iter()
                    .filter(|s| {
                        !p.settled_in(s)
                            && pubs
                                .subscriptions
                                .get(*s)
                                .is_some_and(|s| s.standing != Standing::Gone)
                    })
                    .cloned()
                    .collect();
                if !waiting.is_empty() {
                    pubs.awaited.insert(key.clone(), waiting);
                }
            }
        }
    }

    /// The publish of `keys` will never be answered (its manager crashed).
    pub fn publish_unanswered(&mut self, keys: &[String]) {
        for key in keys {
            if let Some(publication) = self.publications.publications.get_mut(key) {
                publication.put = PutState::Unknown;
            }
        }
    }

    /// A manager lost its disk, and its subscriptions with it: they are expected to receive
    /// nothing more, and what they receive again is no duplicate (its custody forgot what it
    /// accepted). Publications it published before are excused from the loss and duplicate
    /// checks: it kept custody of them. Every publication published so far is excused from
    /// the order check, since publications are not resequenced and copies sent around the
    /// loss may pass earlier ones.
    ///
    /// Publications passing through it are not excused: their publishers keep custody of
    /// them until each destination confirms, and send them again around a relay lost with
    /// its disk.
    pub(super) fn publications_disk_lost(&mut self, manager: &str) {
        for publication in self.publications.publications.values_mut() {
            publication.lost_with_disk = true;
            if publication.publisher == manager {
                publication.publisher_lost = true;
            }
        }
        for subscription in self.publications.subscriptions.values_mut() {
            if subscription.manager == manager {
                subscription.standing = Standing::Gone;
            }
        }
        let pubs = &mut self.publications;
        let (publications, subscriptions) = (&pubs.publications, &pubs.subscriptions);
        pubs.awaited.retain(|key, waiting| {
            if publications.get(key).is_some_and(|p| p.publisher_lost) {
                return false;
            }
            waiting.retain(|s| subscriptions.get(s).is_some_and(|s| s.manager != manager));
            !waiting.is_empty()
        });
    }

    /// Publication `key` was handed out (leased or not) from subscription `subscription`,
    /// `unordered` if it came with the `hopmq.unordered` header.
    pub fn publication_handed_out(&mut self, key: &str, subscription: &str, unordered: bool) {
        let pubs = &mut self.publications;
        let Some(p) = pubs.publications.get_mut(key) else {
            self.violations.push(format!(
                "a publication nobody published was handed out from {subscription}: {key:?}"
            ));
            return;
        };
        let Some(s) = pubs.subscriptions.get(subscription) else {
            self.violations.push(format!(
                "publication {key} was handed out from {subscription}, which is no subscription"
            ));
            return;
        };
        if !s.filter.matches(&p.topic) {
            self.violations.push(format!(
                "publication {key} to {} reached {subscription}, whose filter {} does not match",
                p.topic, s.filter
            ));
        }
        if !p.managers.contains(&s.manager) {
            self.violations.push(format!(
                "publication {key} reached {subscription} on {}, a manager its publisher did not send it to ({:?})",
                s.manager, p.managers
            ));
        }
        p.unordered |= unordered;
        if !p.seen.insert(subscription.to_owned()) {
            return;
        }
        let (publisher, index, life) = (p.publisher.clone(), p.index, p.published_at.0);
        // Order holds among persistent publications: a non-persistent one skips the journals
        // and the channels' numbered streams, so it may pass persistent ones on the way.
        let later_persistent = p.persistent;
        let Some(keys) = pubs.streams.get(&publisher) else {
            return;
        };
        let cursor = pubs
            .cursors
            .entry((publisher, subscription.to_owned()))
            .or_default();
        for earlier in &keys[(*cursor).min(index)..index] {
            let Some(a) = pubs.publications.get(earlier) else {
                continue;
            };
            let checkable = later_persistent
                && a.expected.contains(subscription)
                && !a.seen.contains(subscription)
                && a.persistent
                && !matches!(a.put, PutState::Failed | PutState::Unknown)
                && !a.lost_with_disk
                && a.published_at.0 == life;
            if checkable {
                pubs.overtaken.push(Overtaken {
                    later: key.to_owned(),
                    earlier: earlier.clone(),
                    subscription: subscription.to_owned(),
                });
            }
        }
        // Past what can no longer be overtaken here: seen, not expected, or never stored.
        while let Some(a) = keys.get(*cursor).and_then(|k| pubs.publications.get(k)) {
            let settled = !a.expected.contains(subscription)
                || a.seen.contains(subscription)
                || !a.persistent
                || matches!(a.put, PutState::Failed | PutState::Unknown);
            if !settled {
                break;
            }
            *cursor += 1;
        }
    }

    /// Publication `key` was delivered for good from `subscription`.
    pub fn publication_delivered(&mut self, key: &str, subscription: &str) {
        self.publications.delivered += 1;
        self.publication_resolved(key, subscription, "delivered");
    }

    /// Publication `key` was got from a dead-letter queue with `reason`, dead-lettered from
    /// `queue` (its `hopmq.dead_letter_queue` header); `unordered` if it came with the
    /// `hopmq.unordered` header.
    pub fn publication_dead_letter(
        &mut self,
        key: &str,
        (reason, queue): (Option<&str>, &str),
        unordered: bool,
    ) {
        self.dead_lettered += 1;
        if let Some(p) = self.publications.publications.get_mut(key) {
            // Went on without an earlier one, then found its subscription full: the
            // publications after it may still pass that earlier one.
            p.unordered |= unordered;
        }
        if reason.is_none_or(str::is_empty) {
            self.violations
                .push(format!("dead letter without a reason: {key}"));
        }
        if self.publications.subscriptions.contains_key(queue) {
            if let Some(p) = self.publications.publications.get_mut(key) {
                p.dead_in.insert(queue.to_owned());
            }
            self.publication_resolved(key, queue, "dead-lettered");
        } else if let Some(p) = self.publications.publications.get_mut(key) {
            // Dead-lettered on its way (its header names its destination set): it reaches
            // none of the subscriptions that copy would have.
            p.dead_on_way = true;
            self.publications.awaited.remove(key);
        } else {
            self.violations.push(format!(
                "dead-lettered a publication nobody published: {key:?}"
            ));
        }
    }

    fn publication_resolved(&mut self, key: &str, subscription: &str, how: &str) {
        let Some(p) = self.publications.publications.get_mut(key) else {
            self.violations.push(format!(
                "{how} a publication nobody published: {key:?} from {subscription}"
            ));
            return;
        };
        let count = p.resolved.entry(subscription.to_owned()).or_default();
        *count += 1;
        let forgotten = self
            .publications
            .subscriptions
            .get(subscription)
            .is_some_and(|s| s.standing == Standing::Gone);
        if *count == 2 && !p.publisher_lost && !forgotten {
            self.violations.push(format!(
                "publication delivered twice: {key} was {how} a second time from {subscription}"
            ));
        }
        self.publications.settle(key, subscription);
    }

    /// A crash kept the unsynced removal of publication `key`'s copy from `queue` (whose
    /// record names `destination`): the get or ack that removed it was never answered.
    pub(super) fn publication_removal_kept(&mut self, key: &str, queue: &str, destination: &str) {
        let pubs = &mut self.publications;
        let Some(p) = pubs.publications.get_mut(key) else {
            return;
        };
        let dead_letter = queue == hopmq::protocol::DEAD_LETTER_QUEUE;
        if pubs.subscriptions.contains_key(queue) {
            p.in_doubt.insert(queue.to_owned());
            pubs.settle(key, queue);
        } else if dead_letter && pubs.subscriptions.contains_key(destination) {
            p.in_doubt.insert(destination.to_owned());
            pubs.settle(key, destination);
        } else if dead_letter {
            // A dead letter from its way: it was dead-lettered, seen or not.
            p.dead_on_way = true;
            pubs.awaited.remove(key);
        }
    }

    /// `key`'s share for `managers` waits on the channel of a link the newest topology no
    /// longer has, unacknowledged: it waits for the link's return, which the run will not
    /// see, so the subscriptions on those managers are excused from its loss (a documented
    /// limitation: publications have no custody to send them around).
    pub fn publication_stranded(&mut self, key: &str, managers: &[String]) {
        let pubs = &mut self.publications;
        let Some(p) = pubs.publications.get_mut(key) else {
            return;
        };
        p.stranded.extend(managers.iter().cloned());
        let excused: Vec<String> = pubs
            .subscriptions
            .iter()
            .filter(|(_, s)| managers.contains(&s.manager))
            .map(|(name, _)| name.clone())
            .collect();
        for subscription in excused {
            pubs.settle(key, &subscription);
        }
    }

    /// (Publication, subscription) pairs that must still arrive.
    pub(super) fn publications_outstanding(&self) -> usize {
        self.publications.awaited.values().map(BTreeSet::len).sum()
    }

    /// The publications that must still arrive (for a traced run's last words).
    pub(super) fn publications_missing(&self) -> Vec<String> {
        self.publications.awaited.keys().cloned().collect()
    }

    /// The publication order violations, once everything is known.
    pub(super) fn publication_order(&mut self) {
        for o in std::mem::take(&mut self.publications.overtaken) {
            let pubs = &self.publications;
            let Some(a) = pubs.publications.get(&o.earlier) else {
                continue;
            };
            // Destinations resequence publications whatever routes their copies took, so order
            // holds through route changes and crashes; but an unstamped share waiting on the
            // channel of a link the topology no longer has is overtaken by the later ones
            // that go around it, and a publication whose hold ended without the earlier one
            // (at twice the custody timeout) says so in its `hopmq.unordered` header.
            let stranded = pubs
                .subscriptions
                .get(&o.subscription)
                .is_some_and(|s| a.stranded.contains(&s.manager));
            // Only an `earlier` that did arrive there, after `later`, was overtaken: one never
            // handed out there is the loss check's (or was dead-lettered and its dead letter
            // not read before the run ended, which a lost disk lets happen).
            let excused = a.put != PutState::Acked
                || !a.seen.contains(&o.subscription)
                || a.dead_on_way
                || stranded
                || a.dead_in.contains(&o.subscription)
                || a.in_doubt.contains(&o.subscription)
                || pubs.went_unordered(&a.publisher, a.index, &o.later);
            if !excused {
                self.violations.push(format!(
                    "publication order: {} was handed out from {} before {}, published earlier by {}",
                    o.later, o.subscription, o.earlier, a.publisher
                ));
            }
        }
    }

    /// The publication losses, once faults stopped and the run drained.
    pub(super) fn publication_losses(&mut self) {
        let lost: Vec<String> = self
            .publications
            .awaited
            .iter()
            .flat_map(|(key, waiting)| waiting.iter().map(move |s| format!("{key} in {s}")))
            .collect();
        if !lost.is_empty() {
            let shown: Vec<&str> = lost.iter().take(5).map(String::as_str).collect();
            self.violations.push(format!(
                "lost: {} acknowledged persistent publication copies never delivered nor dead-lettered once faults stopped, e.g. {shown:?}",
                lost.len()
            ));
        }
    }

    /// Publications published (requests sent).
    pub fn publications_published(&self) -> u64 {
        self.publications.published
    }

    /// Publication copies delivered for good.
    pub fn publications_delivered(&self) -> u64 {
        self.publications.delivered
    }
}

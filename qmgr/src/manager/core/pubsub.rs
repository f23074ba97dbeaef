//! Subscriptions: durable ones made and deleted (the whole set written as one `Subscriptions`
//! record, kept at the journal's head like custody's), transient ones made and ended with
//! their connection, the interest this manager advertises, and the interest of the others as
//! link state floods it.
//!
//! Invariants: a durable subscription's change is answered only once a record holding it is
//! durable; the last record written is always live in retention (rewritten at the head when
//! its segment seals); the advertised interest follows every change of the registry.

use std::collections::BTreeMap;

use super::retained::Token;
use super::*;
use crate::pubsub::{Interest, Registry, SubscriptionDef};
use crate::record::SubscriptionRecord;
use hopmq::protocol::{DurableSubscription, SubscriptionListing, TransientSubscription};
use hopmq_routing::Lsa;
use hopmq_routing::topic::Filter;

/// Publish/subscribe's counters, since start.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PubTotals {
    /// Publications published here.
    pub(super) published: u64,
    /// Copies stored into this manager's durable subscriptions.
    pub(super) delivered: u64,
    /// Publications handed to transient subscribers here.
    pub(super) transient_delivered: u64,
    /// Publications transient subscribers here were too far behind to be sent.
    pub(super) transient_missed: u64,
    /// Publications published here that no subscription anywhere wanted.
    pub(super) unmatched: u64,
    /// Shares of non-persistent publications dropped: no route, no connection taking them,
    /// or past the hop limit.
    pub(super) volatile_dropped: u64,
}

/// See the module documentation.
#[derive(Default)]
pub(super) struct PubSub {
    pub(super) registry: Registry,
    pub(super) interest: Interest,
    pub(super) retained: crate::pubsub::Retained,
    /// Where the last `Subscriptions` record is.
    record: Option<Location>,
    /// A record is being written.
    writing: bool,
    /// The set changed since the record in flight was made: write again once it lands.
    dirty: bool,
    /// Requests answered when the next record is durable.
    next_answers: Vec<(u64, u64)>,
    /// Subscriptions deleted since the record in flight was made: their queues go once the
    /// next record is durable (every copy accepted for them before is placed by then, since
    /// commits complete in order).
    next_deleted: Vec<QueueName>,
    /// New subscriptions' retained publications and requests for the others', written with
    /// the next record: a subscription is answered only once they are durable too, so a crash
    /// cannot leave one that never receives them.
    next_items: Vec<PutItem>,
    pub(super) totals: PubTotals,
    /// Per neighbour, publications received from it and copies given to its transmission
    /// queue (or, non-persistent, to its connection), since start.
    pub(super) links: BTreeMap<ManagerName, (u64, u64)>,
    /// Non-persistent shares for other managers, sent when the event making them ends.
    pub(super) volatile: super::volatile::Volatile,
    /// Publications waiting to be sent to transient subscribers.
    pub(super) transient: super::transient::TransientSends,
}

impl PubSub {
    /// The recovered durable subscriptions.
    pub(super) fn recovered(recovered: crate::manager::recovery::RecoveredSubscriptions) -> Self {
        let mut pubsub = Self {
            record: recovered.location,
            ..Self::default()
        };
        for def in recovered.defs {
            if let Err(error) = pubsub.registry.create(def) {
                error!(%error, "a recorded subscription does not fit this build's limits; it is dropped");
            }
        }
        pubsub
    }
}

fn bad(reason: impl ToString) -> ApiError {
    ApiError::BadRequest {
        reason: reason.to_string(),
    }
}

impl Core {
    /// A publish/subscribe request of a client.
    pub(super) fn pubsub_request(
        &mut self,
        (connection, id): (u64, u64),
        operation: hopmq::protocol::Operation,
        now: Now,
    ) -> Result<Option<Reply>, ApiError> {
        use hopmq::protocol::Operation as Op;
        match operation {
            Op::Publish {
                publications,
                retain,
            } => {
                let publications = (publications, retain);
                self.publish((connection, id), publications, AfterPut::Answer, now)
            }
            Op::SubscribeTopic { filter } => self.subscribe_topic((connection, id), &filter, now),
            Op::CreateSubscription {
                name,
                filter,
                max_depth,
            } => self.create_subscription((connection, id), (&name, &filter, max_depth), now),
            Op::DeleteSubscription { name } => self.delete_subscription((connection, id), &name),
            Op::ListSubscriptions => Ok(Some(self.list_subscriptions())),
            other => Err(ApiError::BadRequest {
                reason: format!("not a publish/subscribe request: {other:?}"),
            }),
        }
    }

    /// Makes the recovered subscriptions' queues and advertises their interest.
    pub(super) fn restore_subscriptions(&mut self) {
        let defs: Vec<SubscriptionDef> = self.pubsub.registry.durables().cloned().collect();
        for def in defs {
            let slot = self.ensure_slot(&def.name);
            if let Some(max_depth) = def.max_depth {
                slot.set_max_depth(max_depth);
            }
        }
        self.routing.set_interest(self.pubsub.registry.interest());
    }

    /// `CreateSubscription`: answered once the subscription is durable.
    pub(super) fn create_subscription(
        &mut self,
        asker: (u64, u64),
        (name, filter, max_depth): (&str, &str, Option<u64>),
        now: Now,
    ) -> Result<Option<Reply>, ApiError> {
        let name = QueueName::new(name).map_err(bad)?;
        if name.as_str().starts_with(SYSTEM_QUEUE_PREFIX) {
            return Err(bad(format!(
                "queue names starting with `{SYSTEM_QUEUE_PREFIX}` are reserved"
            )));
        }
        if let Some(queue) = self.routing.topology().queue(name.as_str()) {
            if queue.home != self.name {
                return Err(bad(format!(
                    "the topology homes queue `{name}` on `{}`; a subscription's queue lives on its subscriber's manager",
                    queue.home
                )));
            }
        }
        let filter = Filter::new(filter).map_err(bad)?;
        if max_depth == Some(0) {
            return Err(bad("max_depth must be at least 1"));
        }
        if self.pubsub.registry.durable(&name).is_none() {
            if let Some(slot) = self.queues.get(&name) {
                let held = slot.held(self.leases.leased(name.as_str()));
                if held > 0 {
                    return Err(bad(format!(
                        "queue `{name}` holds {held} messages and is not a subscription; choose another name"
                    )));
                }
            }
        }
        let changed = self
            .pubsub
            .registry
            .create(SubscriptionDef {
                name: name.clone(),
                filter: filter.clone(),
                max_depth,
            })
            .map_err(bad)?;
        let slot = self.ensure_slot(&name);
        let depth_changed = max_depth.is_some_and(|m| m != slot.max_depth());
        if let Some(max_depth) = max_depth {
            slot.set_max_depth(max_depth);
        }
        // Unchanged, but answered only once a record holding it is durable.
        if !changed && !depth_changed && !self.pubsub.writing && !self.pubsub.dirty {
            return Ok(Some(Reply::Done));
        }
        if changed {
            let items = self.retained_items(&Token::Durable(name), &filter, now);
            self.pubsub.next_items.extend(items);
        }
        self.subscriptions_changed(Some(asker));
        Ok(None)
    }

    /// `DeleteSubscription`: the feed stops at once; once that is durable, the queue goes
    /// with what it holds.
    pub(super) fn delete_subscription(
        &mut self,
        asker: (u64, u64),
        name: &str,
    ) -> Result<Option<Reply>, ApiError> {
        let name = QueueName::new(name).map_err(bad)?;
        if self.pubsub.registry.durable(&name).is_none() {
            return Err(bad(format!("no subscription `{name}` on this manager")));
        }
        let leased = self.leases.leased(name.as_str());
        if leased > 0 {
            return Err(bad(format!(
                "subscription `{name}` has {leased} leased messages; ack or nack them first"
            )));
        }
        self.pubsub.registry.delete(&name);
        self.pubsub.next_deleted.push(name);
        self.subscriptions_changed(Some(asker));
        Ok(None)
    }

    /// The queue of deleted subscription `name` goes, with what it holds (unless it was made
    /// again meanwhile, or holds messages leased since).
    fn remove_subscription_queue(&mut self, name: &QueueName) {
        if self.pubsub.registry.durable(name).is_some() || self.leases.leased(name.as_str()) > 0 {
            return;
        }
        let Some(mut slot) = self.queues.remove(name) else {
            return;
        };
        let entries = slot.queue.drain();
        for waiter in self.waiters.line(name) {
            self.end_waiter(
                waiter,
                Err(ApiError::UnknownQueue {
                    queue: name.to_string(),
                }),
            );
        }
        self.clients.queue_deleted(name);
        self.remove_entries(entries);
    }

    /// `SubscribeTopic`: a transient subscription of `connection`.
    pub(super) fn subscribe_topic(
        &mut self,
        (connection, request): (u64, u64),
        filter: &str,
        now: Now,
    ) -> Result<Option<Reply>, ApiError> {
        let filter = Filter::new(filter).map_err(bad)?;
        let id = self
            .clients
            .new_subscription_id(connection)
            .ok_or(ApiError::ShuttingDown)?;
        self.pubsub
            .registry
            .subscribe((connection, id), filter.clone())
            .map_err(bad)?;
        self.advertise_interest();
        // Answered first: the client routes events only to subscriptions it was told of.
        self.reply(connection, request, Ok(Reply::Subscribed(id)));
        self.send_retained(&Token::Transient(connection, id), &filter, now);
        Ok(None)
    }

    /// Ends transient subscription `subscription` of `connection`; false if there is none.
    pub(super) fn unsubscribe_topic(&mut self, connection: u64, subscription: u64) -> bool {
        let ended = self.pubsub.registry.unsubscribe((connection, subscription));
        if ended {
            self.advertise_interest();
        }
        ended
    }

    /// A client left: its transient subscriptions end.
    pub(super) fn topic_subscriber_left(&mut self, connection: u64) {
        self.pubsub.registry.disconnect(connection);
        self.advertise_interest();
    }

    /// The durable set changed: it is written whole (answering `asker` once durable), and the
    /// interest advertised.
    fn subscriptions_changed(&mut self, asker: Option<(u64, u64)>) {
        self.pubsub.next_answers.extend(asker);
        if self.pubsub.writing {
            self.pubsub.dirty = true;
        } else {
            self.write_subscriptions();
        }
        self.advertise_interest();
    }

    /// Floods this manager's advertisement if its interest changed.
    fn advertise_interest(&mut self) {
        let interest = self.pubsub.registry.interest();
        if let Some(own) = self.routing.set_interest(interest) {
            self.flood(&[own], None);
        }
    }

    fn write_subscriptions(&mut self) {
        let defs: Vec<SubscriptionDef> = self.pubsub.registry.durables().cloned().collect();
        let list: Vec<SubscriptionRecord<'_>> = defs
            .iter()
            .map(|def| SubscriptionRecord {
                name: def.name.as_str(),
                filter: def.filter.as_str(),
                max_depth: def.max_depth,
            })
            .collect();
        let payload = Bytes::from(record::encode(&Record::Subscriptions(list)));
        self.pubsub.writing = true;
        self.pubsub.dirty = false;
        let answers = std::mem::take(&mut self.pubsub.next_answers);
        let deleted = std::mem::take(&mut self.pubsub.next_deleted);
        let items = std::mem::take(&mut self.pubsub.next_items);
        let mut payloads = vec![payload];
        payloads.extend(super::publish::journaled(&items));
        let continuation = Continuation::Subscriptions {
            answers,
            deleted,
            items,
        };
        if payloads.len() == 1 {
            self.commit_freeing(payloads, continuation);
        } else {
            // New messages do not take the reserve kept for freeing writes.
            self.commit(payloads, continuation);
        }
    }

    /// A `Subscriptions` record landed (or not).
    pub(super) fn on_subscriptions_written(
        &mut self,
        (answers, deleted, items): (Vec<(u64, u64)>, Vec<QueueName>, Vec<PutItem>),
        result: Result<Vec<Location>, StoreError>,
        now: Now,
    ) {
        self.pubsub.writing = false;
        let answer = match result {
            Ok(locations) => {
                let mut locations = locations.into_iter();
                if let Some(new) = locations.next() {
                    self.retention.live(new.segment, new.len);
                    if let Some(old) = self.pubsub.record.replace(new) {
                        self.retention.dead(old.segment, old.len);
                    }
                }
                for name in &deleted {
                    self.remove_subscription_queue(name);
                }
                if !items.is_empty() {
                    self.apply_fanned(items, None, Ok(locations.collect()), now);
                }
                Ok(Reply::Done)
            }
            Err(error) => {
                warn!(%error, "writing the subscriptions failed; the next tick tries again");
                self.pubsub.dirty = true;
                self.pubsub.next_deleted.extend(deleted);
                // Written with the next attempt: the subscription exists here, so asking
                // again would not make them again.
                self.pubsub.next_items.extend(items);
                Err(api_error(&error))
            }
        };
        for (connection, request) in answers {
            self.reply(connection, request, answer.clone());
        }
        if self.pubsub.dirty && !self.pubsub.next_answers.is_empty() {
            self.write_subscriptions();
        }
    }

    /// Rewrites the subscriptions record when its segment sealed, or a failed write.
    pub(super) fn on_subscriptions_maintenance(&mut self) {
        if self.pubsub.writing {
            return;
        }
        let active = self.storage.active_segment();
        if self.pubsub.dirty || self.pubsub.record.is_some_and(|l| l.segment < active) {
            self.write_subscriptions();
        }
    }

    /// Link state brought new advertisements: the interest they carry.
    pub(super) fn interest_heard(&mut self, advertisements: &[Lsa]) {
        for lsa in advertisements {
            if lsa.origin != self.name {
                self.pubsub.interest.set(&lsa.origin, &lsa.interest);
            }
        }
    }

    /// The topology changed: managers no longer in it want nothing.
    pub(super) fn interest_topology_changed(&mut self) {
        let topology = self.routing.topology();
        self.pubsub
            .interest
            .retain(|m| topology.manager(m.as_str()).is_some());
    }

    /// `links` with their publications in and out.
    pub(super) fn with_publication_counts(
        &self,
        mut links: Vec<hopmq::protocol::LinkStatus>,
    ) -> Vec<hopmq::protocol::LinkStatus> {
        for link in &mut links {
            if let Some(&(received, sent)) = self.pubsub.links.get(link.neighbour.as_str()) {
                link.publications_received = received;
                link.publications_sent = sent;
            }
        }
        links
    }

    /// The managers a publication to `topic` published here now would go to (this one
    /// included if a subscription of its own matches): what a simulation's checker expects
    /// to reach. Empty for a topic that is not valid.
    pub fn publication_destinations(&self, topic: &str) -> Vec<ManagerName> {
        let Ok(topic) = hopmq_routing::topic::Topic::new(topic) else {
            return Vec::new();
        };
        self.publication_managers(&topic).into_iter().collect()
    }

    /// The managers a publication to `topic` published here goes to: those whose advertised
    /// interest matches it, and this one if a subscription of its own does.
    pub(super) fn publication_managers(
        &self,
        topic: &hopmq_routing::topic::Topic,
    ) -> BTreeSet<ManagerName> {
        let mut managers = BTreeSet::new();
        self.pubsub.interest.matching(topic, &mut managers);
        managers.remove(&self.name);
        if self.pubsub.registry.wants(topic) {
            managers.insert(self.name.clone());
        }
        managers
    }

    /// `ListSubscriptions`.
    pub(super) fn list_subscriptions(&self) -> Reply {
        let durable = self
            .pubsub
            .registry
            .durables()
            .map(|def| {
                let slot = self.queues.get(&def.name);
                DurableSubscription {
                    name: def.name.to_string(),
                    filter: def.filter.to_string(),
                    depth: slot.map_or(0, |s| s.queue.depth()),
                    max_depth: slot.map_or(self.limits.max_depth, Slot::max_depth),
                }
            })
            .collect();
        let transient = self
            .pubsub
            .registry
            .transients()
            .map(|(_, t)| TransientSubscription {
                filter: t.filter.to_string(),
                delivered: t.delivered,
                missed: t.missed,
            })
            .collect();
        let interest = self
            .pubsub
            .interest
            .by_manager()
            .iter()
            .map(|(manager, filters)| hopmq::protocol::Interest {
                manager: manager.to_string(),
                filters: filters.iter().map(ToString::to_string).collect(),
            })
            .collect();
        Reply::Subscriptions(SubscriptionListing {
            durable,
            transient,
            interest,
        })
    }
}

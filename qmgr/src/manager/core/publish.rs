//! Publications: published here, arriving from a neighbour, or waiting when the routes change,
//! a publication is split by [`Destinations::split`]: a copy into every matching durable
//! subscription of this manager and to its transient subscribers if this manager is in its
//! set, and one copy per next hop carrying that hop's share of the set (a `#…` destination).
//!
//! Invariants: every copy of one publication here is written in one journal group (with the
//! channel's state, for an arrival), so a crash keeps all or none; a full subscription's copy
//! goes to the dead-letter queue, never back to the publisher as an error (a subscriber never
//! blocks a publisher); transient subscribers are sent a persistent publication once its copies
//! here are durable (see `core::transient`).

use super::*;
use crate::pubsub::{Destinations, RETAINED_FOR_HEADER, RETAINED_REQUEST_HEADER};
use crate::record::StoredMessage;
use hopmq::protocol::TOPIC_HEADER;
use hopmq_routing::topic::Topic;

use crate::custody::{self, Admitted, STAMP_HEADER, Stamp, UNORDERED_HEADER, Verdict, Waiting};

use super::forward::{held_queue, transmission_queue};
use super::puts::check_batch;
use super::retained::Token;

/// A publication's copy's record: `stored` under `queue` and `seq`, going to `destination`,
/// with `hop` joined to its trace and `extra` headers.
pub(super) fn copy_record(
    stored: &StoredMessage<'_>,
    (queue, seq, destination): (&str, u64, &str),
    hop: Option<(&str, u64)>,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut copy = stored.clone();
    copy.queue = queue;
    copy.seq = seq;
    copy.destination = destination;
    if let Some(hop) = hop {
        copy.trace.push(hop);
    }
    for &(key, value) in extra {
        copy.set_header(key, Some(value));
    }
    record::encode(&Record::Enqueue(copy))
}

/// Why a publication whose stamp for this manager is older than custody remembers goes to
/// the dead-letter queue rather than to its subscriptions.
const FORGOTTEN_REASON: &str = "custody: its stamp is older than what this manager remembers, \
                                so this may be a second copy";

/// `stored` with its stamp header set to `stamps`, or dropped.
pub(super) fn with_stamps<'a>(
    stored: &StoredMessage<'a>,
    stamps: Option<&'a str>,
) -> StoredMessage<'a> {
    let mut copy = stored.clone();
    copy.set_header(STAMP_HEADER, stamps);
    copy
}

/// The records of the copies in `items` that are journaled (the non-persistent ones live in
/// memory only).
pub(super) fn journaled(items: &[PutItem]) -> impl Iterator<Item = Bytes> + '_ {
    items
        .iter()
        .filter(|item| item.persistent)
        .map(|item| item.payload.clone())
}

/// About what one copy of a publication of `bytes` (body and headers) takes in the journal:
/// its record adds the envelope and the trace.
fn copy_bytes(bytes: u64) -> u64 {
    bytes + 256
}

/// The topic a publication's record names, or why it names none.
pub(super) fn topic_of(stored: &StoredMessage<'_>) -> Result<Topic, String> {
    let topic = stored
        .headers
        .iter()
        .find(|(k, _)| *k == TOPIC_HEADER)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("a publication without its `{TOPIC_HEADER}` header"))?;
    Topic::new(topic).map_err(|e| e.to_string())
}

/// Where the copies a manager makes of a publication go besides `items`: the channel
/// assignments of its idle links, and the waiting gets its copies are handed to (their
/// removals written in the same group). Either may be absent: a publication split again when
/// routes change, or retained ones sent to a new subscription, take neither.
#[derive(Default)]
pub(super) struct Placing<'a> {
    pub(super) direct: Option<&'a mut Vec<forward::DirectLink>>,
    pub(super) handoffs: Option<Handoffs<'a>>,
    /// The shares for other managers go to the held messages, not to their next hops.
    pub(super) hold: bool,
    /// Bytes left in the journal group the copies join (`None`: no bound but the journal's).
    pub(super) room: Option<u64>,
    /// Where the custody admissions of this manager's stamps go, settled with the write
    /// (`None`: the copies carry none of this manager's stamps).
    pub(super) admitted: Option<&'a mut Vec<Admitted>>,
    /// The seqs of the publications of a received batch that wait whole with the held
    /// messages for want of `room`. Once one does, every later publication of the batch does
    /// too, and the batch's write splits them, in order, before the link's next batch (see
    /// [`Core::split_held_whole`]): a later publication never overtakes an earlier one there.
    pub(super) held_whole: Option<&'a mut Vec<u64>>,
    /// How an arriving publication's copies here keep their publisher's order (`None`: they
    /// are admitted without waiting, as when split again after the routes changed).
    pub(super) order: Option<Order<'a>>,
}

/// Resequencing for an arriving publication (see `crate::custody::resequence`): its copies here
/// wait, in memory, for the earlier publications of its stream its stamp names, as a queue
/// message waits for the earlier ones of its queue.
pub(super) struct Order<'a> {
    /// The neighbour it came from.
    pub(super) from: &'a ManagerName,
    /// It was held since then: held again, it keeps its deadline.
    pub(super) held_since_ms: Option<u64>,
    /// It leaves its hold without what it waited for, for this reason (its copies say so).
    pub(super) unordered: Option<String>,
    /// The held arrivals its admission releases, placed in the same write after it.
    pub(super) released: &'a mut Vec<Waiting>,
}

/// A write's hand-offs to waiting gets (see [`Core::hand_off`]).
pub(super) struct Handoffs<'a> {
    pub(super) handoffs: &'a mut Vec<Handoff>,
    pub(super) open: &'a mut FxHashMap<QueueName, usize>,
    /// Seqs of the messages handed off, removed in the same group.
    pub(super) handed_off: &'a mut Vec<u64>,
}

impl Core {
    /// `Publish`: every copy of every publication in one journal group, answered once durable.
    pub(super) fn publish(
        &mut self,
        (connection, request): (u64, u64),
        (publications, retain): (Vec<(String, OutgoingMessage)>, bool),
        then: AfterPut,
        now: Now,
    ) -> Result<Option<Reply>, ApiError> {
        let topics = self.check_publications(&publications, retain)?;
        let mut removed = Vec::new();
        let mut items = Vec::new();
        let mut direct = Vec::new();
        let (mut handoffs, mut open, mut handed_off) =
            (Vec::new(), FxHashMap::default(), Vec::new());
        let mut ids = Vec::with_capacity(publications.len());
        for ((_, mut message), topic) in publications.into_iter().zip(topics) {
            message
                .headers
                .insert(TOPIC_HEADER.to_owned(), topic.as_str().to_owned());
            let id = self.ids.next();
            ids.push(id);
            self.pubsub.totals.published += 1;
            let managers = self.publication_managers(&topic);
            if managers.is_empty() {
                self.pubsub.totals.unmatched += 1;
                if !retain {
                    continue;
                }
            }
            let destinations = Destinations::new(managers);
            let destination = destinations.encode();
            let stamps = message
                .persistent
                .then(|| self.stamp_publication(&destinations, &message, now.wall_ms))
                .flatten();
            let envelope = Envelope {
                seq: 0,
                queue: "",
                id,
                destination: &destination,
                origin: self.name.as_str(),
                put_at_ms: now.wall_ms,
                stamp: stamps.as_deref(),
            };
            let base = delivery::encode_put(&envelope, &message);
            let stored = delivery::stored(&base).map_err(|e| ApiError::Storage {
                detail: e.to_string(),
            })?;
            let copies = (&stored, &destinations, &topic);
            let placing = Placing {
                direct: Some(&mut direct),
                handoffs: Some(Handoffs {
                    handoffs: &mut handoffs,
                    open: &mut open,
                    handed_off: &mut handed_off,
                }),
                hold: false,
                room: None,
                admitted: None,
                held_whole: None,
                order: None,
            };
            self.fan_out(copies, None, message.persistent, (&mut items, placing), now);
            if retain {
                let kept = (&mut items, &mut removed);
                // Kept for later subscriptions, which are not those its stamps were for.
                let unstamped = with_stamps(&stored, None);
                self.retain_publication((&unstamped, &topic), message.persistent, kept, now);
            }
        }
        let mut journal: Vec<Bytes> = journaled(&items).collect();
        // Right after the copies, so the locations of both come first, in order.
        journal.extend(forward::direct_records(&direct));
        let answer = PutAnswer {
            connection,
            request,
            ids,
        };
        let continuation = Continuation::Put {
            answers: vec![answer],
            items,
            handoffs,
            direct,
            then,
        };
        let retire = removed.clone();
        // Removed in the same group: replaced retained publications and copies handed off.
        removed.extend(handed_off);
        self.commit_put(continuation, journal, removed, now);
        self.retire_retained_after_commit(retire);
        Ok(None)
    }

    /// The topics of a publish, once every publication passed every check: a batch is stored
    /// whole or not at all.
    fn check_publications(
        &self,
        publications: &[(String, OutgoingMessage)],
        retain: bool,
    ) -> Result<Vec<Topic>, ApiError> {
        check_batch(publications.len())?;
        let mut topics = Vec::with_capacity(publications.len());
        for (topic, message) in publications {
            let topic = Topic::new(topic.as_str()).map_err(|e| ApiError::BadRequest {
                reason: e.to_string(),
            })?;
            self.check_message(message)?;
            super::reports::check_publication(message)?;
            if retain {
                self.check_retain(&topic)?;
            }
            topics.push(topic);
        }
        self.check_copies_fit(publications, &topics, retain)?;
        Ok(topics)
    }

    /// Every journaled copy of a publish goes in one write: refused, with why, if they would
    /// not fit (a large publication matching many subscriptions here, or a large batch).
    fn check_copies_fit(
        &self,
        publications: &[(String, OutgoingMessage)],
        topics: &[Topic],
        retain: bool,
    ) -> Result<(), ApiError> {
        let mut bytes = 0u64;
        for ((_, message), topic) in publications.iter().zip(topics) {
            let copies = if message.persistent {
                let destinations = Destinations::new(self.publication_managers(topic));
                self.copies_of(&destinations, topic)
            } else {
                0
            } + u64::from(retain);
            let headers: usize = message.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
            bytes += copies * copy_bytes((message.body.len() + headers) as u64);
        }
        let room = self.copies_room();
        if bytes > room {
            return Err(ApiError::BadRequest {
                reason: format!(
                    "this publish makes about {bytes} bytes of copies here (one per matching \
                     subscription and per next hop, all written at once), more than one \
                     journal write holds ({room} bytes): publish fewer or smaller \
                     publications at a time"
                ),
            });
        }
        Ok(())
    }

    /// Bytes of one journal write that a publication's copies may take.
    fn copies_room(&self) -> u64 {
        self.storage
            .group_bytes_max()
            .saturating_sub(forward::ARRIVAL_GROUP_ROOM_BYTES)
    }

    /// The copies of one publication this manager makes, into `items`: one per matching
    /// durable subscription here, one per next hop; and its transient subscribers are sent it.
    ///
    /// With `direct`, a copy for an idle link is given to its channel in the same group (as a
    /// put or an arrival for another manager is: one write instead of two before it leaves).
    pub(super) fn fan_out(
        &mut self,
        (stored, destinations, topic): (&StoredMessage<'_>, &Destinations, &Topic),
        hop: Option<(&str, u64)>,
        persistent: bool,
        (items, mut placing): (&mut Vec<PutItem>, Placing<'_>),
        now: Now,
    ) {
        let (here, groups) = self.split(destinations);
        let stamps = stored.header(STAMP_HEADER).filter(|_| persistent);
        if here {
            let copies = (stored, topic);
            self.copies_here(
                copies,
                stamps,
                (hop, persistent),
                (&mut *items, &mut placing),
                now,
            );
        }
        for (next_hop, share) in groups {
            if !persistent {
                self.send_volatile(next_hop, stored, &share, hop);
                continue;
            }
            let next_hop = next_hop.filter(|_| !placing.hold);
            let queue = match &next_hop {
                Some(neighbour) => transmission_queue(neighbour),
                None => held_queue(),
            };
            if let Some(neighbour) = next_hop {
                self.pubsub.links.entry(neighbour).or_default().1 += 1;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            let share_stamps =
                stamps.and_then(|list| custody::stamps_for(list, |d| share.contains(d)));
            let mine = share_stamps.as_deref();
            if mine.is_some_and(|list| custody::stamped_by(list, self.name.as_str())) {
                // Its acknowledgement reads its record for the stamps to keep it for.
                self.custody.note_share(seq);
            }
            let restamped;
            let shared = match stamps {
                Some(_) => {
                    restamped = with_stamps(stored, share_stamps.as_deref());
                    &restamped
                }
                None => stored,
            };
            let record = copy_record(shared, (queue.as_str(), seq, &share.encode()), hop, &[]);
            let record = Bytes::from(record);
            // Asked before the copy is counted as on its way into the queue, which makes the
            // link look busy: the assignment goes in this write, not in one of its own after.
            let channel_seq = placing.direct.as_deref_mut().and_then(|direct| {
                let key = record::enqueue_dedup_key(&record).unwrap_or(stored.id);
                self.assign_direct(&queue, seq, key, &record, direct, now)
            });
            // A persistent copy that leaves this manager is journaled: a channel sequence
            // number may only name a message that survives a crash.
            let mut item = self.publication_item(queue, stored, (seq, record), (true, None), now);
            item.channel_seq = channel_seq;
            items.push(item);
        }
    }

    /// The copies of a publication for this manager, one of its destinations (see
    /// [`Self::fan_out`]): admitted by custody under this manager's stamp in `stamps`, held
    /// for an earlier publication of its stream if [`Placing::order`] says so.
    fn copies_here(
        &mut self,
        (stored, topic): (&StoredMessage<'_>, &Topic),
        stamps: Option<&str>,
        (hop, persistent): (Option<(&str, u64)>, bool),
        (items, placing): (&mut Vec<PutItem>, &mut Placing<'_>),
        now: Now,
    ) {
        // The copies here carry this manager's stamp alone: recovery finds in them what
        // custody accepted.
        let mine = stamps.and_then(|list| custody::stamp_in(list, self.name.as_str()));
        // Held once without what it waited for, it waits no more, and its copies say why.
        let unordered = placing.order.as_mut().and_then(|o| o.unordered.take());
        let ordered_at = placing
            .order
            .as_ref()
            .filter(|_| unordered.is_none())
            .map(|_| now.wall_ms);
        let restamped;
        let local = match stamps {
            Some(_) => {
                restamped = {
                    let mut local = with_stamps(stored, mine.map(|(text, _)| text));
                    if unordered.is_some() {
                        local.set_header(UNORDERED_HEADER, unordered.as_deref());
                    }
                    local
                };
                &restamped
            }
            None => stored,
        };
        let copies = (local, topic);
        let admission = mine.map(|(_, stamp)| {
            let admitted = placing.admitted.as_deref_mut();
            self.admit_publication(stamp, ordered_at, admitted)
        });
        if let (Some((_, stamp)), Some(Verdict::New)) = (mine, admission) {
            // What waited for it goes on after it.
            let released = placing.order.as_mut().map(|order| &mut *order.released);
            self.release_publications_after(stamp, released);
        }
        match admission {
            Some(Verdict::Duplicate) => {}
            Some(Verdict::Wait(after)) => {
                if let (Some((_, stamp)), Some(order)) = (mine, placing.order.as_ref()) {
                    let waiting = self.held_copies(local, order, now);
                    self.hold_arrival(stamp, after, waiting);
                }
            }
            Some(Verdict::Forgotten) => {
                let reason = FORGOTTEN_REASON;
                items.push(self.dead_letter_publication(local, hop, reason, now));
            }
            _ => self.deliver_all_here(copies, hop, persistent, (items, placing), now),
        }
    }

    /// The copies of a publication this manager is a destination of, for its subscriptions
    /// (or the subscription a retained one is for), or its answer to a retained request.
    fn deliver_all_here(
        &mut self,
        copies: (&StoredMessage<'_>, &Topic),
        hop: Option<(&str, u64)>,
        persistent: bool,
        (items, placing): (&mut Vec<PutItem>, &mut Placing<'_>),
        now: Now,
    ) {
        let stored = copies.0;
        if let Some(filter) = stored.header(RETAINED_REQUEST_HEADER) {
            self.answer_retained_request(stored, filter, items, now);
        } else if let Some(token) = stored.header(RETAINED_FOR_HEADER) {
            if let Some(token) = Token::parse(token) {
                let out = (&mut *items, placing.handoffs.as_mut());
                self.deliver_here(copies, hop, persistent, Some(&token), out, now);
            }
        } else {
            let out = (&mut *items, placing.handoffs.as_mut());
            self.deliver_here(copies, hop, persistent, None, out, now);
        }
    }

    /// Custody's verdict on this manager's stamp of an arriving publication; a new one's
    /// admission goes to `admitted`, to be settled with the write of its copies. With
    /// `ordered_at` (the wall clock now), one that came before an earlier publication of its
    /// stream must wait for it.
    fn admit_publication(
        &mut self,
        stamp: Stamp<'_>,
        ordered_at: Option<u64>,
        admitted: Option<&mut Vec<Admitted>>,
    ) -> Verdict {
        if mutation::active(Mutation::SkipCustodyDedup) {
            return Verdict::New;
        }
        let ordered_at =
            ordered_at.filter(|_| !mutation::active(Mutation::SkipPublicationResequencing));
        let (verdict, token) = self.custody.accepted.admit(stamp, ordered_at);
        match (token, admitted) {
            (Some(token), Some(admitted)) => admitted.push(token),
            // No write to settle it with: free again, so that the next copy is taken.
            (Some(token), None) => self.custody.accepted.failed(&[token]),
            (None, _) => {}
        }
        if verdict == Verdict::Duplicate {
            debug!(
                stamp = stamp.value(),
                "a second copy of a publication arrived; its copies here are dropped"
            );
        }
        verdict
    }

    /// The held publication that `stamp`'s admission here releases, if any, into `released`
    /// (placed in the same write), or else placed at the next tick.
    fn release_publications_after(
        &mut self,
        stamp: Stamp<'_>,
        released: Option<&mut Vec<Waiting>>,
    ) {
        let resequencer = &mut self.custody.resequencer;
        if let Some(waiting) = resequencer.waiter(stamp.custodian, stamp.epoch, stamp.number) {
            match released {
                Some(released) => released.push(waiting),
                None => self.custody.released.push(waiting),
            }
        }
    }

    /// What a publication held here for order keeps: its copies for this manager alone
    /// (`local` carries this manager's stamp only), as a neighbour would send them, so that
    /// its release makes them as an arrival does, and nothing for the other managers again.
    fn held_copies(&self, local: &StoredMessage<'_>, order: &Order<'_>, now: Now) -> Waiting {
        let here = Destinations::new(vec![self.name.clone()]).encode();
        let payload = copy_record(local, ("", 0, &here), None, &[]);
        Waiting {
            from: order.from.clone(),
            payload: Bytes::from(payload),
            expires_ms: local.expires_at_ms,
            since_ms: order.held_since_ms.unwrap_or(now.mono_ms),
        }
    }

    /// A publication's copy for this manager's dead-letter queue, for `reason`.
    fn dead_letter_publication(
        &mut self,
        stored: &StoredMessage<'_>,
        hop: Option<(&str, u64)>,
        reason: &str,
        now: Now,
    ) -> PutItem {
        warn!(%reason, "publication dead-lettered on arrival");
        let seq = self.next_seq;
        self.next_seq += 1;
        let record = copy_record(
            stored,
            (DEAD_LETTER_QUEUE, seq, stored.destination),
            hop,
            &[
                (DEAD_LETTER_REASON_HEADER, reason),
                (DEAD_LETTER_QUEUE_HEADER, stored.destination),
            ],
        );
        let (queue, kept) = (dead_letter_queue(), (true, None));
        self.publication_item(queue, stored, (seq, record), kept, now)
    }

    /// The copies of a publication for this manager's subscriptions (only `only`'s, for a
    /// retained publication sent to a new subscription), into `items`; transient subscribers
    /// are sent it.
    pub(super) fn deliver_here(
        &mut self,
        (stored, topic): (&StoredMessage<'_>, &Topic),
        hop: Option<(&str, u64)>,
        persistent: bool,
        only: Option<&Token>,
        (items, mut hand): (&mut Vec<PutItem>, Option<&mut Handoffs<'_>>),
        now: Now,
    ) {
        let mut queues = BTreeSet::new();
        let mut keys = BTreeSet::new();
        match only {
            None => {
                self.pubsub.registry.durable_matching(topic, &mut queues);
                self.pubsub.registry.transient_matching(topic, &mut keys);
            }
            Some(Token::Durable(name)) => {
                let wants = self.pubsub.registry.durable(name);
                if wants.is_some_and(|def| def.filter.matches(topic)) {
                    queues.insert(name.clone());
                }
            }
            Some(Token::Transient(connection, id)) => {
                keys.insert((*connection, *id));
            }
        }
        for queue in queues {
            let seq = self.next_seq;
            self.next_seq += 1;
            let slot = self.ensure_slot(&queue);
            let full = slot.held(0) >= slot.max_depth();
            let record = if full {
                let reason = format!(
                    "subscription `{queue}` is full (max_depth {})",
                    slot.max_depth()
                );
                warn!(%queue, "publication dead-lettered: its subscription is full");
                let headers = [
                    (DEAD_LETTER_REASON_HEADER, reason.as_str()),
                    (DEAD_LETTER_QUEUE_HEADER, queue.as_str()),
                ];
                copy_record(
                    stored,
                    (DEAD_LETTER_QUEUE, seq, queue.as_str()),
                    hop,
                    &headers,
                )
            } else {
                self.pubsub.totals.delivered += 1;
                copy_record(stored, (queue.as_str(), seq, queue.as_str()), hop, &[])
            };
            let target = if full { dead_letter_queue() } else { queue };
            // A waiting get takes it in the same group; only a journaled copy can be handed
            // off, its removal written with it.
            let handoff = match hand.as_deref_mut() {
                Some(hand) if persistent && !full => {
                    let correlation = stored.correlation_id;
                    let handoff = self.hand_off(&target, correlation, hand.handoffs, hand.open);
                    match handoff {
                        Some(_) => hand.handed_off.push(seq),
                        // A later copy must not overtake this one through a hand-off.
                        None => _ = hand.open.remove(&target),
                    }
                    handoff
                }
                _ => None,
            };
            let item =
                self.publication_item(target, stored, (seq, record), (persistent, handoff), now);
            items.push(item);
        }
        self.send_transient(&keys, stored, persistent);
    }

    pub(super) fn publication_item(
        &mut self,
        queue: QueueName,
        stored: &StoredMessage<'_>,
        (seq, record): (u64, impl Into<Bytes>),
        (persistent, handoff): (bool, Option<usize>),
        now: Now,
    ) -> PutItem {
        self.ensure_slot(&queue).accept(handoff.is_some());
        PutItem {
            queue,
            entry: Entry {
                seq,
                body: BodyRef::Memory,
                bytes: stored.body.len() as u32,
                priority: stored.priority,
                reports: hopmq::Reports::NONE,
                expires_at_ms: stored.expires_at_ms.unwrap_or(u64::MAX),
                put_at_ms: now.wall_ms,
                correlation: correlation_hash(stored.correlation_id),
                delivery_count: 0,
            },
            payload: record.into(),
            persistent,
            handoff,
            channel_seq: None,
        }
    }

    /// A publication arriving from `from`: its copies, into `items`. False if `payload` is not
    /// a publication (a queue message, placed as such).
    pub(super) fn publication_arrival(
        &mut self,
        from: &ManagerName,
        payload: &[u8],
        (items, placing): (&mut Vec<PutItem>, Placing<'_>),
        now: Now,
    ) -> bool {
        // Most arrivals are queue messages: told apart by their destination alone.
        let is_publication =
            record::enqueue_destination(payload).is_ok_and(Destinations::is_publication);
        if !is_publication {
            return false;
        }
        let Ok(passing) = record::Passing::read(payload) else {
            return false;
        };
        let Some(destinations) = Destinations::parse(passing.destination) else {
            return false;
        };
        if passing.expires_at_ms.is_some_and(|at| at <= now.wall_ms) {
            self.totals.expired += 1;
            return true;
        }
        let stored = match delivery::stored(payload) {
            Ok(stored) => stored,
            Err(error) => {
                error!(%from, %error, "a publication does not decode whole; dropped");
                return true;
            }
        };
        let hop = (self.name.as_str(), now.wall_ms);
        let checked = destinations
            .map_err(|e| e.to_string())
            .and_then(|d| topic_of(&stored).map(|t| (d, t)))
            .and_then(|(d, t)| {
                let estimate = self.copies_estimate(&d, &t, payload.len());
                self.copies_fit(estimate).map(|()| (d, t, estimate))
            });
        match checked {
            Ok((destinations, topic, estimate)) => {
                let mut placing = placing;
                // Copies of many publications of one batch may not fit one journal group
                // together (each fits alone): past the room left, a publication waits whole
                // with the held messages and is split in a write of its own, rather than fail
                // the batch on every resend and wedge the link. The later publications of the
                // batch wait behind it, whatever their size: they must not pass it.
                let behind_held = placing.held_whole.as_ref().is_some_and(|h| !h.is_empty());
                if behind_held || placing.room.is_some_and(|room| estimate > room) {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    let record = passing.rewrite(super::HELD_QUEUE, seq, hop);
                    let kept = (true, None);
                    items.push(self.publication_item(
                        held_queue(),
                        &stored,
                        (seq, record),
                        kept,
                        now,
                    ));
                    if let Some(held_whole) = placing.held_whole.as_deref_mut() {
                        held_whole.push(seq);
                    }
                    // The tick looks again should its split fail.
                    self.held_a_looping_message();
                    return true;
                }
                // Past the hop limit it has been going round while managers disagree on the
                // routes (routes are loop-free once they agree): what is for others waits
                // with the held messages for the routes to change, rather than be lost.
                if passing.hops > self.limits.max_hops as usize {
                    placing.hold = true;
                    self.held_a_looping_message();
                }
                let name = self.name.clone();
                let copies = (&stored, &destinations, &topic);
                let hop = Some((name.as_str(), now.wall_ms));
                self.fan_out(copies, hop, true, (items, placing), now);
            }
            Err(reason) => {
                let name = self.name.clone();
                let hop = Some((name.as_str(), now.wall_ms));
                let item = self.dead_letter_publication(&stored, hop, &reason, now);
                items.push(item);
            }
        }
        true
    }

    /// Whether this manager is among `destinations`, and the others by the next hop the routes
    /// in force give them (`None`: no route now).
    fn split(
        &self,
        destinations: &Destinations,
    ) -> (
        bool,
        std::collections::BTreeMap<Option<ManagerName>, Destinations>,
    ) {
        let routes = self.routing.routes();
        destinations.split(self.name.as_str(), |manager| {
            routes
                .route(manager.as_str())
                .and_then(|route| route.next_hop.clone())
        })
    }

    /// About the journal bytes of the copies this manager would make of a publication to
    /// `topic` for `destinations`, whose record is `len` bytes.
    fn copies_estimate(&self, destinations: &Destinations, topic: &Topic, len: usize) -> u64 {
        self.copies_of(destinations, topic) * copy_bytes(len as u64)
    }

    /// Whether copies of `estimate` bytes fit one journal write; if not, why, for the
    /// dead-letter queue: they could never be written together, and written apart a crash
    /// could leave some and lose the others.
    fn copies_fit(&self, estimate: u64) -> Result<(), String> {
        let room = self.copies_room();
        if estimate <= room {
            return Ok(());
        }
        Err(format!(
            "its copies here (one per matching subscription and per next hop) take about \
             {estimate} bytes, more than one journal write holds ({room} bytes)"
        ))
    }

    /// How many copies of a publication to `topic` for `destinations` this manager would make.
    fn copies_of(&self, destinations: &Destinations, topic: &Topic) -> u64 {
        let (here, groups) = self.split(destinations);
        let mut local = BTreeSet::new();
        if here {
            self.pubsub.registry.durable_matching(topic, &mut local);
        }
        (groups.len() + local.len()) as u64
    }

    /// A publication waiting in `queue` when the routes changed: split again with the routes
    /// in force. `None` if `entry` is not a publication; else whether it moved.
    pub(super) fn reroute_publication(
        &mut self,
        queue: &QueueName,
        entry: &Entry,
        now: Now,
    ) -> Option<bool> {
        let payload = self.payloads.get(entry, &*self.storage).ok()?;
        let stored = delivery::stored(&payload).ok()?;
        let destinations = Destinations::parse(stored.destination)?.ok()?;
        let topic = topic_of(&stored).ok()?;
        let (here, groups) = self.split(&destinations);
        let stays = !here
            && groups.len() == 1
            && groups.keys().next().is_some_and(|next| {
                let target = match next {
                    Some(neighbour) => transmission_queue(neighbour),
                    None => held_queue(),
                };
                target == *queue
            });
        if stays {
            return Some(false);
        }
        if let Err(reason) =
            self.copies_fit(self.copies_estimate(&destinations, &topic, payload.len()))
        {
            let old = self
                .queues
                .get_mut(queue)
                .and_then(|slot| slot.queue.remove(entry.seq))?;
            self.dead_letter(queue, old, &reason, now);
            return Some(true);
        }
        let old = self
            .queues
            .get_mut(queue)
            .and_then(|slot| slot.queue.remove(entry.seq))?;
        let (mut items, mut admitted, mut released) = (Vec::new(), Vec::new(), Vec::new());
        let copies = (&stored, &destinations, &topic);
        let me = self.name.clone();
        let placing = Placing {
            admitted: Some(&mut admitted),
            // Its copies here wait for earlier publications as an arrival's do; what its
            // admission releases goes at the next tick, after this write.
            order: Some(Order {
                from: &me,
                held_since_ms: None,
                unordered: None,
                released: &mut released,
            }),
            ..Placing::default()
        };
        self.fan_out(copies, None, true, (&mut items, placing), now);
        self.custody.released.extend(released);
        let mut journal: Vec<Bytes> = items.iter().map(|item| item.payload.clone()).collect();
        journal.push(record::encode(&Record::Remove(vec![old.seq])).into());
        self.commit(
            journal,
            Continuation::Fanned {
                items,
                old: Some((queue.clone(), old)),
                admitted,
            },
        );
        Some(true)
    }

    /// Splits the publications a received batch left waiting whole with the held messages
    /// (`seqs`, in arrival order) once that batch is durable, before the link's next batch is
    /// handled: each in a write of its own, and commits complete in order, so no later
    /// arrival's copy goes before theirs (nor is a later one handed to a waiting get or given
    /// to an idle link first: both wait while copies are on their way into the queue). A
    /// share with no route stays with the held messages, as it would have at arrival.
    pub(super) fn split_held_whole(&mut self, seqs: &[u64], now: Now) {
        let queue = held_queue();
        for &seq in seqs {
            let entry = self.queues.get(&queue).and_then(|slot| slot.queue.get(seq));
            if let Some(entry) = entry {
                self.reroute_publication(&queue, &entry, now);
            }
        }
    }

    /// Copies made by this manager on its own (a re-routed publication's, with its old place;
    /// retained ones for a new subscription, and its request for the others') are durable
    /// (or not).
    pub(super) fn apply_fanned(
        &mut self,
        items: Vec<PutItem>,
        old: Option<(QueueName, Entry)>,
        result: Result<Vec<Location>, StoreError>,
        now: Now,
    ) {
        match result {
            Ok(locations) => {
                let placed = self.place(
                    items,
                    &mut locations.into_iter(),
                    Vec::new(),
                    Vec::new(),
                    now,
                );
                if let Some((_, old)) = old {
                    self.forget(&old);
                }
                self.finish_placing(placed, now);
            }
            Err(error) => {
                error!(%error, "writing a publication's copies failed");
                self.place_failed(items, Vec::new(), Vec::new());
                if let Some((queue, old)) = old {
                    self.insert(&queue, old);
                }
            }
        }
    }
}

//! Puts: where an address leads (a local queue, or the waiting queue of another manager),
//! a batch validated whole before anything is stored, and the hand-off of a message put to an
//! empty queue straight to a waiting get (its removal in the same journal group).

// The core's types and imports: these handlers are part of `Core`, split by concern.
use super::*;
use crate::custody::Chain;
use hopmq::Report;
use hopmq::report::REPORTS_HEADER;

/// A request's messages: at least one, at most [`BATCH_MESSAGES_MAX`].
pub(super) fn check_batch(count: usize) -> Result<(), ApiError> {
    if count == 0 || count > BATCH_MESSAGES_MAX as usize {
        return Err(ApiError::BatchTooLarge {
            count: count as u64,
            limit: u64::from(BATCH_MESSAGES_MAX),
        });
    }
    Ok(())
}

/// No fewer bytes than the record `message`, put to `address`, is stored as: its body, its
/// addresses and headers, and room for the envelope and a stamp.
fn record_bytes_bound(address: &str, message: &OutgoingMessage) -> u64 {
    const ENVELOPE_BYTES_MAX: usize = 1024;
    let headers: usize = message
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.len() + 10)
        .sum();
    let more = [&message.correlation_id, &message.reply_to]
        .into_iter()
        .flatten()
        .map(String::len)
        .sum::<usize>();
    (message.body.len() + 2 * address.len() + headers + more + ENVELOPE_BYTES_MAX) as u64
}

/// What a put's commit leads to besides placing its messages.
#[derive(Debug)]
pub(crate) enum AfterPut {
    /// The put is answered with its messages' ids.
    Answer,
    /// A put that waits for arrival: its token in `custody::Arrivals`.
    Arrival(u64),
    /// A request: once it is durable its reply is waited for (see `core::conversations`).
    AwaitReply(Waiter),
    /// A reply: the leased request it answers, removed in the same group.
    Settle(Lease),
}

/// What kind of put a client asked for: what its commit leads to besides placing it.
pub(super) enum PutKind {
    /// Answered once durable.
    Plain,
    /// Answered once its messages arrived at their destinations, waiting up to this long.
    Arrived(u64),
    /// A request: its reply is waited for by this get (see `core::conversations`).
    Request(Waiter),
    /// A reply to this leased request, which is removed in the same write.
    Reply(Lease),
}

/// One plain put or batch a client asked for, as queued: see [`Core::put_coalesced`].
#[derive(Debug)]
pub(crate) struct PutAsk {
    pub connection: u64,
    pub request: u64,
    pub messages: Vec<(String, OutgoingMessage)>,
}

/// A request's messages, with the queue (and home manager) each goes to once checked.
type Checked = (
    Vec<(String, OutgoingMessage)>,
    Vec<(QueueName, Option<ManagerName>)>,
);

/// Whom a put's commit answers, and with which ids: each request of the group, in order.
#[derive(Debug)]
pub(crate) struct PutAnswer {
    pub connection: u64,
    pub request: u64,
    pub ids: Vec<MessageId>,
}

/// The requests staged into one journal group, and what their commit must do.
#[derive(Debug, Default)]
struct PutGroup {
    answers: Vec<PutAnswer>,
    items: Vec<PutItem>,
    /// The messages' records, in order; the channel assignments and removals follow them.
    journal: Vec<Bytes>,
    /// Bytes of `journal` so far.
    bytes: u64,
    /// Seqs of the messages handed to waiting gets, removed in the same group.
    handed_off: Vec<u64>,
    handoffs: Vec<Handoff>,
    /// Per queue, the hand-off still taking this group's messages.
    open: FxHashMap<QueueName, usize>,
    direct: Vec<forward::DirectLink>,
    /// The streams of the messages that leave, for a put that waits for their arrival.
    leaving: Vec<(String, u64, u64)>,
}

impl Core {
    /// Where a put to `address` goes: a local queue, or the queue of messages waiting to leave
    /// with the manager they go to.
    pub(super) fn resolve(
        &mut self,
        address: &str,
    ) -> Result<(QueueName, Option<ManagerName>), ApiError> {
        // Remembered per address, as arrivals are: parsing it and finding its route was a
        // fifth of a put's work per message.
        match self.routing.puts.get(address) {
            Some(routes::PutPlace::Local(queue)) => {
                return Ok((self.local_queue_named(queue.clone())?, None));
            }
            Some(routes::PutPlace::Waiting(queue, home)) => {
                let (queue, home) = (queue.clone(), home.clone());
                self.ensure_slot(&queue);
                return Ok((queue, Some(home)));
            }
            None => {}
        }
        let bad = |reason: String| ApiError::BadAddress {
            address: address.to_owned(),
            reason,
        };
        let parsed: Address = address
            .parse()
            .map_err(|e: hopmq::NameError| bad(e.to_string()))?;
        if parsed.queue.as_str().starts_with(SYSTEM_QUEUE_PREFIX)
            && !conversations::is_reply_queue(&parsed.queue)
        {
            return Err(bad(format!(
                "queue names starting with `{SYSTEM_QUEUE_PREFIX}` are reserved"
            )));
        }
        let home = match &parsed.manager {
            Some(manager) => manager.clone(),
            None => match self.routing.topology().queue(parsed.queue.as_str()) {
                Some(queue) => queue.home.clone(),
                None => self.name.clone(),
            },
        };
        if home == self.name {
            let queue = self.local_queue_named(parsed.queue)?;
            self.routing
                .remember_put(address, routes::PutPlace::Local(queue.clone()));
            return Ok((queue, None));
        }
        // Store and forward: the message waits in the transmission queue of its next hop, or
        // with the held messages while no route exists, until a channel takes it.
        let queue = self.route_to(&home).ok_or_else(|| ApiError::NoRoute {
            address: address.to_owned(),
            reason: format!("no manager `{home}` in the topology"),
        })?;
        self.routing.remember_put(
            address,
            routes::PutPlace::Waiting(queue.clone(), home.clone()),
        );
        Ok((queue, Some(home)))
    }

    pub(super) fn put(
        &mut self,
        connection: u64,
        request: u64,
        messages: Vec<(String, OutgoingMessage)>,
        kind: PutKind,
        now: Now,
    ) -> Result<Option<Reply>, ApiError> {
        check_batch(messages.len())?;
        // Validate everything first: a batch is stored whole or not at all.
        let targets = self.put_targets(&messages)?;
        let mut group = PutGroup::default();
        let wait_arrival = matches!(kind, PutKind::Arrived(_));
        self.stage_put(
            &mut group,
            (connection, request),
            (messages, targets),
            wait_arrival,
            now,
        );
        self.commit_put_group(group, kind, now);
        Ok(None)
    }

    /// Plain puts and batches queued by clients when one event began, in the order they came:
    /// each is checked and answered as if alone (one that fails is refused, the others go on),
    /// but their messages share journal groups: one write, one commit and one wake-up for many
    /// single calls.
    pub(super) fn put_coalesced(&mut self, asks: Vec<PutAsk>, now: Now) {
        // Requests join a group while it stays under half a journal group, so a request that
        // fits a group alone is never refused for its company (the other half is room for the
        // records that ride along: channel assignments, removals, reports).
        let shared_bytes_max = self.storage.group_bytes_max() / 2;
        let mut group = PutGroup::default();
        for PutAsk {
            connection,
            request,
            messages,
        } in asks
        {
            let bytes = messages
                .iter()
                .map(|(a, m)| record_bytes_bound(a, m))
                .sum::<u64>();
            if !group.answers.is_empty() && group.bytes + bytes > shared_bytes_max {
                self.commit_put_group(std::mem::take(&mut group), PutKind::Plain, now);
            }
            let checked = check_batch(messages.len()).and_then(|()| self.put_targets(&messages));
            match checked {
                Ok(targets) => {
                    self.stage_put(
                        &mut group,
                        (connection, request),
                        (messages, targets),
                        false,
                        now,
                    );
                }
                Err(error) => {
                    self.reply(connection, request, Err(error));
                }
            }
        }
        if !group.answers.is_empty() {
            self.commit_put_group(group, PutKind::Plain, now);
        }
    }

    /// Adds one request's checked messages to `group`: each is given its seq, id, record and
    /// stamp, and a waiting get or an idle link to go to if one takes it.
    fn stage_put(
        &mut self,
        group: &mut PutGroup,
        (connection, request): (u64, u64),
        (messages, targets): Checked,
        wait_arrival: bool,
        now: Now,
    ) {
        let mut ids = Vec::with_capacity(messages.len());
        for ((address, message), (queue, home)) in messages.iter().zip(targets) {
            // A message leaving this manager is always journaled: a channel sequence number
            // may only name a message that survives a crash (non-persistence ends here).
            let persistent = message.persistent || queue.as_str().starts_with(SYSTEM_QUEUE_PREFIX);
            let home = home.filter(|_| persistent);
            let stamp = home
                .as_ref()
                .map(|home| self.put_stamp(home, address, message, now));
            let (seq, id, payload, entry) =
                self.stored_put(address, message, &queue, stamp.as_deref(), now);
            if let Some(home) = &home {
                let leaving = wait_arrival.then_some(&mut group.leaving);
                self.custody.stamped_put(seq, home.as_str(), leaving);
            }
            let handoff = if persistent {
                group.bytes += payload.len() as u64;
                group.journal.push(payload.clone());
                self.hand_off(
                    &queue,
                    message.correlation_id.as_deref(),
                    &mut group.handoffs,
                    &mut group.open,
                )
            } else {
                None
            };
            if handoff.is_none() && !group.open.is_empty() {
                // A later message must not overtake this one through a hand-off.
                group.open.remove(&queue);
            }
            let channel_seq = if persistent {
                self.assign_direct(&queue, seq, id.0, &payload, &mut group.direct, now)
            } else {
                None
            };
            if let Some(slot) = self.queues.get_mut(&queue) {
                slot.accept(handoff.is_some());
            }
            if handoff.is_some() {
                group.handed_off.push(seq);
            }
            if home.is_none() && !entry.reports.is_empty() {
                self.put_reports((id, message), &queue, &entry, handoff.is_some(), now);
            }
            group.items.push(PutItem {
                queue,
                entry,
                payload,
                persistent,
                handoff,
                channel_seq,
            });
            ids.push(id);
        }
        group.answers.push(PutAnswer {
            connection,
            request,
            ids,
        });
    }

    /// Writes what `group` staged (or applies it at once if nothing needs writing).
    fn commit_put_group(&mut self, group: PutGroup, kind: PutKind, now: Now) {
        let PutGroup {
            answers,
            items,
            mut journal,
            mut handed_off,
            handoffs,
            direct,
            leaving,
            ..
        } = group;
        // Right after the messages, so the locations of both come first, in order.
        journal.extend(forward::direct_records(&direct));
        let asker = answers
            .first()
            .map_or((0, 0), |a| (a.connection, a.request));
        let then = self.after_put(kind, asker, leaving, &mut handed_off, now);
        let continuation = Continuation::Put {
            answers,
            items,
            handoffs,
            direct,
            then,
        };
        self.commit_put(continuation, journal, handed_off, now);
    }

    /// The reports a message put to a local queue owes at once: its arrival, and its
    /// delivery if a waiting get took it.
    fn put_reports(
        &mut self,
        (id, message): (MessageId, &OutgoingMessage),
        queue: &QueueName,
        entry: &Entry,
        handed: bool,
        now: Now,
    ) {
        let Some(reply_to) = message.reply_to.as_deref() else {
            return;
        };
        let about = reports::About {
            id: id.0,
            reply_to,
            queue: queue.as_str(),
            priority: message.priority,
        };
        if entry.reports.has(Report::Arrival) && reports::is_destination(queue) {
            self.report(Report::Arrival, &about, None, now);
        }
        if handed && entry.reports.has(Report::Delivery) {
            self.report(Report::Delivery, &about, None, now);
        }
    }

    /// What a put's commit leads to: an answer, an arrival to wait for (registered now,
    /// before the write: a confirmation can never come before its waiter), a reply to wait
    /// for, or a leased request to settle (removed in the same group, with `handed_off`).
    fn after_put(
        &mut self,
        kind: PutKind,
        asker: (u64, u64),
        leaving: Vec<(String, u64, u64)>,
        handed_off: &mut Vec<u64>,
        now: Now,
    ) -> AfterPut {
        match kind {
            PutKind::Plain => AfterPut::Answer,
            PutKind::Arrived(timeout_ms) => AfterPut::Arrival(self.custody.arrivals.wait(
                asker,
                leaving,
                (now.mono_ms, timeout_ms),
            )),
            PutKind::Request(waiter) => AfterPut::AwaitReply(waiter),
            PutKind::Reply(lease) => {
                let request = std::iter::once(&lease.entry);
                self.report_entries(Report::Delivery, &lease.queue, request, None, now);
                // The request goes in the reply's group: a reply is sent once per request.
                if !matches!(lease.entry.body, BodyRef::Memory) {
                    handed_off.push(lease.entry.seq);
                }
                AfterPut::Settle(lease)
            }
        }
    }

    /// Writes a put's records (the messages, their channel assignments, then the removal of
    /// those handed off), or applies it at once if nothing needs writing.
    pub(super) fn commit_put(
        &mut self,
        continuation: Continuation,
        mut journal_payloads: Vec<Bytes>,
        handed_off: Vec<u64>,
        now: Now,
    ) {
        if let Continuation::Put {
            answers,
            then: AfterPut::Answer,
            ..
        } = &continuation
        {
            if mutation::active(Mutation::AckBeforeDurable) {
                for answer in answers {
                    let ids = Ok(Reply::Put(answer.ids.clone()));
                    self.reply(answer.connection, answer.request, ids);
                }
            }
        }
        if journal_payloads.is_empty() && handed_off.is_empty() {
            self.apply(continuation, Ok(Vec::new()), now);
        } else {
            if !handed_off.is_empty() {
                // Last in the group, so the locations of the messages come first, in order.
                journal_payloads.push(record::encode(&Record::Remove(handed_off)).into());
            }
            self.commit(journal_payloads, continuation);
        }
    }

    /// The queue each message of a put goes to, once every message passed every check (size,
    /// priority, address, the queue's depth with the batch's own messages counted).
    fn put_targets(
        &mut self,
        messages: &[(String, OutgoingMessage)],
    ) -> Result<Vec<(QueueName, Option<ManagerName>)>, ApiError> {
        let mut targets = Vec::with_capacity(messages.len());
        let mut added: FxHashMap<QueueName, u64> = FxHashMap::default();
        for (address, message) in messages {
            let bytes = message.body.len() as u64;
            self.check_message(message)?;
            let (queue, home) = self.resolve(address)?;
            if let Some(limit) = self
                .routing
                .topology()
                .queue(queue.as_str())
                .and_then(|q| q.max_message_bytes)
            {
                if bytes > limit {
                    return Err(ApiError::MessageTooLarge { bytes, limit });
                }
            }
            let count = added.entry(queue.clone()).or_default();
            *count += 1;
            let slot = &self.queues[&queue];
            let held = slot.held(self.leases.leased(queue.as_str()));
            if held + *count > slot.max_depth() {
                return Err(ApiError::QueueFull {
                    queue: queue.to_string(),
                    max_depth: slot.max_depth(),
                });
            }
            targets.push((queue, home));
        }
        Ok(targets)
    }

    /// The checks every message a client submits passes: its size, priority and headers.
    pub(super) fn check_message(&self, message: &OutgoingMessage) -> Result<(), ApiError> {
        let bytes = message.body.len() as u64;
        if bytes > self.limits.max_message_bytes {
            return Err(ApiError::MessageTooLarge {
                bytes,
                limit: self.limits.max_message_bytes,
            });
        }
        if message.priority > PRIORITY_MAX {
            return Err(ApiError::BadRequest {
                reason: format!("priority {} is over {PRIORITY_MAX}", message.priority),
            });
        }
        custody::check_headers(&message.headers)?;
        reports::check(message)
    }

    /// The stamp of `message`, put for `address` whose home is the manager `home`.
    fn put_stamp(
        &mut self,
        home: &ManagerName,
        address: &str,
        message: &OutgoingMessage,
        now: Now,
    ) -> String {
        let chain = Chain {
            queue: address.split('@').next().unwrap_or(address),
            priority: message.priority,
            expires_ms: message.ttl_ms.map(|ttl| now.wall_ms.saturating_add(ttl)),
        };
        self.stamp_for(home, chain)
    }

    /// A new message's seq, id, record (as journaled and forwarded) and queue entry.
    pub(super) fn stored_put(
        &mut self,
        address: &str,
        message: &OutgoingMessage,
        queue: &QueueName,
        stamp: Option<&str>,
        now: Now,
    ) -> (u64, MessageId, Bytes, Entry) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = self.ids.next();
        let envelope = Envelope {
            seq,
            queue: queue.as_str(),
            id,
            destination: address,
            origin: self.name.as_str(),
            put_at_ms: now.wall_ms,
            stamp,
        };
        let payload = Bytes::from(delivery::encode_put(&envelope, message));
        let entry = Entry {
            seq,
            body: BodyRef::Memory,
            bytes: message.body.len() as u32,
            priority: message.priority,
            reports: reports::requested(
                message.headers.get(REPORTS_HEADER).map(String::as_str),
                queue.as_str(),
            ),
            expires_at_ms: message
                .ttl_ms
                .map_or(u64::MAX, |ttl| now.wall_ms.saturating_add(ttl)),
            put_at_ms: now.wall_ms,
            correlation: correlation_hash(message.correlation_id.as_deref()),
            delivery_count: 0,
        };
        (seq, id, payload, entry)
    }

    /// The hand-off a message put to `queue` joins, if any: the one this put opened for the
    /// queue while it has room, else a newly claimed waiting get.
    pub(super) fn hand_off(
        &mut self,
        queue: &QueueName,
        correlation_id: Option<&str>,
        handoffs: &mut Vec<Handoff>,
        open: &mut FxHashMap<QueueName, usize>,
    ) -> Option<usize> {
        if let Some(&index) = open.get(queue) {
            let handoff = &mut handoffs[index];
            let matches = handoff
                .correlation_id
                .as_deref()
                .is_none_or(|c| Some(c) == correlation_id);
            if handoff.taken < handoff.max && matches {
                handoff.taken += 1;
                return Some(index);
            }
        }
        let mut handoff = self.claim_waiter(queue, correlation_id)?;
        handoff.taken = 1;
        handoffs.push(handoff);
        open.insert(queue.clone(), handoffs.len() - 1);
        Some(handoffs.len() - 1)
    }

    /// The first waiting get that takes this message as it is put, if the queue is empty and
    /// nothing but other hand-offs is on its way into it (so put order is kept). Leased gets
    /// are served the usual way.
    pub(super) fn claim_waiter(
        &mut self,
        queue: &QueueName,
        correlation_id: Option<&str>,
    ) -> Option<Handoff> {
        let slot = self.queues.get(queue)?;
        if !slot.all_claimed() {
            return None;
        }
        let waiter_id = self.waiters.first_in_line(queue, |w| {
            w.lease_ms.is_none()
                && w.correlation_id
                    .as_deref()
                    .is_none_or(|c| Some(c) == correlation_id)
        })?;
        let waiter = self.waiters.remove(waiter_id)?;
        Some(Handoff {
            connection: waiter.connection,
            request: waiter.request,
            deadline_ms: waiter.deadline_ms,
            max: waiter.max,
            correlation_id: waiter.correlation_id,
            taken: 0,
        })
    }

    /// Puts a waiting get claimed by a put that failed back at the head of its queue's line.
    pub(super) fn unclaim(&mut self, queue: &QueueName, handoff: Handoff) {
        if !self.clients.is_connected(handoff.connection) {
            return;
        }
        let waiter = Waiter {
            connection: handoff.connection,
            request: handoff.request,
            queue: queue.clone(),
            max: handoff.max,
            correlation_id: handoff.correlation_id,
            lease_ms: None,
            deadline_ms: handoff.deadline_ms,
        };
        self.waiters.add(waiter, true);
    }
}

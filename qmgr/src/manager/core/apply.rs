//! Commits completed: each one's continuation makes its effect visible and answers whoever
//! waits for it (persist, then acknowledge), or undoes its bookkeeping when the write failed.

// The core's types and imports: these handlers are part of `Core`, split by concern.
use super::*;

/// What a put placed: its items, hand-offs and direct channel assignments.
type PutParts = (Vec<PutItem>, Vec<Handoff>, Vec<forward::DirectLink>);

impl Core {
    /// Applies the outcome of the oldest commit in flight: commits complete in the order
    /// they were made.
    pub fn on_commit(&mut self, result: Result<Vec<Location>, StoreError>, now: Now) {
        self.event_now = now;
        let Some(continuation) = self.commits.completed() else {
            error!("a commit completed that the core did not make; ignored");
            return;
        };
        let (result, reports) = self.reporting.landed(self.commits.done(), result);
        let durable = result.is_ok();
        self.apply(continuation, result, now);
        if let Some(reports) = reports {
            self.place_reports(reports, now);
        }
        self.transient_after_write(self.commits.done(), durable);
        self.after_commit(now);
        self.retire_retained();
        self.retire_dead_segments();
        self.end_event();
    }

    /// Makes a durable effect visible and acknowledges it; also the path of effects that
    /// needed no journal write.
    pub(super) fn apply(
        &mut self,
        continuation: Continuation,
        result: Result<Vec<Location>, StoreError>,
        now: Now,
    ) {
        match continuation {
            Continuation::Put {
                answers,
                items,
                handoffs,
                direct,
                then,
            } => self.apply_put(answers, (items, handoffs, direct), then, result, now),
            Continuation::Get(taken) => {
                let outcome = result.map(drop).map_err(|error| api_error(&error));
                self.apply_get(taken, outcome, now);
            }
            Continuation::Gets(gets) => {
                let outcome = result.map(drop).map_err(|error| api_error(&error));
                for taken in gets {
                    self.apply_get(taken, outcome.clone(), now);
                }
            }
            Continuation::Ack {
                connection,
                request,
                leases,
            } => match result {
                Ok(_) => {
                    for lease in &leases {
                        self.forget(&lease.entry);
                    }
                    self.reply(connection, request, Ok(Reply::Done));
                }
                Err(error) => {
                    for lease in leases {
                        self.give_back(lease.queue, lease.entry, now);
                    }
                    self.reply(connection, request, Err(api_error(&error)));
                }
            },
            Continuation::Drained {
                connection,
                request,
                drained,
            } => {
                let answer = self.apply_drained(drained, result, now);
                self.reply(connection, request, answer);
            }
            Continuation::Removed { entries } => {
                if let Err(error) = result {
                    // They stay in the journal and expire again after a restart.
                    warn!(%error, "recording expired messages failed");
                }
                for entry in &entries {
                    self.forget(entry);
                }
            }
            Continuation::Link(write) => self.on_link_write(write, result, now),
            Continuation::Custody { covered } => self.on_custody_written(covered, result),
            Continuation::Relocated {
                seq,
                assigned,
                old_segment,
                old_len,
            } => self.apply_relocated(seq, assigned, (old_segment, old_len), result),
            Continuation::Moved { item, old } => self.apply_moved(item, old, result, now),
            Continuation::Operator(batch) => self.apply_operator(batch, result, now),
            Continuation::Subscriptions {
                answers,
                deleted,
                items,
            } => self.on_subscriptions_written((answers, deleted, items), result, now),
            Continuation::Fanned {
                items,
                old,
                admitted,
            } => {
                self.admitted_written(&admitted, &result);
                self.apply_fanned(items, old, result, now);
            }
        }
    }

    /// A put is durable (or failed): its messages take their places, and it is answered, or
    /// waits for their arrival.
    fn apply_put(
        &mut self,
        answers: Vec<PutAnswer>,
        (items, handoffs, direct): PutParts,
        then: AfterPut,
        result: Result<Vec<Location>, StoreError>,
        now: Now,
    ) {
        match result {
            Err(error) => {
                warn!(%error, "put failed");
                self.place_failed(items, handoffs, direct);
                match then {
                    AfterPut::Arrival(token) => self.custody.arrivals.failed(token),
                    AfterPut::Settle(lease) => self.give_back(lease.queue, lease.entry, now),
                    AfterPut::Answer | AfterPut::AwaitReply(_) => {}
                }
                for answer in answers {
                    self.reply(answer.connection, answer.request, Err(api_error(&error)));
                }
            }
            Ok(locations) => {
                let placed = self.place(items, &mut locations.into_iter(), handoffs, direct, now);
                for answer in answers {
                    self.totals.put += answer.ids.len() as u64;
                    let (connection, request, ids) =
                        (answer.connection, answer.request, answer.ids);
                    match &then {
                        AfterPut::Arrival(token) => {
                            let answer = self.custody.arrivals.durable(*token, ids);
                            self.answer_arrivals(answer);
                        }
                        // Answered by the reply, awaited below.
                        AfterPut::AwaitReply(_) => {}
                        AfterPut::Settle(_) => {
                            self.reply(connection, request, Ok(Reply::Put(ids)));
                        }
                        AfterPut::Answer => {
                            if !mutation::active(Mutation::AckBeforeDurable) {
                                self.reply(connection, request, Ok(Reply::Put(ids)));
                            }
                        }
                    }
                }
                match then {
                    // Before the messages go on (`finish_placing`): no reply can come before
                    // its waiter.
                    AfterPut::AwaitReply(waiter) => self.await_reply(waiter),
                    AfterPut::Settle(lease) => self.forget(&lease.entry),
                    AfterPut::Answer | AfterPut::Arrival(_) => {}
                }
                self.finish_placing(placed, now);
            }
        }
    }

    /// A destructive get's removal is durable (or failed): hand the messages over, or put
    /// them back.
    pub(super) fn apply_get(
        &mut self,
        taken: super::gets::Taken,
        outcome: Result<(), ApiError>,
        now: Now,
    ) {
        let super::gets::Taken {
            connection,
            request,
            queue,
            entries,
            reply,
        } = taken;
        let queue = &queue;
        if let Err(error) = outcome {
            self.hand_back(connection, request, queue, entries, error);
            self.serve_waiters(queue, now);
            return;
        }
        let count = entries.len() as u64;
        if self.send_to(connection, ToClient::Encoded(reply)) {
            self.totals.delivered += count;
            for entry in &entries {
                self.forget(entry);
            }
            return;
        }
        // The getter left while its removal was being written: nobody has these messages, so
        // they are stored again, in place.
        info!(%queue, count, "getter left before its messages were handed over; restoring them");
        for mut entry in entries {
            entry.delivery_count -= 1;
            self.restore(queue, entry, now);
        }
    }

    /// A compacted copy of message `seq` is durable: it becomes the live one if the message is
    /// still here.
    fn apply_relocated(
        &mut self,
        seq: u64,
        assigned: Option<(ManagerName, u64)>,
        (old_segment, old_len): (u64, u32),
        result: Result<Vec<Location>, StoreError>,
    ) {
        self.retention.relocation_ended();
        let location = match result {
            Ok(locations) => match locations.first() {
                Some(&location) => location,
                None => return,
            },
            Err(error) => {
                warn!(%error, "compaction write failed; the segment stays");
                return;
            }
        };
        // The copy counts only if the message is still queued: one taken meanwhile has its
        // removal written after this copy, so the copy is dead on replay too.
        let new_body = journal_ref(location);
        // A message given to a channel may have gone back to a queue meanwhile. One queued then
        // given to a channel keeps pointing at its old record, which stays live: safe, only
        // not compacted this time.
        let moved = assigned.is_some_and(|(neighbour, channel_seq)| {
            self.relocate_assigned(&neighbour, channel_seq, seq, new_body)
        }) || self
            .queues
            .values_mut()
            .any(|slot| slot.queue.relocate(seq, new_body))
            || self.custody.kept.relocate(seq, new_body);
        if moved {
            self.retention.dead(old_segment, old_len);
            self.retention.live(location.segment, location.len);
        }
    }

    /// A message moved (dead-lettered, or written back after a failed hand-over) is durable
    /// in its new place, or stays where it was.
    fn apply_moved(
        &mut self,
        mut item: PutItem,
        old: Option<(QueueName, Entry)>,
        result: Result<Vec<Location>, StoreError>,
        now: Now,
    ) {
        if let Some(slot) = self.queues.get_mut(&item.queue) {
            slot.settle(false);
        }
        match result {
            Ok(locations) => {
                if let Some(&location) = locations.first() {
                    item.entry.body = journal_ref(location);
                    self.retention.live(location.segment, location.len);
                }
                let moved = old.is_some();
                if let Some((_, old)) = old {
                    self.forget(&old);
                }
                self.payloads.keep(&item.entry, item.payload.clone());
                self.insert(&item.queue, item.entry);
                // A message written back after a failed hand-over was announced already.
                if moved {
                    self.notify_subscribers(&item);
                }
                self.serve_waiters(&item.queue, now);
            }
            Err(error) => match old {
                Some((from, old)) => {
                    error!(%error, queue = %from, "moving a message failed; it stays where it was");
                    self.insert(&from, old);
                }
                None => {
                    // Its removal is durable and its copy could not be written: keep it in
                    // memory, where it is still delivered, rather than lose it.
                    error!(%error, queue = %item.queue, seq = item.entry.seq,
                        "writing a message back failed; it is kept in memory only until delivered");
                    let entry = Entry {
                        body: BodyRef::Memory,
                        ..item.entry
                    };
                    self.payloads.keep(&entry, item.payload);
                    self.insert(&item.queue, entry);
                    self.serve_waiters(&item.queue, now);
                }
            },
        }
    }

    /// Undoes the bookkeeping of messages whose write failed: nothing of them is stored.
    pub(super) fn place_failed(
        &mut self,
        items: Vec<PutItem>,
        handoffs: Vec<Handoff>,
        direct: Vec<forward::DirectLink>,
    ) {
        let mut queues = vec![None; handoffs.len()];
        for item in items {
            if let Some(slot) = self.queues.get_mut(&item.queue) {
                slot.settle(item.handoff.is_some());
            }
            if let Some(index) = item.handoff {
                queues[index] = Some(item.queue);
            }
        }
        // Back in line in reverse, each at the front: the original order.
        for (handoff, queue) in handoffs.into_iter().zip(queues).rev() {
            if let Some(queue) = queue {
                self.unclaim(&queue, handoff);
            }
        }
        self.direct_failed(direct);
    }

    /// Makes durable messages visible: into their queues, to the gets they were handed to, or
    /// to the link senders they were assigned to. `locations` yields the messages' records,
    /// then the direct assignments' records. Waiters are served by [`Core::finish_placing`],
    /// after the caller has acknowledged the write.
    pub(super) fn place(
        &mut self,
        items: Vec<PutItem>,
        locations: &mut impl Iterator<Item = Location>,
        handoffs: Vec<Handoff>,
        direct: Vec<forward::DirectLink>,
        now: Now,
    ) -> Placed {
        let mut touched = BTreeSet::new();
        let mut handed: Vec<Vec<PutItem>> = handoffs.iter().map(|_| Vec::new()).collect();
        for mut item in items {
            if let Some(slot) = self.queues.get_mut(&item.queue) {
                slot.settle(item.handoff.is_some());
            }
            self.notify_subscribers(&item);
            if let Some(index) = item.handoff {
                // Written and removed in one commit: never live in the journal.
                let _ = locations.next();
                item.entry.delivery_count = 1;
                handed[index].push(item);
                continue;
            }
            if item.persistent {
                if let Some(location) = locations.next() {
                    item.entry.body = journal_ref(location);
                    self.retention.live(location.segment, location.len);
                }
            }
            self.payloads.keep(&item.entry, item.payload.clone());
            match item.channel_seq {
                Some(channel_seq) => {
                    self.place_assigned(item.queue, item.entry, channel_seq, now);
                }
                None => {
                    self.insert(&item.queue, item.entry);
                    touched.insert(item.queue);
                }
            }
        }
        let direct = self.direct_placed(direct, locations);
        Placed {
            handed: handoffs.into_iter().zip(handed).collect(),
            touched,
            direct,
        }
    }

    /// The rest of [`Core::place`]: answer hand-offs, serve waiters, let links send.
    pub(super) fn finish_placing(&mut self, placed: Placed, now: Now) {
        for (handoff, items) in placed.handed {
            self.complete_handoff(handoff, items, now);
        }
        for queue in placed.touched {
            self.serve_waiters(&queue, now);
        }
        for neighbour in placed.direct {
            self.direct_finished(&neighbour, now);
        }
    }

    /// Answers the get a put's messages were handed to; if its getter left meanwhile, the
    /// messages are stored again, since nobody has them.
    pub(super) fn complete_handoff(&mut self, handoff: Handoff, items: Vec<PutItem>, now: Now) {
        let messages: Vec<_> = items
            .iter()
            .map(|item| (&item.payload[..], &item.entry, None, true))
            .collect();
        let handed = match delivery::messages_reply(handoff.request, &messages) {
            Ok(reply) => self.send_to(handoff.connection, ToClient::Encoded(reply)),
            Err(error) => {
                error!(%error, "cannot hand messages over to a getter");
                self.reply(
                    handoff.connection,
                    handoff.request,
                    Err(ApiError::Storage {
                        detail: error.to_string(),
                    }),
                );
                false
            }
        };
        if handed {
            self.totals.delivered += items.len() as u64;
            return;
        }
        for item in items {
            let entry = Entry {
                delivery_count: 0,
                ..item.entry
            };
            let (entry, payload) = self.delivery_reported(entry, item.payload);
            self.rewrite(&item.queue, entry, payload, true, now);
        }
    }

    /// Stores a removed message again under its own seq (so it keeps its place).
    pub(super) fn restore(&mut self, queue: &QueueName, entry: Entry, now: Now) {
        let payload = match self.payloads.get(&entry, &*self.storage) {
            Ok(payload) => payload,
            Err(error) => {
                error!(%error, %queue, seq = entry.seq, "cannot restore a message whose getter left");
                return;
            }
        };
        self.forget(&entry);
        let persistent = !matches!(entry.body, BodyRef::Memory);
        // Only a get whose getter left restores: its removal reported the delivery.
        let (entry, payload) = self.delivery_reported(entry, payload);
        self.rewrite(queue, entry, payload, persistent, now);
    }

    /// Writes a message's record again, then puts the message back into `queue`.
    pub(super) fn rewrite(
        &mut self,
        queue: &QueueName,
        mut entry: Entry,
        payload: Bytes,
        persistent: bool,
        now: Now,
    ) {
        self.ensure_slot(queue).accept(false);
        if !persistent {
            entry.body = BodyRef::Memory;
        }
        let item = PutItem {
            queue: queue.clone(),
            entry,
            payload: payload.clone(),
            persistent,
            handoff: None,
            channel_seq: None,
        };
        if persistent {
            self.commit_freeing(vec![payload], Continuation::Moved { item, old: None });
        } else {
            self.apply(Continuation::Moved { item, old: None }, Ok(Vec::new()), now);
        }
    }

    /// Drops a message's payload and its claim on its segment.
    pub(super) fn forget(&mut self, entry: &Entry) {
        self.payloads.forget(entry);
        self.custody.forget_sent(entry.seq);
        if let Some(location) = entry.body.location() {
            self.retention.dead(location.segment, location.len);
        }
    }
}

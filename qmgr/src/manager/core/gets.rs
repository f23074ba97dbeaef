//! Gets, leases and what becomes of a message taken: destructive gets answered once their
//! removal is durable, leased gets answered at once and settled by ack or nack, messages given
//! back or dead-lettered, browsing.

// The core's types and imports: these handlers are part of `Core`, split by concern.
use super::*;
use hopmq::Report;

/// Messages taken by a destructive get, answered once their removal is durable.
#[derive(Debug)]
pub(crate) struct Taken {
    pub(super) connection: u64,
    pub(super) request: u64,
    pub(super) queue: QueueName,
    pub(super) entries: Vec<Entry>,
    /// The `Messages` reply, encoded.
    pub(super) reply: Vec<u8>,
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn get(
        &mut self,
        connection: u64,
        request: u64,
        queue: &str,
        timeout_ms: u64,
        max: u32,
        correlation_id: Option<String>,
        lease_ms: Option<u64>,
        now: Now,
    ) -> Result<Option<Reply>, ApiError> {
        if max == 0 || max > BATCH_MESSAGES_MAX {
            return Err(ApiError::BadRequest {
                reason: format!("max must be 1 to {BATCH_MESSAGES_MAX}, not {max}"),
            });
        }
        let queue = self.app_queue(queue)?;
        let waiter = Waiter {
            connection,
            request,
            queue: queue.clone(),
            max: max as usize,
            correlation_id,
            lease_ms,
            deadline_ms: now.mono_ms.saturating_add(timeout_ms),
        };
        if self.try_serve(&waiter, now) {
            return Ok(None);
        }
        if timeout_ms == 0 {
            return Ok(Some(Reply::Messages(Vec::new())));
        }
        self.waiters.add(waiter, false);
        Ok(None)
    }

    /// Takes messages for `waiter` if any qualify, and starts handing them over.
    pub(super) fn try_serve(&mut self, waiter: &Waiter, now: Now) -> bool {
        let correlation = waiter
            .correlation_id
            .as_deref()
            .map(|id| correlation_hash(Some(id)));
        let Some(slot) = self.queues.get_mut(&waiter.queue) else {
            return false;
        };
        let (payloads, journal) = (&self.payloads, &*self.storage);
        let taken = slot.queue.take_within(
            now.wall_ms,
            waiter.max,
            REPLY_RECORD_BYTES_MAX,
            |entry| payloads.record_bytes(entry),
            correlation,
            |entry| {
                payloads
                    .get(entry, journal)
                    .ok()
                    .and_then(|p| {
                        delivery::stored(&p)
                            .ok()
                            .map(|s| s.correlation_id == waiter.correlation_id.as_deref())
                    })
                    .unwrap_or(false)
            },
        );
        self.remove_expired(taken.expired);
        if taken.entries.is_empty() {
            return false;
        }
        self.hand_over(
            waiter.connection,
            waiter.request,
            waiter.queue.clone(),
            taken.entries,
            waiter.lease_ms,
            now,
        );
        true
    }

    pub(super) fn hand_over(
        &mut self,
        connection: u64,
        request: u64,
        queue: QueueName,
        mut entries: Vec<Entry>,
        lease_ms: Option<u64>,
        now: Now,
    ) {
        for entry in &mut entries {
            entry.delivery_count += 1;
        }
        let reply = match self.get_reply(connection, request, &queue, &entries, lease_ms, now) {
            Ok(reply) => reply,
            Err(reason) => {
                error!(%queue, %reason, "cannot hand messages over to a getter");
                let error = ApiError::Storage { detail: reason };
                return self.hand_back(connection, request, &queue, entries, error);
            }
        };
        if lease_ms.is_some() {
            self.totals.delivered += entries.len() as u64;
            if mutation::active(Mutation::UnrecordedLease) {
                let seqs = entries.iter().map(|e| e.seq).collect();
                self.commit_deferred_removal(
                    seqs,
                    Continuation::Removed {
                        entries: Vec::new(),
                    },
                );
            }
            self.send_to(connection, ToClient::Encoded(reply));
            return;
        }
        let seqs: Vec<u64> = entries
            .iter()
            .filter(|e| !matches!(e.body, BodyRef::Memory))
            .map(|e| e.seq)
            .collect();
        // Right before the removal's write, which carries them.
        self.report_entries(Report::Delivery, &queue, &entries, None, now);
        let taken = Taken {
            connection,
            request,
            queue,
            entries,
            reply,
        };
        if seqs.is_empty() {
            self.apply_get(taken, Ok(()), now);
        } else if let Some(staged) = &mut self.staged_gets {
            staged.push((seqs, taken));
        } else {
            self.commit_removal(seqs, Continuation::Get(taken));
        }
    }

    /// Writes the removals staged by a run of gets, in one write (see `coalesce`).
    pub(super) fn flush_staged_gets(&mut self) {
        let Some(staged) = self.staged_gets.as_mut().filter(|s| !s.is_empty()) else {
            return;
        };
        let staged = std::mem::take(staged);
        let seqs = staged.iter().flat_map(|(seqs, _)| seqs).copied().collect();
        let mut gets: Vec<Taken> = staged.into_iter().map(|(_, taken)| taken).collect();
        let continuation = match gets.pop() {
            Some(only) if gets.is_empty() => Continuation::Get(only),
            Some(last) => {
                gets.push(last);
                Continuation::Gets(gets)
            }
            None => return,
        };
        self.commit_removal(seqs, continuation);
    }

    /// The encoded reply handing `entries` to a getter, with their leases granted if
    /// `lease_ms` says so; on failure no lease is left granted.
    pub(super) fn get_reply(
        &mut self,
        connection: u64,
        request: u64,
        queue: &QueueName,
        entries: &[Entry],
        lease_ms: Option<u64>,
        now: Now,
    ) -> Result<Vec<u8>, String> {
        let payloads = entries
            .iter()
            .map(|entry| {
                self.payloads
                    .get(entry, &*self.storage)
                    .map_err(|error| format!("cannot read message {} back: {error}", entry.seq))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let leases: Vec<Option<u64>> = entries
            .iter()
            .map(|entry| {
                lease_ms.map(|lease_ms| {
                    self.leases
                        .grant(queue.clone(), *entry, connection, now.mono_ms, lease_ms)
                })
            })
            .collect();
        let messages: Vec<_> = payloads
            .iter()
            .zip(entries)
            .zip(&leases)
            .map(|((payload, entry), lease)| {
                (
                    &payload[..],
                    entry,
                    *lease,
                    !matches!(entry.body, BodyRef::Memory),
                )
            })
            .collect();
        delivery::messages_reply(request, &messages).map_err(|error| {
            for &lease in leases.iter().flatten() {
                let _ = self.leases.settle(lease, connection);
            }
            error.to_string()
        })
    }

    /// Puts messages taken for a get back in their queue, undelivered, and tells the getter
    /// why.
    pub(super) fn hand_back(
        &mut self,
        connection: u64,
        request: u64,
        queue: &QueueName,
        entries: Vec<Entry>,
        error: ApiError,
    ) {
        for mut entry in entries {
            entry.delivery_count -= 1;
            self.insert(queue, entry);
        }
        self.reply(connection, request, Err(error));
    }

    pub(super) fn ack(
        &mut self,
        connection: u64,
        request: u64,
        lease_ids: &[u64],
        now: Now,
    ) -> Result<Option<Reply>, ApiError> {
        let leases = self.settle(connection, lease_ids)?;
        let seqs: Vec<u64> = leases
            .iter()
            .filter(|l| !matches!(l.entry.body, BodyRef::Memory))
            .map(|l| l.entry.seq)
            .collect();
        for lease in &leases {
            let entries = std::iter::once(&lease.entry);
            self.report_entries(Report::Delivery, &lease.queue, entries, None, now);
        }
        let continuation = Continuation::Ack {
            connection,
            request,
            leases,
        };
        if seqs.is_empty() {
            self.apply(continuation, Ok(Vec::new()), now);
        } else {
            self.commit_removal(seqs, continuation);
        }
        Ok(None)
    }

    pub(super) fn nack(
        &mut self,
        connection: u64,
        lease_ids: &[u64],
        now: Now,
    ) -> Result<Reply, ApiError> {
        for lease in self.settle(connection, lease_ids)? {
            self.give_back(lease.queue, lease.entry, now);
        }
        Ok(Reply::Done)
    }

    /// Ends the leases if all are held by `connection`; none otherwise.
    pub(super) fn settle(
        &mut self,
        connection: u64,
        lease_ids: &[u64],
    ) -> Result<Vec<Lease>, ApiError> {
        if let Some(&lease) = lease_ids
            .iter()
            .find(|&&id| !self.leases.held_by(id, connection))
        {
            return Err(ApiError::UnknownLease { lease });
        }
        let unique: BTreeSet<u64> = lease_ids.iter().copied().collect();
        Ok(unique
            .into_iter()
            .filter_map(|id| self.leases.settle(id, connection).ok())
            .collect())
    }

    /// A message whose lease ended unacknowledged: back to its queue, or dead-lettered.
    pub(super) fn give_back(&mut self, queue: QueueName, entry: Entry, now: Now) {
        match on_return(entry, self.limits.max_deliveries) {
            Return::Requeue(entry) => {
                self.insert(&queue, entry);
                self.serve_waiters(&queue, now);
            }
            Return::DeadLetter(entry) => {
                let reason = format!(
                    "delivered {} times without an ack (max_deliveries)",
                    entry.delivery_count
                );
                self.dead_letter(&queue, entry, &reason, now);
            }
        }
    }

    pub(super) fn dead_letter(&mut self, from: &QueueName, entry: Entry, reason: &str, now: Now) {
        warn!(queue = %from, seq = entry.seq, %reason, "message dead-lettered");
        // Right before the move's write, which carries it.
        self.report_entries(Report::Exception, from, [&entry], Some(reason), now);
        self.move_message(
            from,
            entry,
            &dead_letter_queue(),
            &[
                (DEAD_LETTER_REASON_HEADER, reason),
                (DEAD_LETTER_QUEUE_HEADER, from.as_str()),
            ],
            now,
        );
    }

    /// Moves a message from `from` to `to` under a new seq, with extra headers: the copy and
    /// the removal of the original in one atomic group. If it cannot be read, it stays.
    pub(super) fn move_message(
        &mut self,
        from: &QueueName,
        entry: Entry,
        to: &QueueName,
        extra_headers: &[(&str, &str)],
        now: Now,
    ) {
        let seq = self.next_seq;
        let moved = self
            .payloads
            .get(&entry, &*self.storage)
            .map_err(|e| e.to_string())
            .and_then(|payload| {
                delivery::encode_moved(&payload, to.as_str(), seq, extra_headers)
                    .map_err(|e| e.to_string())
            });
        let payload = match moved {
            Ok(payload) => Bytes::from(payload),
            Err(reason) => {
                error!(queue = %from, seq = entry.seq, %reason, "cannot move a message; it stays in its queue");
                self.insert(from, entry);
                return;
            }
        };
        self.next_seq += 1;
        let persistent = !matches!(entry.body, BodyRef::Memory);
        let new_entry = Entry {
            seq,
            body: BodyRef::Memory,
            delivery_count: 0,
            // A dead letter owes no more reports.
            reports: if *to == dead_letter_queue() {
                hopmq::Reports::NONE
            } else {
                entry.reports
            },
            put_at_ms: now.wall_ms,
            ..entry
        };
        self.ensure_slot(to).accept(false);
        let item = PutItem {
            queue: to.clone(),
            entry: new_entry,
            payload: payload.clone(),
            persistent,
            handoff: None,
            channel_seq: None,
        };
        let continuation = Continuation::Moved {
            item,
            old: Some((from.clone(), entry)),
        };
        if persistent {
            let remove = record::encode(&Record::Remove(vec![entry.seq]));
            self.commit(vec![payload, remove.into()], continuation);
        } else {
            self.apply(continuation, Ok(Vec::new()), now);
        }
    }

    pub(super) fn browse(&mut self, queue: &str, max: u32, now: Now) -> Result<Reply, ApiError> {
        let queue = self.read_queue(queue)?;
        let Some(slot) = self.queues.get(&queue) else {
            // Not created yet: nothing to see, and a look creates nothing.
            return Ok(Reply::Messages(Vec::new()));
        };
        let payloads = &self.payloads;
        let entries = slot.queue.peek(
            now.wall_ms,
            max.min(BATCH_MESSAGES_MAX) as usize,
            REPLY_RECORD_BYTES_MAX,
            |entry| payloads.record_bytes(entry),
        );
        let mut deliveries = Vec::with_capacity(entries.len());
        for entry in entries {
            let payload =
                self.payloads
                    .get(&entry, &*self.storage)
                    .map_err(|e| ApiError::Storage {
                        detail: e.to_string(),
                    })?;
            let delivery = delivery::to_delivery(
                &payload,
                &entry,
                None,
                !matches!(entry.body, BodyRef::Memory),
            )
            .map_err(|e| ApiError::Storage {
                detail: e.to_string(),
            })?;
            deliveries.push(delivery);
        }
        Ok(Reply::Messages(deliveries))
    }
}

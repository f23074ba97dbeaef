//! Time and tidying: deadlines of waiting gets and leases, the maintenance tick (expiry
//! sweeps, retiring dead journal segments, compacting mostly dead ones).

// The core's types and imports: these handlers are part of `Core`, split by concern.
use super::*;
use std::collections::BTreeMap;

impl Core {
    /// The next moment something is due (a waiting get's timeout, a lease's end).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let waiter = self.waiters.next_deadline_ms();
        let lease = self.leases.next_deadline_ms();
        waiter
            .into_iter()
            .chain(lease)
            .chain(self.jobs_deadline_ms())
            .chain(self.custody.arrivals.next_deadline_ms())
            .min()
    }

    /// Ends what is due at `now`.
    pub fn on_timer(&mut self, now: Now) {
        self.event_now = now;
        for waiter in self.waiters.due(now.mono_ms) {
            self.end_waiter(waiter, Ok(Reply::Messages(Vec::new())));
        }
        for lease in self.leases.expire(now.mono_ms) {
            debug!(lease = lease.id, queue = %lease.queue, "lease expired");
            self.give_back(lease.queue, lease.entry, now);
        }
        self.run_jobs(now);
        let answers = self.custody.arrivals.expire(now.mono_ms);
        self.answer_arrivals(answers);
        self.end_event();
    }

    /// Periodic work: sweep expired messages, delete journal segments nothing lives in.
    pub fn on_maintenance(&mut self, now: Now) {
        self.event_now = now;
        self.on_link_maintenance(now);
        self.on_routing_maintenance(now);
        self.on_custody_maintenance(now);
        self.on_subscriptions_maintenance();
        self.sweep_orphan_reply_queues(now);
        self.end_gatherings(now);
        let names: Vec<QueueName> = self.queues.keys().cloned().collect();
        for name in names {
            let expired = match self.queues.get_mut(&name) {
                Some(slot) => slot.queue.remove_expired(now.wall_ms, EXPIRY_SWEEP_MAX),
                None => continue,
            };
            if name.as_str().starts_with(SYSTEM_QUEUE_PREFIX) {
                self.totals.expired += expired.len() as u64;
            }
            self.remove_expired(expired);
        }
        if let Some((segment, live_bytes)) = self
            .retention
            .compaction_due(self.journal_head(), now.mono_ms)
        {
            self.compact(segment, live_bytes);
        }
        self.retire_dead_segments();
        if std::mem::take(&mut self.spike_freed) {
            // The cut-off client's frames were encoded here; their memory is free by now.
            crate::allocator::release_free_memory();
        }
        self.end_event();
    }

    /// Where the journal's head and the oldest commit in flight are, for [`Retention`].
    pub(super) fn journal_head(&self) -> Head {
        let active = self.storage.active_segment();
        Head {
            active,
            oldest_in_flight: self.commits.oldest_segment(),
        }
    }

    /// Deletes the segments before the oldest one needed, or keeps them as spares: as soon as
    /// a commit lets the oldest live segment move on, not only at the maintenance tick, so that
    /// the writer preparing its next segment finds a spare to recycle before it has written
    /// much of a file of zeros (a segment fills in well under a tick at full speed).
    pub(super) fn retire_dead_segments(&mut self) {
        let Some(below) = self.retention.retirable_below(self.journal_head()) else {
            return;
        };
        self.storage.retire_segments_before(below);
        self.retention.retired(below);
    }

    /// Rewrites the few live messages of `segment` at the journal's head when that frees a
    /// mostly dead segment, so that disk use follows the live data. Messages keep their seq,
    /// so order is unchanged, and stay in their queues while the copies are written.
    pub(super) fn compact(&mut self, segment: u64, live_bytes: u64) {
        let mut payloads = Vec::new();
        let mut moves = Vec::new();
        // Messages given to a channel and not yet acked count too: a neighbour down for long
        // must not pin the journal's oldest segment.
        let queued = self
            .queues
            .values()
            .flat_map(|slot| slot.queue.entries().map(|entry| (entry, None)));
        let assigned = self
            .assigned_entries()
            .map(|(entry, neighbour, channel_seq)| (entry, Some((neighbour, channel_seq))));
        // Kept messages move with their `Kept` record, as assigned ones with their assignment.
        // By seq: a publication's share may be kept for several destinations, one record each.
        let mut kept_records: BTreeMap<u64, (Entry, Vec<Bytes>)> = BTreeMap::new();
        for (destination, epoch, number, entry) in self.custody.kept.entries() {
            if entry.body.location().is_some_and(|l| l.segment == segment) {
                let record = custody::kept_record_of(destination, epoch, number, entry.seq);
                let (_, records) = kept_records
                    .entry(entry.seq)
                    .or_insert((*entry, Vec::new()));
                records.push(record);
            }
        }
        for (entry, kept) in kept_records.into_values() {
            match self.payloads.get(&entry, &*self.storage) {
                Ok(payload) => {
                    let len = entry.body.location().map_or(0, |l| l.len);
                    payloads.push(std::iter::once(payload).chain(kept).collect());
                    moves.push((entry.seq, None, len));
                }
                Err(error) => {
                    warn!(%error, segment, seq = entry.seq, "cannot read a kept message to compact its segment");
                    return;
                }
            }
        }
        for (entry, assigned) in queued.chain(assigned) {
            let Some(location) = entry.body.location() else {
                continue;
            };
            if location.segment != segment {
                continue;
            }
            match self.payloads.get(entry, &*self.storage) {
                Ok(payload) => {
                    let assignment = assigned.map(|(neighbour, channel_seq)| {
                        forward::assignment_record(neighbour, entry.seq, channel_seq)
                    });
                    payloads.push(std::iter::once(payload).chain(assignment).collect());
                    moves.push((
                        entry.seq,
                        assigned.map(|(neighbour, channel_seq)| (neighbour.clone(), channel_seq)),
                        location.len,
                    ));
                }
                Err(error) => {
                    warn!(%error, segment, seq = entry.seq, "cannot read a message to compact its segment");
                    return;
                }
            }
        }
        if payloads.is_empty() {
            return; // only leased or in-flight messages hold it: they will settle
        }
        info!(
            segment,
            messages = payloads.len(),
            live_bytes,
            "compacting a mostly dead journal segment"
        );
        // Relocated records stand alone (with their assignment, for a message given to a
        // channel); one group per record keeps each under the batch limit.
        for (group, (seq, assigned, len)) in payloads.into_iter().zip(moves) {
            self.retention.relocation_started();
            self.commit(
                group,
                Continuation::Relocated {
                    seq,
                    assigned,
                    old_segment: segment,
                    old_len: len,
                },
            );
        }
    }
}

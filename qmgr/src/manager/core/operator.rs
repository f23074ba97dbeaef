//! The operator's requests on the messages of a queue: list them, remove them (`purge`,
//! `delete-message`), move them to another address (`move`, a dead letter's replay).
//!
//! Each is a job over the messages present when it was asked (in delivery order), run a pass
//! at a time so that no event handles more than [`PASS_EXAMINED_MAX`] messages: a pass's
//! effect is one journal group, and the next pass runs (from the timer) once it is durable.
//! A move's group holds the pass's new copies and the removal of their originals, so a crash
//! leaves each message in exactly one place; the job is answered once its last group is
//! durable. Leased messages are never touched; they are counted at the end.

mod jobs;

use std::collections::VecDeque;

use hopmq::protocol::{Listing, MoveOutcome, MoveRequest, MoveTarget, Selection};

use self::jobs::{Action, Job, Selected};
// The core's types and imports: these handlers are part of `Core`, split by concern.
use super::*;

pub(super) use self::jobs::Jobs as OperatorJobs;

/// Messages one pass examines at most.
const PASS_EXAMINED_MAX: usize = 4096;
/// Messages one pass moves at most (their copies are held in memory until durable).
const PASS_MOVED_MAX: usize = 1024;
/// Bytes of copies one pass writes at most, besides the group limit of the journal.
const PASS_MOVED_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// One pass's journal group, and what to make of it once durable.
#[derive(Debug)]
pub(crate) struct OperatorBatch {
    job: u64,
    /// The queue the originals were in.
    source: QueueName,
    /// The copies written (their records first in the group, in this order if persistent).
    moved: Vec<PutItem>,
    /// The originals removed (their `Remove` record last).
    removed: Vec<Entry>,
}

impl Core {
    /// `RemoveMessages`: starts a job removing the selected messages of `queue`.
    pub(super) fn remove_messages(
        &mut self,
        asker: (u64, u64),
        queue: &str,
        selection: Selection,
    ) -> Result<Option<Reply>, ApiError> {
        let queue = self.operated_queue(queue)?;
        self.start_job(asker, queue, selection, Action::Remove)
    }

    /// `MoveMessages`: starts a job moving the selected messages to an address.
    pub(super) fn move_messages(
        &mut self,
        asker: (u64, u64),
        request: MoveRequest,
    ) -> Result<Option<Reply>, ApiError> {
        let queue = self.operated_queue(&request.from)?;
        if let MoveTarget::Address(address) = &request.to {
            // Refused before anything moves: an address no put could take.
            let (target, _) = self.resolve(address)?;
            if target == queue {
                return Err(ApiError::BadRequest {
                    reason: format!("the messages are in `{queue}` already"),
                });
            }
        }
        let action = Action::Move {
            to: request.to,
            replay: request.replay,
        };
        self.start_job(asker, queue, request.selection, action)
    }

    /// `ListMessages`: starts a job listing the selected messages.
    pub(super) fn list_messages(
        &mut self,
        asker: (u64, u64),
        queue: &str,
        selection: Selection,
        max: u32,
    ) -> Result<Option<Reply>, ApiError> {
        let queue = self.read_queue(queue)?;
        if !self.queues.contains_key(&queue) {
            return Err(ApiError::UnknownQueue {
                queue: queue.to_string(),
            });
        }
        let max = max.min(BATCH_MESSAGES_MAX) as usize;
        self.start_job(asker, queue, selection, Action::List { max })
    }

    /// The local queue an operator removes or moves messages from: one that exists here and
    /// is not the manager's own (whose messages are on their way elsewhere).
    fn operated_queue(&self, name: &str) -> Result<QueueName, ApiError> {
        if name.starts_with(SYSTEM_QUEUE_PREFIX) {
            return Err(ApiError::BadRequest {
                reason: format!(
                    "queue `{name}` belongs to the manager: its messages are on their way to \
                     another manager and only the manager moves them"
                ),
            });
        }
        let queue = self.read_queue(name)?;
        if !self.queues.contains_key(&queue) {
            return Err(ApiError::UnknownQueue {
                queue: queue.to_string(),
            });
        }
        Ok(queue)
    }

    fn start_job(
        &mut self,
        asker: (u64, u64),
        queue: QueueName,
        selection: Selection,
        action: Action,
    ) -> Result<Option<Reply>, ApiError> {
        match &selection {
            Selection::Ids(ids) if ids.is_empty() || ids.len() > BATCH_MESSAGES_MAX as usize => {
                return Err(ApiError::BadRequest {
                    reason: format!("name 1 to {BATCH_MESSAGES_MAX} message ids"),
                });
            }
            Selection::Reason(text) if text.is_empty() => {
                return Err(ApiError::BadRequest {
                    reason: "a reason to match must not be empty".into(),
                });
            }
            _ => {}
        }
        let mut present: Vec<(u8, u64)> = self.queues[&queue]
            .queue
            .entries()
            .map(|e| (e.priority, e.seq))
            .collect();
        // Delivery order: highest priority first, put order within one.
        present.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let pending: VecDeque<u64> = present.into_iter().map(|(_, seq)| seq).collect();
        let job = Job::new(asker, queue, Selected::new(selection), action, pending);
        let id = self.jobs.add(job);
        self.job_pass(id, self.event_now);
        Ok(None)
    }

    /// The next moment a job wants a pass.
    pub(super) fn jobs_deadline_ms(&self) -> Option<u64> {
        self.jobs.next_pass_ms()
    }

    /// Runs a pass of every job that is ready for one.
    pub(super) fn run_jobs(&mut self, now: Now) {
        for id in self.jobs.ready(now.mono_ms) {
            self.job_pass(id, now);
        }
    }

    /// One pass of job `id`: at most [`PASS_EXAMINED_MAX`] messages examined, and what it
    /// selected written in one group; the job ends when nothing is left to examine.
    fn job_pass(&mut self, id: u64, now: Now) {
        let Some(mut job) = self.jobs.take(id) else {
            return;
        };
        let mut pass = Pass {
            batch: OperatorBatch {
                job: id,
                source: job.queue.clone(),
                moved: Vec::new(),
                removed: Vec::new(),
            },
            copies: Vec::new(),
            copy_bytes: 0,
            group_max: self.storage.group_bytes_max() / 2,
        };
        let mut examined = 0;
        while examined < PASS_EXAMINED_MAX && pass.batch.moved.len() < PASS_MOVED_MAX {
            let Some(&seq) = job.pending.front() else {
                break;
            };
            let Some(entry) = self.queues.get(&job.queue).and_then(|s| s.queue.get(seq)) else {
                // Taken, leased or expired since the job began.
                job.pending.pop_front();
                continue;
            };
            examined += 1;
            job.outcome.examined += 1;
            match self.examine(&mut job, entry, &mut pass) {
                Step::Next => {
                    job.pending.pop_front();
                }
                Step::Full => {
                    // The next pass takes it.
                    job.outcome.examined -= 1;
                    break;
                }
                Step::Stop => break,
            }
            if job.selected.complete() {
                job.pending.clear();
            }
        }
        self.write_pass(id, job, pass, now);
    }

    /// What job `job` does with `entry`, the next message it examines.
    fn examine(&mut self, job: &mut Job, entry: Entry, pass: &mut Pass) -> Step {
        if !job.selected.reads() && matches!(job.action, Action::Remove) {
            // A purge: no need to read what is removed.
            self.take_entry(&job.queue, entry.seq);
            pass.batch.removed.push(entry);
            return Step::Next;
        }
        let payload = match self.payloads.get(&entry, &*self.storage) {
            Ok(payload) => payload,
            Err(error) => {
                error!(queue = %job.queue, seq = entry.seq, %error, "cannot read a message for an operator's request");
                job.leave(0, format!("cannot read it back: {error}"));
                return Step::Next;
            }
        };
        let stored = match delivery::stored(&payload) {
            Ok(stored) => stored,
            Err(error) => {
                job.leave(0, format!("cannot decode it: {error}"));
                return Step::Next;
            }
        };
        if !job.selected.matches(&stored) {
            return Step::Next;
        }
        job.selected.found(stored.id);
        let (to, replay) = match &job.action {
            Action::List { max } => {
                let max = *max;
                job.list(&stored, entry.delivery_count, max);
                return Step::Next;
            }
            Action::Remove => {
                self.take_entry(&job.queue, entry.seq);
                pass.batch.removed.push(entry);
                return Step::Next;
            }
            Action::Move { to, replay } => (to.clone(), *replay),
        };
        let copy = match self.move_copy(job, entry, &stored, &to, replay) {
            Ok(copy) => copy,
            Err(Left::Message(reason)) => {
                job.leave(stored.id, reason);
                return Step::Next;
            }
            Err(Left::All(reason)) => {
                job.stop(reason);
                return Step::Stop;
            }
        };
        let bytes = copy.payload.len() as u64;
        let total = pass.copy_bytes + bytes;
        if !pass.batch.moved.is_empty() && (total > pass.group_max || total > PASS_MOVED_BYTES_MAX)
        {
            if let Some(slot) = self.queues.get_mut(&copy.queue) {
                slot.settle(false);
            }
            return Step::Full;
        }
        pass.copy_bytes = total;
        self.take_entry(&job.queue, entry.seq);
        if copy.persistent {
            pass.copies.push(copy.payload.clone());
        }
        pass.batch.moved.push(copy);
        pass.batch.removed.push(entry);
        Step::Next
    }

    /// Takes message `seq` out of `queue` for a job (it is in the queue: the job just saw it).
    fn take_entry(&mut self, queue: &QueueName, seq: u64) {
        if let Some(slot) = self.queues.get_mut(queue) {
            slot.queue.remove(seq);
        }
    }

    /// Writes a pass's group (the copies, then the removal of the originals), or finishes the
    /// job if the pass wrote nothing and nothing is left.
    fn write_pass(&mut self, id: u64, mut job: Job, pass: Pass, now: Now) {
        let Pass {
            batch,
            copies: mut payloads,
            ..
        } = pass;
        let removed: Vec<u64> = batch
            .removed
            .iter()
            .filter(|e| !matches!(e.body, BodyRef::Memory))
            .map(|e| e.seq)
            .collect();
        if !removed.is_empty() {
            payloads.push(record::encode(&Record::Remove(removed)).into());
        }
        if payloads.is_empty() {
            let empty = batch.moved.is_empty() && batch.removed.is_empty();
            self.jobs.put_back(id, job, self.event_now.mono_ms);
            if !empty {
                self.apply_operator(batch, Ok(Vec::new()), now);
            } else {
                self.job_checkpoint(id);
            }
            return;
        }
        job.in_flight = true;
        // A removal frees what it takes: it may use the journal's reserve.
        let freeing = matches!(job.action, Action::Remove);
        self.jobs.put_back(id, job, self.event_now.mono_ms);
        let continuation = Continuation::Operator(batch);
        if freeing {
            self.commit_freeing(payloads, continuation);
        } else {
            self.commit(payloads, continuation);
        }
    }

    /// A pass's group is durable (or failed): the copies become visible in their queues and
    /// the originals are gone, or everything is back where it was and the job stops.
    pub(super) fn apply_operator(
        &mut self,
        batch: OperatorBatch,
        result: Result<Vec<Location>, StoreError>,
        now: Now,
    ) {
        // Carried out whether or not the job is still there: the journal says what it says.
        let outcome = match result {
            Ok(locations) => {
                let done = if batch.moved.is_empty() {
                    batch.removed.len()
                } else {
                    batch.moved.len()
                };
                self.place_moved(batch.moved, locations, &batch.removed, now);
                Ok(done as u64)
            }
            Err(error) => {
                warn!(%error, queue = %batch.source, "an operator's write failed; its messages stay where they were");
                for item in batch.moved {
                    if let Some(slot) = self.queues.get_mut(&item.queue) {
                        slot.settle(false);
                    }
                }
                for entry in batch.removed {
                    self.insert(&batch.source, entry);
                }
                self.serve_waiters(&batch.source, now);
                Err(format!("the journal refused a write: {error}"))
            }
        };
        let Some(mut job) = self.jobs.take(batch.job) else {
            return;
        };
        job.in_flight = false;
        match outcome {
            Ok(done) => job.outcome.done += done,
            Err(why) => job.stop(why),
        }
        self.jobs.put_back(batch.job, job, self.event_now.mono_ms);
        self.job_checkpoint(batch.job);
    }

    /// Durable copies into their queues (and to their waiting gets), originals forgotten.
    fn place_moved(
        &mut self,
        moved: Vec<PutItem>,
        locations: Vec<Location>,
        removed: &[Entry],
        now: Now,
    ) {
        let mut locations = locations.into_iter();
        let mut touched = BTreeSet::new();
        for mut item in moved {
            if let Some(slot) = self.queues.get_mut(&item.queue) {
                slot.settle(false);
            }
            if item.persistent {
                if let Some(location) = locations.next() {
                    item.entry.body = journal_ref(location);
                    self.retention.live(location.segment, location.len);
                }
            }
            self.payloads.keep(&item.entry, item.payload.clone());
            self.insert(&item.queue, item.entry);
            self.notify_subscribers(&item);
            touched.insert(item.queue);
        }
        for entry in removed {
            self.forget(entry);
        }
        for queue in touched {
            self.serve_waiters(&queue, now);
        }
    }

    /// Finishes job `id` if it has nothing left to examine and no write in flight.
    fn job_checkpoint(&mut self, id: u64) {
        let Some(job) = self.jobs.take(id) else {
            return;
        };
        if job.in_flight || !job.pending.is_empty() {
            self.jobs.put_back(id, job, self.event_now.mono_ms);
            return;
        }
        self.finish_job(job);
    }

    /// Answers a job that has ended: its outcome, with the selected messages that were leased
    /// out (left alone) and the ids not found.
    fn finish_job(&mut self, mut job: Job) {
        let mut leased = 0;
        let mut not_found: BTreeSet<u128> = job.selected.not_found().into_iter().collect();
        for entry in self.leases.entries_of(job.queue.as_str()) {
            if matches!(job.selected, Selected::All) {
                leased += 1;
                continue;
            }
            let Ok(payload) = self.payloads.get(&entry, &*self.storage) else {
                continue;
            };
            let Ok(stored) = delivery::stored(&payload) else {
                continue;
            };
            let hit = match &job.selected {
                Selected::Ids(_) => not_found.remove(&stored.id),
                selected => selected.matches(&stored),
            };
            leased += u64::from(hit);
        }
        let reply = match job.action {
            Action::List { .. } => Reply::Listing(job.finish_listing()),
            Action::Remove | Action::Move { .. } => {
                job.outcome.leased = leased;
                Reply::Moved(job.finish_outcome(not_found.into_iter().collect()))
            }
        };
        info!(queue = %job.queue, summary = %reply_summary(&reply), "operator's request done");
        self.reply(job.connection, job.request, Ok(reply));
    }

    /// Stops the jobs of a connection that closed: what they did stays done, the rest is
    /// left alone.
    pub(super) fn cancel_jobs(&mut self, connection: u64) {
        for id in self.jobs.of_connection(connection) {
            if let Some(mut job) = self.jobs.take(id) {
                if job.in_flight {
                    job.stop("the operator left".into());
                    self.jobs.put_back(id, job, self.event_now.mono_ms);
                }
            }
        }
    }

    /// At shutdown: every job stops, answered with what it did.
    pub(super) fn stop_jobs(&mut self) {
        for id in self.jobs.ids() {
            if let Some(mut job) = self.jobs.take(id) {
                job.stop("the manager is shutting down".into());
                if job.in_flight {
                    self.jobs.put_back(id, job, self.event_now.mono_ms);
                } else {
                    self.finish_job(job);
                }
            }
        }
    }
}

/// A pass in the making: its group, and the bytes of copies it holds.
struct Pass {
    batch: OperatorBatch,
    /// The records of the persistent copies, in `batch.moved` order.
    copies: Vec<Bytes>,
    copy_bytes: u64,
    group_max: u64,
}

/// What became of a message a pass examined.
enum Step {
    /// Dealt with (or not selected): on to the next.
    Next,
    /// The pass's group is full: this one waits for the next pass.
    Full,
    /// The job stops here.
    Stop,
}

/// Why a selected message is not moved.
enum Left {
    /// This one stays, for this reason; the job goes on.
    Message(String),
    /// The job stops here (its one target is full).
    All(String),
}

impl Core {
    /// The copy of `entry` (whose record is `stored`) in its new place, accepted there (its
    /// target counts it until the group is applied).
    fn move_copy(
        &mut self,
        job: &Job,
        entry: Entry,
        stored: &crate::record::StoredMessage<'_>,
        to: &MoveTarget,
        replay: bool,
    ) -> Result<PutItem, Left> {
        let address = match to {
            MoveTarget::Original => stored.destination,
            MoveTarget::Address(address) => address.as_str(),
        };
        let (target, home) = self.resolve(address).map_err(|e| match to {
            MoveTarget::Original => Left::Message(e.to_string()),
            MoveTarget::Address(_) => Left::All(e.to_string()),
        })?;
        if target == job.queue {
            return Err(Left::Message(format!(
                "its address `{address}` leads back to `{target}`"
            )));
        }
        let slot = &self.queues[&target];
        if slot.held(self.leases.leased(target.as_str())) >= slot.max_depth() {
            let reason = format!("queue `{target}` is full (max_depth {})", slot.max_depth());
            return Err(match to {
                MoveTarget::Original => Left::Message(reason),
                MoveTarget::Address(_) => Left::All(reason),
            });
        }
        let seq = self.next_seq;
        // Sent on as a new custody leg from here: the stamp it came with was spent where it
        // was accepted, and a copy bearing it would be dropped there as a second one.
        let chain = crate::custody::Chain {
            queue: address.split('@').next().unwrap_or(address),
            priority: stored.priority,
            expires_ms: stored.expires_at_ms,
        };
        let stamp = home.map(|home| self.stamp_for(&home, chain));
        let payload = delivery::encode_relocated(
            stored,
            (target.as_str(), seq),
            address,
            replay,
            stamp.as_deref(),
        );
        if payload.len() as u64 > crate::store::format::RECORD_PAYLOAD_BYTES_MAX {
            return Err(Left::Message(
                "its copy, with its new address, is over the journal's record limit".into(),
            ));
        }
        self.next_seq += 1;
        // A message leaving this manager is always journaled.
        let persistent = !matches!(entry.body, BodyRef::Memory)
            || target.as_str().starts_with(SYSTEM_QUEUE_PREFIX);
        self.ensure_slot(&target).accept(false);
        Ok(PutItem {
            queue: target,
            entry: Entry {
                seq,
                body: BodyRef::Memory,
                delivery_count: 0,
                ..entry
            },
            payload: Bytes::from(payload),
            persistent,
            handoff: None,
            channel_seq: None,
        })
    }
}

/// A short account of a reply, for the log.
fn reply_summary(reply: &Reply) -> String {
    match reply {
        Reply::Moved(MoveOutcome {
            examined,
            done,
            leased,
            stopped,
            ..
        }) => format!("examined {examined}, done {done}, leased {leased}, stopped {stopped:?}"),
        Reply::Listing(Listing { selected, .. }) => format!("listed, {selected} selected"),
        _ => String::new(),
    }
}

//! Requests and their replies: each connection's private reply queue, a request as a put
//! whose commit leads to a waiting get for its reply, and a reply that acknowledges the leased
//! request it answers in the same write.
//!
//! Invariants: a reply queue (`hopmq.reply.…`) belongs to one connection for that
//! connection's life and is never given to another (its name carries an id unique to this
//! manager across restarts); a request's waiter exists before its message can leave, so no
//! reply comes before it; a reply queue keeps nothing: a message there that no waiting
//! request takes (its request timed out, or its client or this manager's previous life is
//! gone) is dead-lettered with why, never delivered to anyone else.

use super::*;
use hopmq::protocol::{Operation, REPLY_QUEUE_PREFIX};

/// True if `queue` is a private reply queue.
pub(super) fn is_reply_queue(queue: &QueueName) -> bool {
    queue.as_str().starts_with(REPLY_QUEUE_PREFIX)
}

/// Each connection's reply queue, made by its first request, and the other way round; and
/// the replies each connection gathers.
#[derive(Debug, Default)]
pub(super) struct ReplyQueues {
    by_connection: FxHashMap<u64, QueueName>,
    owners: FxHashMap<QueueName, u64>,
    /// Per connection, its multicast requests still gathering replies.
    gathering: FxHashMap<u64, Vec<Gathering>>,
}

/// Multicast requests one connection may have gathering at once: each holds a little memory
/// until its deadline, which the client chooses.
const GATHERINGS_PER_CONNECTION_MAX: usize = 1024;

/// A multicast request gathering replies until its deadline: replies with its correlation
/// id wait in the reply queue for the client's next call until then.
#[derive(Debug, Clone)]
struct Gathering {
    correlation_id: String,
    /// Its [`correlation_hash`], as queue entries carry it.
    hash: u32,
    /// On the monotonic clock.
    deadline_ms: u64,
}

impl ReplyQueues {
    fn owned(&self, queue: &QueueName) -> bool {
        self.owners.contains_key(queue)
    }

    /// The gathering of `connection` with this correlation id, if it goes on.
    fn gathering(&self, connection: u64, correlation_id: &str) -> Option<&Gathering> {
        self.gathering
            .get(&connection)?
            .iter()
            .find(|g| g.correlation_id == correlation_id)
    }

    /// True if a reply with correlation `hash` in `queue` may still be gathered.
    fn awaited(&self, queue: &QueueName, hash: u32) -> bool {
        self.owners
            .get(queue)
            .and_then(|connection| self.gathering.get(connection))
            .is_some_and(|all| all.iter().any(|g| g.hash == hash))
    }

    /// Ends the gatherings past their deadline at `now_ms`: the reply queues they leave.
    fn end_due(&mut self, now_ms: u64) -> Vec<QueueName> {
        let mut ended = Vec::new();
        self.gathering.retain(|connection, all| {
            let before = all.len();
            all.retain(|g| g.deadline_ms > now_ms);
            if all.len() < before {
                ended.extend(self.by_connection.get(connection).cloned());
            }
            !all.is_empty()
        });
        ended
    }
}

impl Core {
    /// A request or a reply.
    pub(super) fn conversation(
        &mut self,
        (connection, request): (u64, u64),
        operation: Operation,
        now: Now,
    ) -> Result<Option<Reply>, ApiError> {
        match operation {
            Operation::Request {
                address,
                message,
                timeout_ms,
            } => self.request((connection, request), (address, message), timeout_ms, now),
            Operation::Reply { lease, message } => {
                self.reply_to_request((connection, request), lease, message, now)
            }
            Operation::RequestMany {
                topic,
                message,
                timeout_ms,
                max_replies,
            } => {
                let request = (connection, request);
                self.request_many(request, (topic, message), (timeout_ms, max_replies), now)
            }
            Operation::Replies {
                correlation_id,
                timeout_ms,
                max,
            } => self.more_replies(
                (connection, request),
                correlation_id,
                (timeout_ms, max),
                now,
            ),
            other => Err(ApiError::BadRequest {
                reason: format!("not a request or a reply: {other:?}"),
            }),
        }
    }

    /// `Request`: `message` put to `address` with this connection's reply queue as its
    /// `reply_to` and a correlation id (a fresh one unless given); answered with the reply,
    /// or with nothing once `timeout_ms` passed.
    fn request(
        &mut self,
        (connection, request): (u64, u64),
        (address, mut message): (String, OutgoingMessage),
        timeout_ms: u64,
        now: Now,
    ) -> Result<Option<Reply>, ApiError> {
        if timeout_ms == 0 {
            return Err(ApiError::BadRequest {
                reason: "a request needs a timeout for its reply (more than 0 ms)".into(),
            });
        }
        let queue = self.reply_queue(connection);
        let correlation = match message.correlation_id.take() {
            Some(correlation) => correlation,
            None => self.ids.next().to_string(),
        };
        if probe::is_probe(&address, Some(&correlation)) {
            if let Some(answer) = self.probe_at_origin(&address, &correlation, now)? {
                return Ok(Some(answer));
            }
            // Never stamped, so any manager on its way may consume it.
            message.persistent = false;
        }
        message.reply_to = Some(format!("{queue}@{}", self.name));
        message.correlation_id = Some(correlation.clone());
        let waiter = Waiter {
            connection,
            request,
            queue,
            max: 1,
            correlation_id: Some(correlation),
            lease_ms: None,
            deadline_ms: now.mono_ms.saturating_add(timeout_ms),
        };
        let messages = vec![(address, message)];
        self.put(connection, request, messages, PutKind::Request(waiter), now)
    }

    /// `RequestMany`: `message` published to `topic` as a request, like [`Core::request`],
    /// then gathering its replies for `timeout_ms`: the first are its answer, the others wait
    /// for the client's `Replies`.
    fn request_many(
        &mut self,
        (connection, request): (u64, u64),
        (topic, mut message): (String, OutgoingMessage),
        (timeout_ms, max_replies): (u64, u32),
        now: Now,
    ) -> Result<Option<Reply>, ApiError> {
        if timeout_ms == 0 || max_replies == 0 {
            return Err(ApiError::BadRequest {
                reason: "a multicast request needs a timeout (more than 0 ms) and room for one                          reply at least"
                    .into(),
            });
        }
        let queue = self.reply_queue(connection);
        let correlation = match message.correlation_id.take() {
            Some(correlation) => correlation,
            None => self.ids.next().to_string(),
        };
        if self
            .reply_queues
            .gathering(connection, &correlation)
            .is_some()
        {
            return Err(ApiError::BadRequest {
                reason: format!("correlation id `{correlation}` already gathers replies"),
            });
        }
        let gathering = self.reply_queues.gathering.get(&connection);
        if gathering.is_some_and(|all| all.len() >= GATHERINGS_PER_CONNECTION_MAX) {
            return Err(ApiError::BadRequest {
                reason: format!(
                    "this connection has {GATHERINGS_PER_CONNECTION_MAX} multicast requests \
                     gathering replies, its limit: wait for one to end"
                ),
            });
        }
        message.reply_to = Some(format!("{queue}@{}", self.name));
        message.correlation_id = Some(correlation.clone());
        let deadline_ms = now.mono_ms.saturating_add(timeout_ms);
        let waiter = Waiter {
            connection,
            request,
            queue,
            max: max_replies.min(BATCH_MESSAGES_MAX) as usize,
            correlation_id: Some(correlation.clone()),
            lease_ms: None,
            deadline_ms,
        };
        let gathering = Gathering {
            hash: correlation_hash(Some(&correlation)),
            correlation_id: correlation,
            deadline_ms,
        };
        let publications = (vec![(topic, message)], false);
        let then = AfterPut::AwaitReply(waiter);
        self.publish((connection, request), publications, then, now)?;
        // Once the publish is accepted (its copies cannot be stored before this event ends).
        let all = self.reply_queues.gathering.entry(connection).or_default();
        all.push(gathering);
        Ok(None)
    }

    /// `Replies`: a waiting get on this connection's reply queue for more replies to a
    /// multicast request, never past its deadline; empty at once if it ended.
    fn more_replies(
        &mut self,
        (connection, request): (u64, u64),
        correlation_id: String,
        (timeout_ms, max): (u64, u32),
        now: Now,
    ) -> Result<Option<Reply>, ApiError> {
        if max == 0 || max > BATCH_MESSAGES_MAX {
            return Err(ApiError::BadRequest {
                reason: format!("max must be 1 to {BATCH_MESSAGES_MAX}, not {max}"),
            });
        }
        let Some(gathering) = self.reply_queues.gathering(connection, &correlation_id) else {
            return Ok(Some(Reply::Messages(Vec::new())));
        };
        let deadline_ms = now
            .mono_ms
            .saturating_add(timeout_ms)
            .min(gathering.deadline_ms);
        let waiter = Waiter {
            connection,
            request,
            queue: self.reply_queue(connection),
            max: max as usize,
            correlation_id: Some(correlation_id),
            lease_ms: None,
            deadline_ms,
        };
        if self.try_serve(&waiter, now) {
            return Ok(None);
        }
        if deadline_ms <= now.mono_ms {
            return Ok(Some(Reply::Messages(Vec::new())));
        }
        self.waiters.add(waiter, false);
        Ok(None)
    }

    /// Ends the multicast requests whose time is up: their replies still waiting, and those
    /// that come later, are dead-lettered.
    pub(super) fn end_gatherings(&mut self, now: Now) {
        for queue in self.reply_queues.end_due(now.mono_ms) {
            self.dead_letter_unclaimed_replies(&queue, now);
        }
    }

    /// A request is durable: its reply is waited for, unless its client left meanwhile.
    pub(super) fn await_reply(&mut self, waiter: Waiter) {
        if self.clients.is_connected(waiter.connection) {
            self.waiters.add(waiter, false);
        }
    }

    /// `Reply`: `message` to the `reply_to` of the request leased as `lease`, with its
    /// correlation id (its id, if it has none), and the request removed in the same write.
    fn reply_to_request(
        &mut self,
        (connection, request): (u64, u64),
        lease: u64,
        mut message: OutgoingMessage,
        now: Now,
    ) -> Result<Option<Reply>, ApiError> {
        let held = self
            .leases
            .held(lease, connection)
            .ok_or(ApiError::UnknownLease { lease })?;
        let payload = self
            .payloads
            .get(&held.entry, &*self.storage)
            .map_err(|error| ApiError::Storage {
                detail: format!("cannot read the request back: {error}"),
            })?;
        let stored = delivery::stored(&payload).map_err(|error| ApiError::Storage {
            detail: format!("cannot read the request back: {error}"),
        })?;
        let reply_to = stored
            .reply_to
            .ok_or_else(|| ApiError::BadRequest {
                reason: format!(
                    "the request (lease {lease}) has no reply_to: there is nowhere to reply"
                ),
            })?
            .to_owned();
        message.correlation_id = Some(match stored.correlation_id {
            Some(correlation) => correlation.to_owned(),
            None => MessageId(stored.id).to_string(),
        });
        let settled = self
            .leases
            .settle(lease, connection)
            .map_err(|_| ApiError::UnknownLease { lease })?;
        let messages = vec![(reply_to, message)];
        let kind = PutKind::Reply(settled.clone());
        self.put(connection, request, messages, kind, now)
            .inspect_err(|_| self.leases.restore(settled))
    }

    /// This connection's reply queue, made now if it has none.
    fn reply_queue(&mut self, connection: u64) -> QueueName {
        if let Some(queue) = self.reply_queues.by_connection.get(&connection) {
            return queue.clone();
        }
        let name = format!("{REPLY_QUEUE_PREFIX}{}", self.ids.next());
        let queue = QueueName::new(&name)
            .unwrap_or_else(|e| unreachable!("a reply queue's name is valid: {e}"));
        self.ensure_slot(&queue);
        self.reply_queues
            .by_connection
            .insert(connection, queue.clone());
        self.reply_queues.owners.insert(queue.clone(), connection);
        queue
    }

    /// The connection ended: its reply queue goes (its waiting requests were answered
    /// already), and a reply that comes later is dead-lettered.
    pub(super) fn reply_queue_closed(&mut self, connection: u64, now: Now) {
        if let Some(queue) = self.reply_queues.by_connection.remove(&connection) {
            self.reply_queues.owners.remove(&queue);
            self.reply_queues.gathering.remove(&connection);
            self.dead_letter_unclaimed_replies(&queue, now);
            self.drop_empty_reply_queue(&queue);
        }
    }

    /// Whatever `queue`, a reply queue, holds once its waiting requests took theirs: nobody
    /// waits for it, so it goes to the dead-letter queue with why.
    pub(super) fn dead_letter_unclaimed_replies(&mut self, queue: &QueueName, now: Now) {
        let Some(slot) = self.queues.get_mut(queue) else {
            return;
        };
        if slot.queue.depth() == 0 {
            return;
        }
        let owned = self.reply_queues.owned(queue);
        let reason = if owned {
            "a reply that no request waits for (its request timed out, its correlation id \
             matches none, or it came past a multicast request's max_replies)"
        } else {
            "a reply whose requester is gone (its client disconnected, or its manager \
             restarted)"
        };
        for entry in slot.queue.drain() {
            if self.reply_queues.awaited(queue, entry.correlation) {
                // Gathered by the client's next call.
                self.insert(queue, entry);
                continue;
            }
            self.dead_letter(queue, entry, reason, now);
        }
        if !owned {
            self.drop_empty_reply_queue(queue);
        }
    }

    /// Forgets a reply queue nobody owns once nothing of it is left in flight.
    fn drop_empty_reply_queue(&mut self, queue: &QueueName) {
        if self.queues.get(queue).is_some_and(Slot::is_idle)
            && self.leases.leased(queue.as_str()) == 0
        {
            self.queues.remove(queue);
        }
    }

    /// Every reply queue that no connection owns but still holds messages (recovered after a
    /// restart): dead-lettered, since their requesters are gone.
    pub(super) fn sweep_orphan_reply_queues(&mut self, now: Now) {
        let orphans: Vec<QueueName> = self
            .queues
            .iter()
            .filter(|(queue, slot)| is_reply_queue(queue) && slot.queue.depth() > 0)
            .filter(|(queue, _)| !self.reply_queues.owned(queue))
            .map(|(queue, _)| queue.clone())
            .collect();
        for queue in orphans {
            self.dead_letter_unclaimed_replies(&queue, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &str) -> QueueName {
        QueueName::new(name).expect("a valid name")
    }

    #[test]
    fn replies_are_awaited_while_their_request_gathers_and_no_longer() {
        let mut queues = ReplyQueues::default();
        let (mine, theirs) = (queue("hopmq.reply.1"), queue("hopmq.reply.2"));
        queues.by_connection.insert(1, mine.clone());
        queues.owners.insert(mine.clone(), 1);
        queues.by_connection.insert(2, theirs.clone());
        queues.owners.insert(theirs.clone(), 2);
        let gathering = |correlation: &str, deadline_ms| Gathering {
            correlation_id: correlation.to_owned(),
            hash: correlation_hash(Some(correlation)),
            deadline_ms,
        };
        queues
            .gathering
            .insert(1, vec![gathering("a", 100), gathering("b", 200)]);
        let hash = |c| correlation_hash(Some(c));
        assert!(queues.awaited(&mine, hash("a")) && queues.awaited(&mine, hash("b")));
        assert!(!queues.awaited(&mine, hash("c")), "not gathered");
        assert!(!queues.awaited(&theirs, hash("a")), "another connection's");
        assert!(queues.gathering(1, "a").is_some() && queues.gathering(2, "a").is_none());

        assert!(queues.end_due(99).is_empty());
        assert_eq!(
            queues.end_due(100),
            std::slice::from_ref(&mine),
            "a ended: its queue is swept"
        );
        assert!(!queues.awaited(&mine, hash("a")) && queues.awaited(&mine, hash("b")));
        assert_eq!(queues.end_due(500), std::slice::from_ref(&mine));
        assert!(queues.gathering.is_empty(), "nothing left behind");
    }
}

//! The other requests of a client: subscriptions, declaring and deleting queues, status.

// The core's types and imports: these handlers are part of `Core`, split by concern.
use super::*;

impl Core {
    pub(super) fn subscribe(&mut self, connection: u64, queue: &str) -> Result<Reply, ApiError> {
        let queue = self.app_queue(queue)?;
        let subscription = self
            .clients
            .subscribe(connection, &queue)
            .ok_or(ApiError::ShuttingDown)?;
        Ok(Reply::Subscribed(subscription))
    }

    pub(super) fn unsubscribe(
        &mut self,
        connection: u64,
        subscription: u64,
    ) -> Result<Reply, ApiError> {
        if self.clients.unsubscribe(connection, subscription)
            || self.unsubscribe_topic(connection, subscription)
        {
            Ok(Reply::Done)
        } else {
            Err(ApiError::UnknownSubscription { subscription })
        }
    }

    pub(super) fn declare(
        &mut self,
        queue: &str,
        max_depth: Option<u64>,
    ) -> Result<Reply, ApiError> {
        let queue = QueueName::new(queue).map_err(|e| ApiError::BadRequest {
            reason: e.to_string(),
        })?;
        if queue.as_str().starts_with(SYSTEM_QUEUE_PREFIX) {
            return Err(ApiError::BadRequest {
                reason: format!("queue names starting with `{SYSTEM_QUEUE_PREFIX}` are reserved"),
            });
        }
        if max_depth == Some(0) {
            return Err(ApiError::BadRequest {
                reason: "max_depth must be at least 1".into(),
            });
        }
        let slot = self.ensure_slot(&queue);
        if let Some(max_depth) = max_depth {
            slot.set_max_depth(max_depth);
        }
        Ok(Reply::Done)
    }

    pub(super) fn delete(&mut self, queue: &str) -> Result<Reply, ApiError> {
        if queue.starts_with(SYSTEM_QUEUE_PREFIX) {
            return Err(ApiError::BadRequest {
                reason: format!("queue `{queue}` belongs to the manager; it cannot be deleted"),
            });
        }
        let queue = QueueName::new(queue).map_err(|e| ApiError::BadRequest {
            reason: e.to_string(),
        })?;
        let Some(slot) = self.queues.get(&queue) else {
            // Gone already (or never made): with queues made on demand, that is what was asked.
            return if self.limits.auto_create_queues {
                Ok(Reply::Done)
            } else {
                Err(ApiError::UnknownQueue {
                    queue: queue.to_string(),
                })
            };
        };
        let held = slot.held(self.leases.leased(queue.as_str()));
        if held > 0 {
            return Err(ApiError::QueueNotEmpty {
                queue: queue.to_string(),
                depth: held,
            });
        }
        if queue.as_str() == DEAD_LETTER_QUEUE {
            return Err(ApiError::BadRequest {
                reason: "the dead-letter queue cannot be deleted".into(),
            });
        }
        if self.queues.remove(&queue).is_some() {
            for waiter in self.waiters.line(&queue) {
                self.end_waiter(
                    waiter,
                    Err(ApiError::UnknownQueue {
                        queue: queue.to_string(),
                    }),
                );
            }
            self.clients.queue_deleted(&queue);
        }
        Ok(Reply::Done)
    }

    pub(super) fn status(&self, now: Now) -> Status {
        let mut queues: Vec<QueueStatus> = self
            .queues
            .iter()
            .map(|(name, slot)| QueueStatus {
                name: name.to_string(),
                depth: slot.queue.depth(),
                leased: self.leases.leased(name.as_str()),
                bytes: slot.queue.bytes(),
                oldest_age_ms: slot
                    .queue
                    .oldest_put_at_ms()
                    .map(|at| now.wall_ms.saturating_sub(at)),
                max_depth: slot.max_depth(),
            })
            .collect();
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        let stats = self.storage.stats();
        Status {
            manager: self.name.to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs: now.mono_ms.saturating_sub(self.started_ms) / 1000,
            queues,
            messages_put: self.totals.put,
            messages_delivered: self.totals.delivered,
            store: StoreStatus {
                segments: stats.segments.len() as u64,
                bytes: stats.bytes_on_disk,
                last_batch_records: stats.batch_records_last,
                commits: stats.commits,
                records: stats.records,
                sync: self.limits.sync.as_str().to_owned(),
            },
            links: self.with_publication_counts(self.link_status(now)),
            routes: self.route_status(),
            messages_forwarded: self.totals.forwarded,
            messages_expired: self.totals.expired,
            topology: self.topology_status(),
            network: self.network_status(),
            messages_rerouted: self.totals.rerouted,
            gets_waiting: self.waiters.len() as u64,
            duplicates_dropped: self.custody.duplicates(),
            reports_made: self.reporting.made(),
            messages_resent: self.totals.resent,
            custody: self.custody_status(now),
            messages_confirmed: self.totals.confirmed,
            held_for_order: self.held_status(now),
            messages_unordered: self.custody.resequencer.timed_out(),
            publications_dropped: self.pubsub.totals.volatile_dropped,
        }
    }

    /// Answers a read of the status (metrics, the web console).
    pub(super) fn snapshot(&self, reply: tokio::sync::oneshot::Sender<Status>, now: Now) {
        let _ = reply.send(self.status(now));
    }

    /// Answers a read of the web console.
    pub(super) fn console(&mut self, query: crate::manager::ConsoleQuery, now: Now) {
        use crate::manager::{ConsoleQuery, QueueCounters};
        match query {
            ConsoleQuery::QueueCounters { reply } => {
                let counters = self
                    .queues
                    .iter()
                    .map(|(name, slot)| QueueCounters {
                        name: name.to_string(),
                        entered: slot.queue.entered_total(),
                        taken: slot.queue.taken_total(),
                    })
                    .collect();
                let _ = reply.send(counters);
            }
            ConsoleQuery::Browse { queue, max, reply } => {
                let messages = match self.browse(&queue, max, now) {
                    Ok(Reply::Messages(messages)) => Ok(messages),
                    Ok(_) => Ok(Vec::new()),
                    Err(error) => Err(error),
                };
                let _ = reply.send(messages);
            }
            ConsoleQuery::Loads { reply } => {
                let _ = reply.send(self.routing.loads());
            }
        }
    }
}

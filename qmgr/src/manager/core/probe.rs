//! Trace-route probes (`qmgr trace`): a request whose correlation id starts with
//! [`PROBE_CORRELATION_PREFIX`] travels like a message to its address, each manager on the way
//! adding itself and its time to its trace, and is never enqueued: where it arrives, or where
//! it cannot go on (no route, the next hop's link down, the hop limit), the manager answers it
//! instead, with the hops and the reason, as the request's reply.
//!
//! Invariants: a probe is non-persistent (no custody stamp), so a manager may consume it
//! without anyone waiting for its confirmation; a probe costs a normal message's hop, and its
//! answer is an ordinary message to the requester's reply queue (dropped if it has no
//! `reply_to`, which only a hand-made probe lacks).

use super::forward::{held_queue, transmission_neighbour};
use super::*;
use hopmq::protocol::{
    Delivery, PROBE_CORRELATION_PREFIX, PROBE_REASON_HEADER, PROBE_RESULT_HEADER,
    REPLY_QUEUE_PREFIX,
};

/// True if a message for `destination` with this correlation id is a probe; its answer, to a
/// reply queue with the same correlation id, is not.
pub(super) fn is_probe(destination: &str, correlation_id: Option<&str>) -> bool {
    correlation_id.is_some_and(|c| c.starts_with(PROBE_CORRELATION_PREFIX))
        && !destination.starts_with(REPLY_QUEUE_PREFIX)
}

/// What becomes of a probe at a manager.
enum Verdict {
    /// It goes on, like any message.
    PassOn,
    /// It reached its destination's manager.
    Arrived,
    /// It cannot go on, for this reason.
    Stopped(String),
}

/// A probe's answer: `arrived` or `stopped` with why, and its hops as lines of `MANAGER
/// AT_MS` (milliseconds since the epoch), the answering manager last.
fn answer(verdict: &Verdict, correlation_id: &str, hops: &[(&str, u64)]) -> OutgoingMessage {
    let mut headers = std::collections::BTreeMap::new();
    match verdict {
        Verdict::Stopped(reason) => {
            headers.insert(PROBE_RESULT_HEADER.to_owned(), "stopped".to_owned());
            headers.insert(PROBE_REASON_HEADER.to_owned(), reason.clone());
        }
        _ => {
            headers.insert(PROBE_RESULT_HEADER.to_owned(), "arrived".to_owned());
        }
    }
    let body: String = hops
        .iter()
        .map(|(manager, at_ms)| format!("{manager} {at_ms}\n"))
        .collect();
    OutgoingMessage {
        body: body.into_bytes(),
        headers,
        correlation_id: Some(correlation_id.to_owned()),
        persistent: true,
        ..Default::default()
    }
}

impl Core {
    /// A probe put here: answered at once if it cannot leave (its address is here, has no
    /// route, or its first link is down); `None` if it goes.
    pub(super) fn probe_at_origin(
        &mut self,
        address: &str,
        correlation_id: &str,
        now: Now,
    ) -> Result<Option<Reply>, ApiError> {
        let (queue, home) = self.resolve(address)?;
        let verdict = match home {
            None => Verdict::Arrived,
            Some(_) => self.probe_verdict((&queue, address), 1, now),
        };
        if matches!(verdict, Verdict::PassOn) {
            return Ok(None);
        }
        let hops = [(self.name.as_str(), now.wall_ms)];
        let message = answer(&verdict, correlation_id, &hops);
        let delivery = Delivery {
            id: self.ids.next(),
            body: message.body,
            headers: message.headers,
            priority: message.priority,
            expires_at_ms: None,
            correlation_id: message.correlation_id,
            reply_to: None,
            persistent: false,
            origin: self.name.to_string(),
            delivery_count: 1,
            trace: vec![hopmq::Trace {
                manager: self.name.to_string(),
                at_ms: now.wall_ms,
            }],
            lease: None,
        };
        Ok(Some(Reply::Messages(vec![delivery])))
    }

    /// A probe arriving from a neighbour: `None` if it goes on like any message; otherwise
    /// its answer's queue, record under `seq`, and body size, or nothing if it cannot be
    /// answered.
    pub(super) fn probe_arrival(
        &mut self,
        payload: &[u8],
        passing: &record::Passing<'_>,
        seq: u64,
        now: Now,
    ) -> Option<Option<(QueueName, Vec<u8>, usize)>> {
        let verdict = if passing.hops > self.limits.max_hops as usize {
            Verdict::Stopped(format!(
                "hop limit of {} exceeded at {}",
                self.limits.max_hops, self.name
            ))
        } else {
            match self.resolve_arrival(passing.destination) {
                Ok(queue) => {
                    self.probe_verdict((&queue, passing.destination), passing.hops + 1, now)
                }
                Err(reason) => Verdict::Stopped(format!("at {}: {reason}", self.name)),
            }
        };
        if matches!(verdict, Verdict::PassOn) {
            return None;
        }
        Some(self.probe_answer(payload, &verdict, seq, now))
    }

    /// Where a probe for `destination`, resolved to `queue`, stands, `hops` hops from its
    /// origin once it leaves.
    fn probe_verdict(
        &self,
        (queue, destination): (&QueueName, &str),
        hops: usize,
        now: Now,
    ) -> Verdict {
        if *queue == held_queue() {
            return Verdict::Stopped(format!(
                "at {}: no route towards `{destination}` (its links are down or drained)",
                self.name
            ));
        }
        let Some(neighbour) = transmission_neighbour(queue) else {
            return Verdict::Arrived;
        };
        if hops > self.limits.max_hops as usize {
            return Verdict::Stopped(format!(
                "hop limit of {} reached at {}",
                self.limits.max_hops, self.name
            ));
        }
        if !self.link_takes_new(&neighbour, now) {
            return Verdict::Stopped(format!("at {}: the link to {neighbour} is down", self.name));
        }
        Verdict::PassOn
    }

    /// The record of a probe's answer, to its `reply_to`, under `seq`.
    fn probe_answer(
        &mut self,
        payload: &[u8],
        verdict: &Verdict,
        seq: u64,
        now: Now,
    ) -> Option<(QueueName, Vec<u8>, usize)> {
        let stored = delivery::stored(payload).ok()?;
        let reply_to = stored.reply_to?;
        let correlation_id = stored.correlation_id?;
        let mut hops = stored.trace.clone();
        hops.push((self.name.as_str(), now.wall_ms));
        let message = answer(verdict, correlation_id, &hops);
        let queue = match self.resolve_arrival(reply_to) {
            Ok(queue) => queue,
            Err(reason) => {
                warn!(%reply_to, %reason, "a probe's answer has nowhere to go; dropped");
                return None;
            }
        };
        let envelope = Envelope {
            seq,
            queue: queue.as_str(),
            id: self.ids.next(),
            destination: reply_to,
            origin: self.name.as_str(),
            put_at_ms: now.wall_ms,
            stamp: None,
        };
        let record = delivery::encode_put(&envelope, &message);
        let bytes = message.body.len();
        Some((queue, record, bytes))
    }
}

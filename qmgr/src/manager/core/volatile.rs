//! Non-persistent publications: they skip every journal on their way. A manager splits one as
//! it does a persistent one ([`Core::fan_out`]), but its copies for local subscriptions live in
//! memory only and its shares for other managers go straight to the link as
//! [`ChannelFrame::Publications`], outside the channel's sequence: never stored, acknowledged
//! or sent again.
//!
//! Invariants: nothing here writes to the journal; what cannot go on at once (no route, no
//! connection, a connection's queue full, past the hop limit) is dropped and counted, never
//! held, so a non-persistent publication costs no memory once the event that made it is over
//! beyond its connection's bounded queue (`channel::connection::UNWINDOWED_BYTES_MAX`);
//! shares waiting in [`Volatile`] are sent when the event that queued them ends; a share that
//! arrives again (a transport's copy) is dropped by its id.

use std::collections::BTreeMap;

use super::publish::{Placing, copy_record, topic_of};
use super::*;
use crate::channel::frame::{BATCH_BYTES_MAX, BATCH_MESSAGES_MAX, ChannelFrame, WireMessage};
use crate::pubsub::Destinations;
use crate::pubsub::recent::RecentIds;
use crate::record::StoredMessage;
use hopmq_routing::topic::Topic;

/// Non-persistent publications' state: the shares made during one event, per next hop (sent
/// as frames when it ends), and the ids of those that arrived last.
#[derive(Default)]
pub(super) struct Volatile {
    pending: BTreeMap<ManagerName, Vec<WireMessage>>,
    /// What arrived last, so a copy is dropped (at most once, whatever the transport does).
    recent: RecentIds,
}

impl Core {
    /// Queues `share` of a non-persistent publication for `next_hop` (dropped without one).
    pub(super) fn send_volatile(
        &mut self,
        next_hop: Option<ManagerName>,
        stored: &StoredMessage<'_>,
        share: &Destinations,
        hop: Option<(&str, u64)>,
    ) {
        let Some(neighbour) = next_hop else {
            self.pubsub.totals.volatile_dropped += 1;
            return;
        };
        let queue = forward::transmission_queue(&neighbour);
        let record = copy_record(stored, (queue.as_str(), 0, &share.encode()), hop, &[]);
        let id = record::enqueue_dedup_key(&record).unwrap_or(stored.id);
        let message = WireMessage {
            id,
            payload: Bytes::from(record),
        };
        self.pubsub
            .volatile
            .pending
            .entry(neighbour)
            .or_default()
            .push(message);
    }

    /// Sends the shares queued during this event, as few frames as the batch limits allow;
    /// what no connection takes, or its budget for frames outside the window has no room for
    /// (a peer that cannot keep up), is dropped and counted.
    pub(super) fn flush_volatile(&mut self) {
        if self.pubsub.volatile.pending.is_empty() {
            return;
        }
        for (neighbour, messages) in std::mem::take(&mut self.pubsub.volatile.pending) {
            let (mut sent, mut bytes, mut dropped) = (0u64, 0u64, 0u64);
            let channel = self.link_state_channel(&neighbour);
            for frame in frames(messages) {
                let count = frame.len() as u64;
                let size: usize = frame.iter().map(|m| m.payload.len()).sum();
                match channel {
                    Some(channel)
                        if channel.send_unwindowed(ChannelFrame::Publications(frame), size) =>
                    {
                        sent += count;
                        bytes += size as u64;
                    }
                    _ => dropped += count,
                }
            }
            if let Some(link) = self.links.get_mut(&neighbour) {
                link.counters.messages_sent += sent;
                link.counters.bytes_sent += bytes;
            }
            if dropped > 0 {
                debug!(%neighbour, dropped, "non-persistent publications dropped: no connection takes them, or it is too far behind");
            }
            self.pubsub.links.entry(neighbour).or_default().1 += sent;
            self.pubsub.totals.volatile_dropped += dropped;
        }
    }

    /// Non-persistent publications from `from`: split here as they would be at their
    /// publisher's manager, without a write.
    pub(super) fn on_volatile_publications(
        &mut self,
        from: &ManagerName,
        messages: Vec<WireMessage>,
        now: Now,
    ) {
        self.pubsub.links.entry(from.clone()).or_default().0 += messages.len() as u64;
        let mut items = Vec::new();
        for message in &messages {
            if !self.pubsub.volatile.recent.first_time(message.id) {
                continue;
            }
            match self.volatile_arrival(&message.payload, now) {
                Ok(Some((stored, destinations, topic))) => {
                    let name = self.name.clone();
                    let hop = Some((name.as_str(), now.wall_ms));
                    let copies = (&stored, &destinations, &topic);
                    let out = (&mut items, Placing::default());
                    self.fan_out(copies, hop, false, out, now);
                }
                Ok(None) => self.pubsub.totals.volatile_dropped += 1,
                Err(reason) => {
                    warn!(%from, %reason, "a non-persistent publication from a neighbour dropped");
                    self.pubsub.totals.volatile_dropped += 1;
                }
            }
        }
        if !items.is_empty() {
            self.apply_fanned(items, None, Ok(Vec::new()), now);
        }
    }

    /// What a non-persistent publication from a neighbour is: its destinations and topic, or
    /// `None` if it is to be dropped quietly (expired, or past the hop limit: going round
    /// while managers disagree on the routes), or why it is not a publication at all.
    fn volatile_arrival<'a>(
        &self,
        payload: &'a [u8],
        now: Now,
    ) -> Result<Option<(StoredMessage<'a>, Destinations, Topic)>, String> {
        let passing = record::Passing::read(payload).map_err(|e| e.to_string())?;
        let destinations = Destinations::parse(passing.destination)
            .ok_or_else(|| {
                format!(
                    "destination `{}` is not a publication's",
                    passing.destination
                )
            })?
            .map_err(|e| e.to_string())?;
        if passing.expires_at_ms.is_some_and(|at| at <= now.wall_ms)
            || passing.hops > self.limits.max_hops as usize
        {
            return Ok(None);
        }
        let stored = delivery::stored(payload).map_err(|e| e.to_string())?;
        let topic = topic_of(&stored)?;
        Ok(Some((stored, destinations, topic)))
    }
}

/// `messages` cut into frames of at most [`BATCH_MESSAGES_MAX`] messages and about
/// [`BATCH_BYTES_MAX`] bytes (a lone larger message travels alone).
fn frames(messages: Vec<WireMessage>) -> Vec<Vec<WireMessage>> {
    let mut frames = Vec::new();
    let mut current: Vec<WireMessage> = Vec::new();
    let mut bytes = 0;
    for message in messages {
        let len = message.payload.len();
        if current.len() == BATCH_MESSAGES_MAX
            || (!current.is_empty() && bytes + len > BATCH_BYTES_MAX)
        {
            frames.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += len;
        current.push(message);
    }
    if !current.is_empty() {
        frames.push(current);
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize) -> WireMessage {
        WireMessage {
            id: 0,
            payload: Bytes::from(vec![0u8; len]),
        }
    }

    #[test]
    fn frames_respect_the_batch_limits() {
        let many: Vec<_> = (0..BATCH_MESSAGES_MAX * 2 + 1)
            .map(|_| message(10))
            .collect();
        let sizes: Vec<usize> = frames(many).iter().map(Vec::len).collect();
        assert_eq!(sizes, [BATCH_MESSAGES_MAX, BATCH_MESSAGES_MAX, 1]);

        let large = vec![message(100), message(BATCH_BYTES_MAX), message(100)];
        let sizes: Vec<usize> = frames(large).iter().map(Vec::len).collect();
        assert_eq!(
            sizes,
            [1, 1, 1],
            "a message past the byte limit travels alone"
        );

        let half = vec![message(BATCH_BYTES_MAX / 2); 3];
        let sizes: Vec<usize> = frames(half).iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1]);
        assert!(frames(Vec::new()).is_empty());
    }
}

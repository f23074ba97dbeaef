//! Re-sending around a failure: when the routes change (and at start, where a topology without
//! a link leaves no change to wait for), a stamped message in flight on a link that is out of
//! use (its neighbour dead, the link drained or removed) and that the route to its
//! destination no longer takes is copied at once to the place the new route gives (another
//! neighbour's transmission queue, or the held messages).
//!
//! The original stays with its channel, under its channel sequence number, so the channel's
//! invariants hold and a returning neighbour is simply given it again; whichever copy reaches
//! the destination second is dropped there by custody (both carry the same stamp). Messages
//! without a stamp (put by an older release) are never copied: nothing could tell the two
//! copies apart. A publication's share is copied once per manager it carries a stamp for,
//! each copy for that manager alone.
//!
//! Invariant: a message in flight is copied at most once per incarnation (`Link::resent`);
//! after a restart it may be copied again, which the destination's dedup absorbs.

// The forwarding types and imports: these handlers are part of `Core`, split by concern.
use super::*;
use crate::custody::{RESENT_HEADER, Stamp};

impl Core {
    /// Copies the stamped messages in flight on links the routes in force no longer lead
    /// them through; called after every change of the route table.
    pub(in crate::manager::core) fn resend_in_flight(&mut self, now: Now) {
        let neighbours: Vec<ManagerName> = self
            .links
            .iter()
            .filter(|(_, link)| !link.assigned.is_empty())
            .map(|(neighbour, _)| neighbour.clone())
            .collect();
        for neighbour in neighbours {
            // A neighbour that is alive passes on what it was given, whatever the routes now
            // prefer: copying would only make more copies to drop.
            if !self.link_usable(&neighbour) {
                self.resend_from(&neighbour, now);
            }
        }
    }

    fn resend_from(&mut self, neighbour: &ManagerName, now: Now) {
        let own = transmission_queue(neighbour);
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        let in_flight: Vec<Entry> = link
            .assigned
            .iter()
            .filter(|(_, _, entry)| !link.resent.contains(&entry.seq))
            .map(|(_, _, entry)| *entry)
            .collect();
        let still: rustc_hash::FxHashSet<u64> =
            link.assigned.iter().map(|(_, _, e)| e.seq).collect();
        link.resent.retain(|seq| still.contains(seq));
        for entry in in_flight {
            let payload = match self.payloads.get(&entry, &*self.storage) {
                Ok(payload) => payload,
                Err(error) => {
                    warn!(%neighbour, seq = entry.seq, %error, "cannot read a message in flight to send it around; it waits for its link");
                    continue;
                }
            };
            let Ok(passing) = record::Passing::read(&payload) else {
                continue;
            };
            if crate::pubsub::Destinations::is_publication(passing.destination) {
                if self.send_share_around(&payload, entry, &own, now) {
                    if let Some(link) = self.links.get_mut(neighbour) {
                        link.resent.insert(entry.seq);
                    }
                }
                continue;
            }
            let Some(stamp) = passing.stamp.and_then(Stamp::parse) else {
                continue;
            };
            let destination = passing.destination.to_owned();
            let target = match self.stamped_place(&destination, Some(stamp)) {
                Ok(target) if target != own && transmission_neighbour(&target).is_some() => target,
                Ok(target) if target.as_str() == HELD_QUEUE => target,
                // Still this link, here, or nowhere: it waits for its link.
                _ => continue,
            };
            if let Some(link) = self.links.get_mut(neighbour) {
                link.resent.insert(entry.seq);
            }
            debug!(%neighbour, seq = entry.seq, %target, "a message in flight is sent again along the new route");
            self.totals.resent += 1;
            self.copy_message(&payload, entry, &target, now);
        }
    }

    /// Copies a stamped publication share in flight on the link of `own` (its transmission
    /// queue), one copy per manager it carries a stamp for, when the routes to all of them
    /// now avoid that link; false if they do not (it waits for its link, as a queue message
    /// would).
    fn send_share_around(
        &mut self,
        payload: &[u8],
        entry: Entry,
        own: &QueueName,
        now: Now,
    ) -> bool {
        let Ok(stored) = delivery::stored(payload) else {
            return false;
        };
        let Some(list) = stored.header(crate::custody::STAMP_HEADER) else {
            return false;
        };
        let mut destinations = Vec::new();
        for stamp in crate::custody::stamps(list) {
            match self.stamped_place(stamp.destination, Some(stamp)) {
                Ok(target)
                    if target != *own
                        && (transmission_neighbour(&target).is_some()
                            || target.as_str() == HELD_QUEUE) =>
                {
                    destinations.push(stamp.destination.to_owned());
                }
                _ => return false,
            }
        }
        for destination in &destinations {
            debug!(seq = entry.seq, %destination, "a publication in flight is sent again along the new route");
            self.resend_share(payload, entry, destination, now);
        }
        !destinations.is_empty()
    }

    /// Writes a copy of `entry` (whose record is `payload`) into `target`, marked re-sent.
    pub(in crate::manager::core) fn copy_message(
        &mut self,
        payload: &[u8],
        entry: Entry,
        target: &QueueName,
        now: Now,
    ) {
        let seq = self.next_seq;
        let copies = copies_made(payload);
        let mut headers = vec![(RESENT_HEADER, copies.as_str())];
        let restamped = record::Passing::read(payload)
            .ok()
            .and_then(|passing| passing.stamp.and_then(Stamp::parse))
            .and_then(|stamp| self.custody.stamper.restamped(&stamp));
        if let Some(stamp) = &restamped {
            headers.push((crate::custody::STAMP_HEADER, stamp.as_str()));
        }
        let copy = match delivery::encode_moved(payload, target.as_str(), seq, &headers) {
            Ok(copy) => Bytes::from(copy),
            Err(error) => {
                warn!(seq = entry.seq, %error, "cannot copy a message in flight");
                return;
            }
        };
        self.next_seq += 1;
        self.write_copy(copy, (seq, entry), target, now);
    }

    /// Writes `copy`, a copy of `entry` stored under `seq`, into `target`.
    pub(in crate::manager::core) fn write_copy(
        &mut self,
        copy: Bytes,
        (seq, entry): (u64, Entry),
        target: &QueueName,
        now: Now,
    ) {
        self.ensure_slot(target).accept(false);
        let item = PutItem {
            queue: target.clone(),
            entry: Entry {
                seq,
                body: BodyRef::Memory,
                delivery_count: 0,
                put_at_ms: now.wall_ms,
                ..entry
            },
            payload: copy.clone(),
            persistent: true,
            handoff: None,
            channel_seq: None,
        };
        self.commit(
            vec![copy],
            super::super::Continuation::Moved { item, old: None },
        );
    }
}

/// The `hopmq.resent` value of a new copy of the message whose record is `payload`: how many
/// copies were made, this one included. Counted, so that each copy passes relays that stored
/// an earlier one (see `record::Passing::key`).
pub(in crate::manager::core) fn copies_made(payload: &[u8]) -> String {
    (record::Passing::read(payload).map_or(0, |p| p.resent) + 1).to_string()
}

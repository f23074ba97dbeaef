//! Receiving: frames from a neighbour's connection handled in order, the batches they carry
//! resolved message by message (late binding: a local queue, a next hop, the held messages,
//! the dead-letter queue) and written with the channel's new state in one atomic group, then
//! acknowledged; frames that arrive meanwhile wait in the link's inbox.

// The forwarding types and imports: these handlers are part of `Core`, split by concern.
use super::*;
use crate::manager::core::reports;
use hopmq::Report;

/// Where an arrival goes, why if it is dead-lettered, and the headers it takes there.
type Placing = (QueueName, Option<String>, Vec<(&'static str, String)>);

impl Core {
    /// Handles frames from `neighbour`'s inbound connection, in order; the stores they ask for
    /// become one journal write.
    pub(in crate::manager::core) fn receive(
        &mut self,
        neighbour: &ManagerName,
        frames: Vec<ChannelFrame>,
        now: Now,
    ) {
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        let mut merged: Option<Store> = None;
        let mut merged_bytes = 0;
        let mut frames = frames.into_iter();
        while let Some(frame) = frames.next() {
            let bytes = frame_bytes(&frame);
            if merged.is_some() && merged_bytes + bytes > RECEIVE_MERGE_BYTES_MAX {
                // The rest waits for the next write, so one group stays under the journal's
                // limit.
                let current = link.inbound.as_ref().map_or(0, |c| c.id);
                let rest: Vec<ChannelFrame> = std::iter::once(frame).chain(frames).collect();
                for frame in rest.into_iter().rev() {
                    link.inbox_bytes += frame_bytes(&frame);
                    link.inbox.push_front((current, frame));
                }
                break;
            }
            merged_bytes += bytes;
            match link.receiver.handle_frame(frame) {
                Ok(ReceiverOutput::Send(reply)) => {
                    if link.inbound.as_ref().is_some_and(|c| !c.send(reply)) {
                        self.close_channel(
                            neighbour,
                            ChannelDirection::Inbound,
                            "peer stopped reading",
                        );
                        break;
                    }
                }
                Ok(ReceiverOutput::Nothing) => {}
                Ok(ReceiverOutput::Store(store)) => match &mut merged {
                    Some(merged) => {
                        merged.messages_to_store.extend(store.messages_to_store);
                        merged.state = store.state;
                    }
                    None => merged = Some(store),
                },
                Err(error) => {
                    let why = error.to_string();
                    // What was accepted before the bad frame is still stored below.
                    self.close_channel(neighbour, ChannelDirection::Inbound, &why);
                    break;
                }
            }
        }
        if let Some(store) = merged {
            self.store_received(neighbour, store, now);
        }
    }

    /// An early copy of a batch on `connection`: handled as the stream's next frame would be
    /// if it follows on from what was taken, dropped if not (its stream copy follows). Never
    /// closes the channel: a copy the inbox has no room for is dropped too.
    pub(in crate::manager::core) fn on_early(
        &mut self,
        connection: u64,
        batch: crate::channel::frame::Batch,
        now: Now,
    ) {
        let Some((neighbour, ChannelDirection::Inbound)) = self.links.channel_of(connection) else {
            return;
        };
        let Some(link) = self.links.get_mut(&neighbour) else {
            return;
        };
        // Copies taken during a write wait in the inbox; the next one follows on from them.
        let queued_up_to = match link.inbox_up_to {
            Some((queued, up_to)) if queued == connection => up_to,
            _ => 0,
        };
        if !link
            .receiver
            .takes_early(batch.first_seq, batch.messages.len(), queued_up_to)
        {
            return;
        }
        let frame = ChannelFrame::Batch(batch);
        if link.receiving {
            // Queued behind what arrived before it, where the accepted point only grows: it
            // still follows on when its turn comes.
            if link.queue_in_inbox(connection, frame) {
                link.counters.early_batches += 1;
            }
            return;
        }
        link.counters.early_batches += 1;
        self.receive(&neighbour, vec![frame], now);
    }

    pub(in crate::manager::core) fn store_received(
        &mut self,
        neighbour: &ManagerName,
        store: Store,
        now: Now,
    ) {
        let mut items = Vec::with_capacity(store.messages_to_store.len());
        let mut ids = Vec::with_capacity(store.messages_to_store.len());
        let mut arrivals = Arrivals::default();
        // Bytes of the items so far (counted up to `counted`): a publication's copies must
        // leave the group within the journal's limit.
        let (mut written, mut counted) = (0u64, 0);
        let group_max = self.storage.group_bytes_max();
        for message in store.messages_to_store {
            ids.push(message.id);
            written += items[counted..]
                .iter()
                .map(|item: &PutItem| item.payload.len() as u64)
                .sum::<u64>();
            counted = items.len();
            let room = group_max.saturating_sub(ARRIVAL_GROUP_ROOM_BYTES + written);
            let placing = arrivals.placing(neighbour, Some(room));
            if self.publication_arrival(neighbour, &message.payload, (&mut items, placing), now) {
                // Placed, copies and all (or held here for order).
                self.pubsub.links.entry(neighbour.clone()).or_default().0 += 1;
            } else if let Some(item) = self.arrival(neighbour, &message.payload, now, &mut arrivals)
            {
                items.push(item);
            }
            self.place_released(&mut arrivals, &mut items, now);
        }
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        link.counters.messages_received += ids.len() as u64;
        link.receiving = true;
        let state = store.state;
        // Messages, then direct assignments, then the channel state: `place` takes the
        // locations in that order. The removal of handed-off messages comes last.
        let receive = Record::ChannelReceive(ReceiveRecord {
            from: neighbour.as_str(),
            epoch: state.epoch,
            sender_epoch: state.sender_epoch,
            stored_up_to: state.stored_up_to,
            reconcile_until: state.reconcile_until,
            ids: ids.clone(),
        });
        let receive = Bytes::from(record::encode(&receive));
        let payloads = hold::arrival_group(&items, &mut arrivals, Some(receive));

        self.commit(
            payloads,
            crate::manager::core::Continuation::Link(LinkWrite::Received {
                neighbour: neighbour.clone(),
                items,
                state,
                handoffs: arrivals.handoffs,
                direct: arrivals.direct,
                ids,
                admitted: arrivals.admitted,
                held_whole: arrivals.held_whole,
            }),
        );
    }

    /// Where a message arriving from `from` goes, re-encoded for this manager's journal; `None`
    /// when it is dropped (expired, or not a message at all).
    pub(super) fn arrival(
        &mut self,
        from: &ManagerName,
        payload: &[u8],
        now: Now,
        arrivals: &mut Arrivals,
    ) -> Option<PutItem> {
        let passing = match record::Passing::read(payload) {
            Ok(passing) => passing,
            Err(e) => {
                error!(%from, error = %e, "a neighbour sent a message that does not decode; dropped");
                return None;
            }
        };
        if passing.expires_at_ms.is_some_and(|at| at <= now.wall_ms) {
            debug!(id = passing.id, "message expired in transit; dropped");
            self.totals.expired += 1;
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let (queue, encoded, body_bytes, reason) =
            self.arrival_record(from, payload, &passing, (seq, &mut *arrivals), now)?;
        let reports = reports::requested(passing.reports, queue.as_str());
        let entry = Entry {
            seq,
            body: BodyRef::Memory,
            bytes: body_bytes as u32,
            priority: passing.priority,
            reports,
            expires_at_ms: passing.expires_at_ms.unwrap_or(u64::MAX),
            put_at_ms: now.wall_ms,
            correlation: correlation_hash(passing.correlation_id),
            delivery_count: 0,
        };
        let payload = Bytes::from(encoded);
        let handoff = self.hand_off(
            &queue,
            passing.correlation_id,
            &mut arrivals.handoffs,
            &mut arrivals.open,
        );
        if handoff.is_none() && !arrivals.open.is_empty() {
            // A later message must not overtake this one through a hand-off.
            arrivals.open.remove(&queue);
        }
        let channel_seq = match handoff {
            Some(_) => None,
            None => {
                let key = passing.key(1);
                self.assign_direct(&queue, seq, key, &payload, &mut arrivals.direct, now)
            }
        };
        self.ensure_slot(&queue).accept(handoff.is_some());
        if handoff.is_some() {
            arrivals.handed_off.push(seq);
        }
        self.arrival_reports(&passing, &queue, reason.as_deref(), handoff.is_some(), now);
        Some(PutItem {
            queue,
            entry,
            payload,
            persistent: true,
            handoff,
            channel_seq,
        })
    }

    /// The reports an arrival in `queue` owes: its arrival in its destination queue (and its
    /// delivery if a waiting get took it at once), or its dead-lettering, for `reason`.
    fn arrival_reports(
        &mut self,
        passing: &record::Passing<'_>,
        queue: &QueueName,
        reason: Option<&str>,
        handed: bool,
        now: Now,
    ) {
        let (Some(header), Some(reply_to)) = (passing.reports, passing.reply_to) else {
            return;
        };
        let reports: hopmq::Reports = header.parse().unwrap_or_default();
        let mut about = reports::About {
            id: passing.id,
            reply_to,
            queue: queue.as_str(),
            priority: passing.priority,
        };
        if reason.is_some() {
            about.queue = passing.destination.split('@').next().unwrap_or_default();
            if reports.has(Report::Exception) {
                self.report(Report::Exception, &about, reason, now);
            }
            return;
        }
        if !reports::is_destination(queue) {
            return;
        }
        if reports.has(Report::Arrival) {
            self.report(Report::Arrival, &about, None, now);
        }
        if handed && reports.has(Report::Delivery) {
            self.report(Report::Delivery, &about, None, now);
        }
    }

    /// Where an arrival goes (its queue here, or the dead-letter queue: past the hop limit, no
    /// place for it, or too large for this journal's groups), its record under `seq`, its
    /// body's size as stored, and why it was dead-lettered.
    fn arrival_record(
        &mut self,
        from: &ManagerName,
        payload: &[u8],
        passing: &record::Passing<'_>,
        (seq, arrivals): (u64, &mut Arrivals),
        now: Now,
    ) -> Option<(QueueName, Vec<u8>, usize, Option<String>)> {
        if super::super::probe::is_probe(passing.destination, passing.correlation_id) {
            if let Some(answer) = self.probe_arrival(payload, passing, seq, now) {
                return answer.map(|(queue, record, bytes)| (queue, record, bytes, None));
            }
        }
        let hops = passing.hops;
        let stamp = passing.stamp.and_then(Stamp::parse);
        // A stamped message is dead-lettered only at its destination, where custody sees
        // every copy (two copies dead-lettered at two relays would be two): past the hop limit
        // it still goes towards it, and past twice the limit (a loop while managers disagree
        // on the topology) it is held until the routes change.
        let passing_on = stamp.is_some_and(|s| s.destination != self.name.as_str());
        let looping = hops > self.limits.max_hops as usize;
        let (queue, reason) = if looping && !passing_on {
            (
                dead_letter_queue(),
                Some(format!(
                    "hop limit of {} exceeded (after {hops} hops)",
                    self.limits.max_hops
                )),
            )
        } else if looping && hops > 2 * self.limits.max_hops as usize {
            self.held_a_looping_message();
            (held_queue(), None)
        } else {
            match self.stamped_place(passing.destination, stamp) {
                Ok(queue) => (queue, None),
                Err(reason) => (dead_letter_queue(), Some(reason)),
            }
        };
        let (queue, reason, handover) = self.admission(
            from,
            (payload, passing),
            stamp,
            (queue, reason),
            arrivals,
            now,
        )?;
        let hop = (self.name.as_str(), now.wall_ms);
        let encoded = match reason.as_deref() {
            // The common case, rewritten around the bytes it keeps.
            None if handover.is_empty() => passing.rewrite(queue.as_str(), seq, hop),
            None => {
                let headers: Vec<(&str, &str)> =
                    handover.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let own = crate::custody::stamp_among(&headers, crate::custody::STAMP_HEADER);
                if let Some(own) = own {
                    // It leaves in this manager's custody, perhaps assigned to a channel at
                    // once: noted, so that its acknowledgement keeps it.
                    self.custody
                        .note_own(seq, own.destination, (own.epoch, own.number));
                }
                delivery::encode_arrived(&whole(payload, from)?, queue.as_str(), seq, hop, &headers)
            }
            Some(reason) => {
                warn!(id = passing.id, destination = passing.destination, %reason, "message dead-lettered on arrival");
                dead_lettered(&whole(payload, from)?, seq, hop, reason)
            }
        };
        // A message grown on its way (its trace), or one from a manager with larger segments,
        // may not fit this journal's groups: storing it would fail its whole batch on every
        // resend and wedge the link. It is dead-lettered without its body and headers instead.
        let group_bytes_max = self.storage.group_bytes_max();
        if encoded.len() as u64 + ARRIVAL_GROUP_ROOM_BYTES <= group_bytes_max {
            return Some((queue, encoded, passing.body_bytes, reason));
        }
        let reason = format!(
            "message of {} bytes is too large for this manager's journal (groups of at most \
             {group_bytes_max} bytes); its body and headers were dropped",
            encoded.len(),
        );
        warn!(id = passing.id, destination = passing.destination, %reason, "message dead-lettered on arrival");
        let mut stored = whole(payload, from)?;
        stored.body = &[];
        stored.headers.clear();
        let record = dead_lettered(&stored, seq, hop, &reason);
        Some((dead_letter_queue(), record, 0, Some(reason)))
    }

    /// What custody makes of an arrival resolved to `queue` (or dead-lettered for `reason`):
    /// where it goes, why, and the headers it takes; `None` if it is dropped or held.
    fn admission(
        &mut self,
        from: &ManagerName,
        (payload, passing): (&[u8], &record::Passing<'_>),
        stamp: Option<Stamp<'_>>,
        (queue, reason): (QueueName, Option<String>),
        arrivals: &mut Arrivals,
        now: Now,
    ) -> Option<Placing> {
        let mut headers = Vec::new();
        let ordered_at = arrivals.unordered.is_none().then_some(now.wall_ms);
        let (queue, reason) = match self.admit(stamp, passing, &queue, ordered_at) {
            Admission::Store(token) => {
                arrivals.admitted.extend(token);
                (queue, reason)
            }
            Admission::HandOver(token, handover) => {
                arrivals.admitted.push(token);
                headers = handover;
                (queue, reason)
            }
            Admission::Drop => return None,
            Admission::Hold(after) => {
                if let Some(stamp) = stamp {
                    let since = arrivals.held_since_ms.take();
                    let waiting = Waiting {
                        from: from.clone(),
                        payload: Bytes::copy_from_slice(payload),
                        expires_ms: passing.expires_at_ms,
                        since_ms: since.unwrap_or(now.mono_ms),
                    };
                    self.hold_arrival(stamp, after, waiting);
                }
                return None;
            }
            Admission::DeadLetter(why) => (dead_letter_queue(), Some(why)),
        };
        if let Some(stamp) = stamp.filter(|s| s.destination == self.name.as_str()) {
            self.release_after(stamp, arrivals);
            if let Some(why) = arrivals.unordered.take() {
                headers.push((UNORDERED_HEADER, why));
            }
        }
        Some((queue, reason, headers))
    }

    /// A link write finished.
    pub(in crate::manager::core) fn on_link_write(
        &mut self,
        write: LinkWrite,
        result: Result<Vec<Location>, StoreError>,
        now: Now,
    ) {
        match write {
            LinkWrite::Assigned { neighbour, state } => {
                let Some(link) = self.links.get_mut(&neighbour) else {
                    return;
                };
                link.assigning = false;
                match result {
                    Ok(locations) => {
                        let location = locations.last().copied();
                        let old = link.send_record.take();
                        link.send_record = location;
                        link.persisted_sender = Some(state);
                        if let Some(sender) = &mut link.sender {
                            if state.next_seq > 1 {
                                sender.handle_seq_durable(state.next_seq - 1);
                            }
                        }
                        self.swap_live(old, location);
                        self.flush(&neighbour, now.instant);
                        self.pump(&neighbour, now);
                    }
                    Err(error) => {
                        // The numbers handed out are not durable and were never sent: the
                        // messages go back to their queue and the numbers are reused.
                        warn!(%neighbour, %error, "writing channel sequence numbers failed; the messages wait");
                        self.unassign_lost(&neighbour);
                    }
                }
            }
            LinkWrite::ReceiveState { neighbour, state } => {
                let Some(link) = self.links.get_mut(&neighbour) else {
                    return;
                };
                link.receiving = false;
                match result {
                    Ok(locations) => {
                        let location = locations.first().copied();
                        let old = std::mem::replace(&mut link.receive_record, location);
                        link.durable_receiver = state;
                        self.swap_live(old, location);
                    }
                    // The old record stands; the next maintenance tick tries again.
                    Err(error) => warn!(%neighbour, %error, "rewriting a channel's state failed"),
                }
                self.receive_inbox(&neighbour, now);
            }
            LinkWrite::Released(released) => self.on_released_written(released, result, now),
            LinkWrite::Received {
                neighbour,
                items,
                state,
                handoffs,
                direct,
                ids,
                admitted,
                held_whole,
            } => {
                let placing = (items, handoffs, direct, held_whole);
                self.admitted_written(&admitted, &result);
                self.on_batch_stored(&neighbour, placing, state, &ids, result, now);
            }
        }
    }

    /// A batch received from `neighbour` was written (or failed): place its messages and
    /// acknowledge it, or roll the receiver back so that it is resent.
    fn on_batch_stored(
        &mut self,
        neighbour: &ManagerName,
        (items, handoffs, direct, held_whole): (
            Vec<PutItem>,
            Vec<Handoff>,
            Vec<DirectLink>,
            Vec<u64>,
        ),
        state: ReceiverState,
        ids: &[u128],
        result: Result<Vec<Location>, StoreError>,
        now: Now,
    ) {
        let locations = match result {
            Ok(locations) => locations,
            Err(error) => {
                error!(%neighbour, %error, "storing a batch from a neighbour failed; it will be resent");
                self.place_failed(items, handoffs, direct);
                if let Some(link) = self.links.get_mut(neighbour) {
                    link.receiving = false;
                    // Back to what is durable; the sender resends the rest.
                    link.receiver
                        .handle_store_failed(link.durable_receiver, ids);
                }
                self.close_channel(neighbour, ChannelDirection::Inbound, "local storage error");
                return;
            }
        };
        let mut locations = locations.into_iter();
        let placed = self.place(items, &mut locations, handoffs, direct, now);
        let record_location = locations.next();
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        link.receiving = false;
        link.durable_receiver = state;
        let old = link.receive_record.take();
        link.receive_record = record_location;
        let stalled = link
            .receiver
            .handle_stored(&state)
            .is_some_and(|ack| link.inbound.as_ref().is_some_and(|c| !c.send(ack)));
        self.swap_live(old, record_location);
        if stalled {
            self.close_channel(neighbour, ChannelDirection::Inbound, "peer stopped reading");
        }
        self.finish_placing(placed, now);
        // Before the link's next batch: its publications' copies must come after these.
        self.split_held_whole(&held_whole, now);
        self.receive_inbox(neighbour, now);
    }

    /// Handles the frames that waited while a write of the link was in flight.
    pub(in crate::manager::core) fn receive_inbox(&mut self, neighbour: &ManagerName, now: Now) {
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        let current = link.inbound.as_ref().map(|c| c.id);
        link.inbox_bytes = 0;
        // Frames this puts back (past one write's bytes) are no longer counted: copies after
        // them are refused until they are handled, which is safe.
        link.inbox_up_to = None;
        let waiting: Vec<ChannelFrame> = link
            .inbox
            .drain(..)
            .filter(|(connection, _)| Some(*connection) == current)
            .map(|(_, frame)| frame)
            .collect();
        if !waiting.is_empty() {
            self.receive(neighbour, waiting, now);
        }
    }
}

/// The whole message of an arrival `record::Passing` already read, for the rare paths that
/// change more than its queue, seq and trace (a dead letter's headers, a dropped body).
fn whole<'a>(payload: &'a [u8], from: &ManagerName) -> Option<record::StoredMessage<'a>> {
    match delivery::stored(payload) {
        Ok(stored) => Some(stored),
        // `Passing::read` checked every field, so this is a bug rather than a peer's garbage.
        Err(e) => {
            error!(%from, error = %e, "an arrival read in part does not decode whole; dropped");
            None
        }
    }
}

/// An arrival stored in this manager's dead-letter queue under `seq`, with `hop` joined to its
/// trace and headers saying why and where it was going.
fn dead_lettered(
    stored: &record::StoredMessage<'_>,
    seq: u64,
    hop: (&str, u64),
    reason: &str,
) -> Vec<u8> {
    delivery::encode_arrived(
        stored,
        DEAD_LETTER_QUEUE,
        seq,
        hop,
        &[
            (DEAD_LETTER_REASON_HEADER, reason),
            (DEAD_LETTER_QUEUE_HEADER, stored.destination),
        ],
    )
}

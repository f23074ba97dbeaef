//! Sending: messages moved from a transmission queue to the link's sender (only while the
//! channel is up, their channel sequence numbers written first), or given to an idle link's
//! sender within the commit that stores them; what the sender has for the wire, sent.

// The forwarding types and imports: these handlers are part of `Core`, split by concern.
use super::*;

impl Core {
    /// Moves waiting messages from `neighbour`'s transmission queue to its sender (only while
    /// the channel is up, so a message whose expiry passes while the link is down never
    /// leaves), and writes their channel sequence numbers.
    pub(in crate::manager::core) fn pump(&mut self, neighbour: &ManagerName, now: Now) {
        // A dead or drained link takes nothing new: what waits for it is re-routed. Nor
        // does one gone quiet, which may be about to die.
        if !self.link_takes_new(neighbour, now) {
            return;
        }
        let queue = transmission_queue(neighbour);
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        if link.assigning || link.sender_broken.is_some() {
            return;
        }
        let Some(sender) = &mut link.sender else {
            return;
        };
        if !sender.is_connected() {
            return;
        }
        let mut assigned = Vec::new();
        let mut expired = Vec::new();
        if let Some(slot) = self.queues.get_mut(&queue) {
            while assigned.len() < ASSIGN_MESSAGES_MAX {
                let taken = slot.queue.take(now.wall_ms, 1, None, |_| true);
                expired.extend(taken.expired);
                let Some(entry) = taken.entries.first().copied() else {
                    break;
                };
                if !sender.can_push(entry.bytes as usize) {
                    slot.queue.insert(entry);
                    break;
                }
                let payload = match self.payloads.get(&entry, &*self.storage) {
                    Ok(payload) => payload,
                    Err(e) => {
                        error!(%queue, seq = entry.seq, error = %e, "cannot read a message to forward; it stays queued");
                        slot.queue.insert(entry);
                        break;
                    }
                };
                let key = self
                    .custody
                    .note_sent(self.name.as_str(), entry.seq, &payload);
                match sender.push(key, payload) {
                    Ok(channel_seq) => {
                        if link.assigned.is_empty() {
                            link.progress_at = now.instant;
                        }
                        link.assigned.push_back((channel_seq, queue.clone(), entry));
                        assigned.push(entry.seq);
                    }
                    Err(e) => {
                        error!(%queue, seq = entry.seq, error = %e, "the sender refused a message; it stays queued");
                        slot.queue.insert(entry);
                        break;
                    }
                }
            }
        }
        let state = sender.state();
        let changed = link.persisted_sender != Some(state);
        if !expired.is_empty() {
            self.totals.expired += expired.len() as u64;
            self.remove_expired(expired);
        }
        if assigned.is_empty() && !changed {
            return;
        }
        self.write_sender_state(neighbour, state, assigned);
    }

    pub(in crate::manager::core) fn write_sender_state(
        &mut self,
        neighbour: &ManagerName,
        state: SenderState,
        assigned: Vec<u64>,
    ) {
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        link.assigning = true;
        let payload = record::encode(&Record::ChannelSend(SendRecord {
            to: neighbour.as_str(),
            epoch: state.epoch,
            receiver_epoch: state.receiver_epoch,
            next_seq: state.next_seq,
            assigned,
        }));
        // From the reserve, like a removal: a full disk must not stop a transmission queue
        // from draining (the assignment is small and lets messages leave).
        self.commit_freeing(
            vec![Bytes::from(payload)],
            crate::manager::core::Continuation::Link(LinkWrite::Assigned {
                neighbour: neighbour.clone(),
                state,
            }),
        );
    }

    /// Sends whatever the sender has for the wire.
    pub(in crate::manager::core) fn flush(&mut self, neighbour: &ManagerName, now: Instant) {
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        let (Some(sender), Some(channel)) = (&mut link.sender, &link.outbound) else {
            return;
        };
        while let Some(frame) = sender.poll_transmit(now) {
            if let ChannelFrame::Batch(batch) = &frame {
                link.counters.messages_sent += batch.messages.len() as u64;
                link.counters.bytes_sent += frame_bytes(&frame) as u64;
            }
            if !channel.send(frame) {
                // Full (the neighbour stopped reading) or gone (its close reaches the core
                // next): either way this connection is done.
                self.close_channel(
                    neighbour,
                    ChannelDirection::Outbound,
                    "peer stopped reading",
                );
                return;
            }
        }
    }

    /// The neighbour a transmission queue drains to, if it has a link: its name shared with
    /// the link, not parsed and allocated again (this runs for every message).
    pub(in crate::manager::core) fn transmission_link(
        &self,
        queue: &QueueName,
    ) -> Option<ManagerName> {
        let name = queue.as_str().strip_prefix(TRANSMISSION_QUEUE_PREFIX)?;
        self.links
            .get_key_value(name)
            .map(|(neighbour, _)| neighbour.clone())
    }

    /// Gives a message for `queue` straight to its link's sender if the link is idle (up,
    /// nothing waiting in or on its way into the queue, no assignment being written), or if
    /// this commit already does so for it. Returns its channel sequence number.
    /// `dedup_key` is the message's [`record::dedup_key`].
    pub(in crate::manager::core) fn assign_direct(
        &mut self,
        queue: &QueueName,
        seq: u64,
        dedup_key: u128,
        payload: &Bytes,
        direct: &mut Vec<DirectLink>,
        now: Now,
    ) -> Option<u64> {
        let neighbour = self.transmission_link(queue)?;
        let index = match direct.iter().position(|d| d.neighbour == neighbour) {
            Some(index) if direct[index].open => index,
            Some(_) => return None,
            None => {
                let slot = self.queues.get(queue);
                if slot.is_some_and(|s| !s.is_idle()) {
                    return None;
                }
                if !self.link_takes_new(&neighbour, now) {
                    return None;
                }
                let link = self.links.get_mut(&neighbour)?;
                if link.assigning || link.sender_broken.is_some() {
                    return None;
                }
                let sender = link.sender.as_ref()?;
                if !sender.is_connected() || !sender.can_push(payload.len()) {
                    return None;
                }
                link.assigning = true;
                direct.push(DirectLink {
                    neighbour: neighbour.clone(),
                    state: sender.state(),
                    seqs: Vec::new(),
                    open: true,
                });
                direct.len() - 1
            }
        };
        let link = self.links.get_mut(&neighbour)?;
        let sender = link.sender.as_mut()?;
        match sender.push(dedup_key, payload.clone()) {
            Ok(channel_seq) => {
                direct[index].seqs.push(seq);
                direct[index].state = sender.state();
                Some(channel_seq)
            }
            Err(_) => {
                direct[index].open = false;
                None
            }
        }
    }

    /// A message given its channel sequence number in the commit just made durable.
    pub(in crate::manager::core) fn place_assigned(
        &mut self,
        queue: QueueName,
        entry: Entry,
        channel_seq: u64,
        now: Now,
    ) {
        let Some(neighbour) = self.transmission_link(&queue) else {
            return;
        };
        if let Some(link) = self.links.get_mut(&neighbour) {
            debug_assert!(
                link.assigned
                    .back()
                    .is_none_or(|(s, _, _)| *s < channel_seq)
            );
            if link.assigned.is_empty() {
                link.progress_at = now.instant;
            }
            link.assigned.push_back((channel_seq, queue, entry));
        }
    }

    /// The direct assignments of a durable commit: their records are the next `locations`.
    /// Returns the links, for [`Core::direct_finished`].
    pub(in crate::manager::core) fn direct_placed(
        &mut self,
        direct: Vec<DirectLink>,
        locations: &mut impl Iterator<Item = Location>,
    ) -> Vec<ManagerName> {
        let mut names = Vec::with_capacity(direct.len());
        for d in direct {
            let location = locations.next();
            let Some(link) = self.links.get_mut(&d.neighbour) else {
                continue;
            };
            link.assigning = false;
            let old = std::mem::replace(&mut link.send_record, location);
            link.persisted_sender = Some(d.state);
            if let Some(sender) = &mut link.sender {
                if d.state.next_seq > 1 {
                    sender.handle_seq_durable(d.state.next_seq - 1);
                }
            }
            self.swap_live(old, location);
            names.push(d.neighbour);
        }
        names
    }

    /// Lets a link send what was just assigned to it, and assign what waits.
    pub(in crate::manager::core) fn direct_finished(&mut self, neighbour: &ManagerName, now: Now) {
        self.flush(neighbour, now.instant);
        self.pump(neighbour, now);
    }

    /// The commit carrying direct assignments failed: their numbers are reused.
    pub(in crate::manager::core) fn direct_failed(&mut self, direct: Vec<DirectLink>) {
        for d in direct {
            if let Some(link) = self.links.get_mut(&d.neighbour) {
                link.assigning = false;
                if let Some(sender) = &mut link.sender {
                    sender.handle_seq_lost();
                }
            }
        }
    }

    /// The sender's assignments above its durable point could not be written: its messages
    /// return to their transmission queue, in order, to be assigned again.
    pub(in crate::manager::core) fn unassign_lost(&mut self, neighbour: &ManagerName) {
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        let Some(sender) = &mut link.sender else {
            return;
        };
        sender.handle_seq_lost();
        let next_seq = sender.state().next_seq;
        let mut returned = Vec::new();
        while link
            .assigned
            .back()
            .is_some_and(|(seq, _, _)| *seq >= next_seq)
        {
            if let Some((_, queue, entry)) = link.assigned.pop_back() {
                returned.push((queue, entry));
            }
        }
        for (queue, entry) in returned {
            self.insert(&queue, entry);
        }
    }

    /// Messages given to a channel and not yet acked, for compaction: each with its neighbour
    /// and channel sequence number, which its copy must carry (an [`assignment_record`]) so
    /// that the number survives the segment that first recorded it.
    pub(in crate::manager::core) fn assigned_entries(
        &self,
    ) -> impl Iterator<Item = (&Entry, &ManagerName, u64)> {
        self.links.iter().flat_map(|(neighbour, link)| {
            // Numbers whose assignment is still being written may never become durable (the
            // write can fail and the numbers be reused): those messages wait for the next
            // compaction.
            let durable = link.sender.as_ref().map_or(0, Sender::durable_up_to);
            link.assigned
                .iter()
                .take_while(move |(seq, _, _)| *seq <= durable)
                .map(move |(channel_seq, _, entry)| (entry, neighbour, *channel_seq))
        })
    }

    /// Points the message `seq`, given to `neighbour`'s channel as `channel_seq`, at a new copy
    /// of its record; false if it is no longer there (acked meanwhile).
    pub(in crate::manager::core) fn relocate_assigned(
        &mut self,
        neighbour: &ManagerName,
        channel_seq: u64,
        seq: u64,
        body: BodyRef,
    ) -> bool {
        let Some(link) = self.links.get_mut(neighbour) else {
            return false;
        };
        // `assigned` is in channel-sequence order.
        let Ok(i) = link
            .assigned
            .binary_search_by_key(&channel_seq, |(channel_seq, _, _)| *channel_seq)
        else {
            return false;
        };
        match link.assigned.get_mut(i) {
            Some((_, _, entry)) if entry.seq == seq => {
                entry.body = body;
                true
            }
            _ => false,
        }
    }
}

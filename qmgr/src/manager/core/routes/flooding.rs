//! Link state: heartbeats and the dead interval, advertisements flooded to and from
//! neighbours (and the whole database to one that connects), and operator drains, each of
//! which may change this manager's own advertisement and so its routes.

// The routing types and imports: these handlers are part of `Core`, split by concern.
use super::*;
use crate::manager::core::Continuation;
use crate::store::{Location, StoreError};

impl Core {
    /// Every heartbeat interval: a heartbeat to each neighbour, and the dead interval checked
    /// for every neighbour.
    pub fn on_heartbeat(&mut self, now: Now) {
        self.event_now = now;
        let dead_interval = self.routing.dead_interval;
        let mut changed = false;
        for (neighbour, link) in self.links.iter_mut() {
            // On the neighbour's own connection: only that one proves to it that it can send
            // here (see `adjacency`).
            if let Some(channel) = &link.inbound {
                channel.send(ChannelFrame::LinkState(Vec::new()));
            }
            // A link the topology no longer has is not routed over anyway.
            let declared = self.routing.topology.link(&self.name, neighbour).is_some();
            if declared && link.adjacency.check(now.instant, dead_interval) == Some(Change::Dead) {
                warn!(%neighbour, ?dead_interval, "neighbour not heard within the dead interval; routing around its link");
                changed = true;
            }
        }
        if changed {
            self.refresh_routes(now);
        }
        if !self.routing.rerouting.is_empty() {
            self.continue_rerouting(now);
        }
        // A link skipped while it was quiet or stalled takes its waiting messages now.
        let neighbours: Vec<ManagerName> = self.links.keys().cloned().collect();
        for neighbour in neighbours {
            self.pump(&neighbour, now);
        }
    }

    /// Something arrived from `neighbour`.
    pub(in crate::manager::core) fn on_heard(&mut self, neighbour: &ManagerName, now: Now) {
        let Some(link) = self.links.get_mut(neighbour) else {
            return;
        };
        if link.adjacency.heard(now.instant) == Some(Change::Alive) {
            info!(%neighbour, "neighbour heard again; its link is back in the routes");
            for direction in [ChannelDirection::Outbound, ChannelDirection::Inbound] {
                self.send_database(neighbour, direction);
            }
            self.refresh_routes(now);
        }
    }

    /// Sends the whole link-state database to `neighbour` on its connection going
    /// `direction` (it just connected, or came back).
    pub(in crate::manager::core) fn send_database(
        &mut self,
        neighbour: &ManagerName,
        direction: ChannelDirection,
    ) {
        let Some(link) = self.links.get(neighbour) else {
            return;
        };
        let channel = match direction {
            ChannelDirection::Outbound => link.outbound.as_ref(),
            ChannelDirection::Inbound => link.inbound.as_ref(),
        };
        if let Some(channel) = channel {
            for frame in link_state_frames(self.routing.linkstate.advertisements()) {
                channel.send(frame);
            }
        }
    }

    /// The connection advertisements to `neighbour` go on: the neighbour's own, which carries
    /// only acks our way (ours may be full of batches), else ours.
    pub(in crate::manager::core) fn link_state_channel(
        &self,
        neighbour: &ManagerName,
    ) -> Option<&crate::channel::connection::Channel> {
        let link = self.links.get(neighbour)?;
        link.inbound.as_ref().or(link.outbound.as_ref())
    }

    /// Sends `advertisements` to every neighbour with a connection, but `except`.
    pub(in crate::manager::core) fn flood(
        &self,
        advertisements: &[Lsa],
        except: Option<&ManagerName>,
    ) {
        let frames = link_state_frames(advertisements.to_vec());
        for neighbour in self.links.keys() {
            if Some(neighbour) == except
                || self.routing.topology.link(&self.name, neighbour).is_none()
            {
                continue;
            }
            if let Some(channel) = self.link_state_channel(neighbour) {
                for frame in &frames {
                    channel.send(frame.clone());
                }
            }
        }
    }

    /// Advertisements (or a heartbeat, when empty) from `neighbour` on `connection`.
    pub(in crate::manager::core) fn on_link_state(
        &mut self,
        neighbour: &ManagerName,
        direction: ChannelDirection,
        lsas: Vec<Lsa>,
        now: Now,
    ) {
        if lsas.is_empty() {
            return;
        }
        // At most one advertisement per manager of the topology makes sense in a frame; more,
        // or a malformed one, is a broken peer: disconnected and logged.
        let invalid = if lsas.len() > self.routing.topology.managers().len() {
            Some(format!(
                "{} link-state advertisements in one frame, for {} managers",
                lsas.len(),
                self.routing.topology.managers().len()
            ))
        } else {
            lsas.iter()
                .find_map(|l| l.validate().err().map(|e| e.to_string()))
        };
        if let Some(why) = invalid {
            self.close_channel(neighbour, direction, &why);
            return;
        }
        let mut new: Vec<Lsa> = Vec::new();
        let mut newer_here: Vec<Lsa> = Vec::new();
        let mut renewed = false;
        for lsa in lsas {
            let origin = lsa.origin.clone();
            match self.routing.linkstate.receive(lsa.clone()) {
                Received::New => {
                    new.retain(|l| l.origin != origin);
                    new.push(lsa);
                }
                Received::OwnRenewed => renewed = true,
                Received::Ignored => {
                    // The neighbour holds an older one: tell it (OSPF does the same), so a
                    // stale advertisement does not linger where flooding has passed.
                    if let Some(held) = self.routing.linkstate.get(origin.as_str()) {
                        if held.is_newer_than(&lsa) && origin != self.name {
                            newer_here.push(held);
                        }
                    }
                }
            }
        }
        if !newer_here.is_empty() {
            if let Some(channel) = self.link_state_channel(neighbour) {
                for frame in link_state_frames(newer_here) {
                    channel.send(frame);
                }
            }
        }
        if !new.is_empty() {
            self.interest_heard(&new);
            self.flood(&new, Some(neighbour));
        }
        if renewed {
            let own = self.routing.linkstate.own();
            self.flood(&[own], None);
        }
        if !new.is_empty() {
            self.recompute_routes(false, now);
        }
    }

    /// `qmgr link up|down NAME`.
    /// Drains the link to `neighbour` or returns it to service: saved by the storage first,
    /// then in force and answered ([`Self::apply_drained`]), so an answered drain survives a
    /// crash.
    pub(in crate::manager::core) fn set_link_drained(
        &mut self,
        (connection, request): (u64, u64),
        neighbour: &str,
        drained: bool,
    ) -> Result<Option<Reply>, ApiError> {
        let bad = |reason: String| ApiError::BadRequest { reason };
        let neighbour =
            ManagerName::new(neighbour).map_err(|e| bad(format!("bad manager name: {e}")))?;
        if self.routing.topology.link(&self.name, &neighbour).is_none() {
            return Err(bad(format!(
                "`{}` has no link to `{neighbour}` in its topology",
                self.name
            )));
        }
        // From the newest set asked for: two drains in a row must not undo each other.
        let asked = self.routing.drained_asked.as_ref();
        let mut next = asked.unwrap_or(&self.routing.drained).clone();
        let changed = if drained {
            next.insert(neighbour)
        } else {
            next.remove(&neighbour)
        };
        if !changed && asked.is_none() {
            return Ok(Some(Reply::Done));
        }
        // Unchanged but a save is in flight: this answer too waits until it is durable.
        self.routing.drained_asked = Some(next.clone());
        let segment = self.storage.active_segment();
        let continuation = Continuation::Drained {
            connection,
            request,
            drained: next.clone(),
        };
        self.commits.made(continuation, segment);
        self.storage.save_drained(next);
        Ok(None)
    }

    /// A drained-links save completed: on success the set is in force.
    pub(in crate::manager::core) fn apply_drained(
        &mut self,
        drained: BTreeSet<ManagerName>,
        result: Result<Vec<Location>, StoreError>,
        now: Now,
    ) -> Result<Reply, ApiError> {
        if self.routing.drained_asked.as_ref() == Some(&drained) {
            self.routing.drained_asked = None;
        }
        if let Err(error) = result {
            return Err(ApiError::Storage {
                detail: format!("cannot record the drain: {error}"),
            });
        }
        for neighbour in drained.symmetric_difference(&self.routing.drained) {
            if drained.contains(neighbour) {
                info!(%neighbour, "link drained by an operator: routes avoid it, messages in flight on it finish");
            } else {
                info!(%neighbour, "link returned to service by an operator");
            }
        }
        self.routing.drained = drained;
        self.refresh_routes(now);
        Ok(Reply::Done)
    }
}

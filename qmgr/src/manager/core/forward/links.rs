//! The links to neighbours and the channel connections the driver opened for them.
//!
//! One owner over two views of the connections, so they can never disagree: per link (its
//! outbound and inbound [`Channel`]) and by the driver's connection id (which link a frame or a
//! close belongs to).
//!
//! Invariants: a connection id is in the index if and only if it is the outbound or inbound
//! channel of the link the index names, in that direction; a link, once made, stays for the
//! core's life (its state outlives its connections: messages in flight on it are delivered if
//! it returns); epochs come from one source seeded per incarnation, so two links never share
//! one and a simulation replays them.

use std::collections::BTreeMap;

use hopmq::ManagerName;
use rustc_hash::FxHashMap;

use super::{EpochSource, Link};
use crate::channel::connection::{Channel, ChannelDirection};

/// See the module documentation.
pub(in crate::manager::core) struct Links {
    by_neighbour: BTreeMap<ManagerName, Link>,
    /// The driver's connection id: which link, which way.
    channels: FxHashMap<u64, (ManagerName, ChannelDirection)>,
    epochs: EpochSource,
}

impl Links {
    pub(in crate::manager::core) fn new(entropy: u64) -> Self {
        Self {
            by_neighbour: BTreeMap::new(),
            channels: FxHashMap::default(),
            epochs: EpochSource::new(entropy),
        }
    }

    /// A fresh channel epoch.
    pub(in crate::manager::core) fn next_epoch(&mut self) -> u64 {
        self.epochs.next()
    }

    pub(in crate::manager::core) fn get(&self, neighbour: &ManagerName) -> Option<&Link> {
        self.by_neighbour.get(neighbour)
    }

    pub(in crate::manager::core) fn get_mut(
        &mut self,
        neighbour: &ManagerName,
    ) -> Option<&mut Link> {
        self.by_neighbour.get_mut(neighbour)
    }

    pub(in crate::manager::core) fn get_key_value<Q>(
        &self,
        neighbour: &Q,
    ) -> Option<(&ManagerName, &Link)>
    where
        ManagerName: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.by_neighbour.get_key_value(neighbour)
    }

    /// The link to `neighbour`, made by `make` if there is none.
    pub(in crate::manager::core) fn get_or_insert_with(
        &mut self,
        neighbour: &ManagerName,
        make: impl FnOnce() -> Link,
    ) -> &mut Link {
        self.by_neighbour
            .entry(neighbour.clone())
            .or_insert_with(make)
    }

    /// Links in neighbour-name order.
    pub(in crate::manager::core) fn iter(&self) -> impl Iterator<Item = (&ManagerName, &Link)> {
        self.by_neighbour.iter()
    }

    pub(in crate::manager::core) fn iter_mut(
        &mut self,
    ) -> impl Iterator<Item = (&ManagerName, &mut Link)> {
        self.by_neighbour.iter_mut()
    }

    pub(in crate::manager::core) fn keys(&self) -> impl Iterator<Item = &ManagerName> {
        self.by_neighbour.keys()
    }

    /// Makes `channel` the link's connection in `direction`; returns the one it replaces,
    /// which the caller closes. `None` (and `channel` dropped, which closes it) if there is no
    /// such link.
    pub(in crate::manager::core) fn attach(
        &mut self,
        neighbour: &ManagerName,
        direction: ChannelDirection,
        channel: Channel,
    ) -> Result<Option<Channel>, Channel> {
        let Some(link) = self.by_neighbour.get_mut(neighbour) else {
            return Err(channel);
        };
        self.channels
            .insert(channel.id, (neighbour.clone(), direction));
        let slot = match direction {
            ChannelDirection::Outbound => &mut link.outbound,
            ChannelDirection::Inbound => &mut link.inbound,
        };
        let old = slot.replace(channel);
        if let Some(old) = &old {
            self.channels.remove(&old.id);
        }
        Ok(old)
    }

    /// The link's connection in `direction`, taken out of both views.
    pub(in crate::manager::core) fn take_channel(
        &mut self,
        neighbour: &ManagerName,
        direction: ChannelDirection,
    ) -> Option<Channel> {
        let link = self.by_neighbour.get_mut(neighbour)?;
        let channel = match direction {
            ChannelDirection::Outbound => link.outbound.take(),
            ChannelDirection::Inbound => link.inbound.take(),
        }?;
        self.channels.remove(&channel.id);
        Some(channel)
    }

    /// Connection `connection` ended: out of both views. Returns whose it was, if the core
    /// still held it.
    pub(in crate::manager::core) fn detach(
        &mut self,
        connection: u64,
    ) -> Option<(ManagerName, ChannelDirection)> {
        let (neighbour, direction) = self.channels.remove(&connection)?;
        if let Some(link) = self.by_neighbour.get_mut(&neighbour) {
            let slot = match direction {
                ChannelDirection::Outbound => &mut link.outbound,
                ChannelDirection::Inbound => &mut link.inbound,
            };
            if slot.as_ref().is_some_and(|c| c.id == connection) {
                *slot = None;
            }
        }
        Some((neighbour, direction))
    }

    /// Whose connection `connection` is, if the core holds it.
    pub(in crate::manager::core) fn channel_of(
        &self,
        connection: u64,
    ) -> Option<(ManagerName, ChannelDirection)> {
        self.channels.get(&connection).cloned()
    }
}

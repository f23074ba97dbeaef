//! Message payloads the core keeps in memory: those of non-persistent messages (their only
//! copy) and a bounded cache of persistent ones, so the common paths (put then get, arrival
//! then forward) never read the disk.
//!
//! The cache is a window of consecutive message seqs rather than a hash map: seqs are given out
//! in order and messages mostly leave in about that order, so keeping, reading and forgetting
//! touch neighbouring slots instead of random places in a table far larger than the CPU's
//! caches. Invariants: `cache_bytes` is the sum of the cached payloads' lengths and never
//! exceeds `cache_bytes_max`; the window's first slot, if any, is occupied; the window spans
//! at most [`WINDOW_SLOTS_MAX`] seqs.

use std::collections::VecDeque;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use crate::manager::storage::Storage;
use crate::queue::local::{BodyRef, Entry};
use crate::store::StoreError;

/// The widest span of seqs the cache covers (8 MiB of slots). A payload that would widen it
/// further pushes out the oldest ones: a message that stays while many pass it is read from
/// the journal when its turn comes.
const WINDOW_SLOTS_MAX: usize = 256 * 1024;

#[derive(Default)]
pub(super) struct Payloads {
    memory: FxHashMap<u64, Bytes>,
    /// The seq of `window[0]`.
    base: u64,
    window: VecDeque<Option<Bytes>>,
    cache_bytes: u64,
    cache_bytes_max: u64,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum PayloadError {
    #[error("message {0} has no payload in memory")]
    Missing(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Payloads {
    pub(super) fn new(cache_bytes_max: u64) -> Self {
        Self {
            cache_bytes_max,
            ..Self::default()
        }
    }

    pub(super) fn keep(&mut self, entry: &Entry, payload: Bytes) {
        match entry.body {
            BodyRef::Memory => {
                self.memory.insert(entry.seq, payload);
            }
            BodyRef::Journal { .. } => self.cache(entry.seq, payload),
        }
    }

    pub(super) fn get(&self, entry: &Entry, storage: &dyn Storage) -> Result<Bytes, PayloadError> {
        match entry.body {
            BodyRef::Memory => self
                .memory
                .get(&entry.seq)
                .cloned()
                .ok_or(PayloadError::Missing(entry.seq)),
            BodyRef::Journal { .. } => match (self.cached(entry.seq), entry.body.location()) {
                (Some(payload), _) => Ok(payload.clone()),
                (None, Some(location)) => Ok(storage.read(location)?.into()),
                (None, None) => Err(PayloadError::Missing(entry.seq)),
            },
        }
    }

    /// What `entry`'s record takes (body, headers and envelope): its length in the journal, or
    /// that of the payload kept in memory.
    pub(super) fn record_bytes(&self, entry: &Entry) -> u64 {
        match entry.body {
            BodyRef::Journal { len, .. } => u64::from(len),
            BodyRef::Memory => self
                .memory
                .get(&entry.seq)
                .map_or(u64::from(entry.bytes), |payload| payload.len() as u64),
        }
    }

    pub(super) fn forget(&mut self, entry: &Entry) {
        // Both, whatever the body says now: cheap, and a payload can never be left behind.
        self.memory.remove(&entry.seq);
        self.uncache(entry.seq);
    }

    fn cached(&self, seq: u64) -> Option<&Bytes> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.window.get(index)?.as_ref()
    }

    fn cache(&mut self, seq: u64, payload: Bytes) {
        let len = payload.len() as u64;
        if self.cache_bytes + len > self.cache_bytes_max {
            return;
        }
        if self.window.is_empty() {
            self.base = seq;
        }
        // Older than the window: kept out, like any payload the cache has no room for.
        let Some(index) = seq
            .checked_sub(self.base)
            .and_then(|index| usize::try_from(index).ok())
        else {
            return;
        };
        let index = if index >= WINDOW_SLOTS_MAX {
            self.drop_front(index + 1 - WINDOW_SLOTS_MAX);
            if self.window.is_empty() {
                self.base = seq;
            }
            (seq - self.base) as usize
        } else {
            index
        };
        if index >= self.window.len() {
            self.window.resize(index + 1, None);
        }
        if let Some(old) = self.window[index].replace(payload) {
            self.cache_bytes -= old.len() as u64;
        }
        self.cache_bytes += len;
    }

    fn uncache(&mut self, seq: u64) {
        let Some(index) = seq
            .checked_sub(self.base)
            .and_then(|index| usize::try_from(index).ok())
        else {
            return;
        };
        if let Some(payload) = self.window.get_mut(index).and_then(Option::take) {
            self.cache_bytes -= payload.len() as u64;
        }
        self.trim_front();
    }

    /// Drops the first `slots` slots of the window, cached payloads included.
    fn drop_front(&mut self, slots: usize) {
        for payload in self.window.drain(..slots.min(self.window.len())).flatten() {
            self.cache_bytes -= payload.len() as u64;
        }
        self.base += slots as u64;
        self.trim_front();
    }

    /// Restores the invariant that the first slot is occupied.
    fn trim_front(&mut self) {
        while let Some(None) = self.window.front() {
            self.window.pop_front();
            self.base += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(payloads: &Payloads) -> Vec<u64> {
        (payloads.base..payloads.base + payloads.window.len() as u64)
            .filter(|&seq| payloads.cached(seq).is_some())
            .collect()
    }

    fn check(payloads: &Payloads) {
        let sum: u64 = payloads
            .window
            .iter()
            .flatten()
            .map(|p| p.len() as u64)
            .sum();
        assert_eq!(payloads.cache_bytes, sum);
        assert!(payloads.cache_bytes <= payloads.cache_bytes_max);
        assert!(payloads.window.len() <= WINDOW_SLOTS_MAX);
        assert!(payloads.window.front().is_none_or(Option::is_some));
    }

    #[test]
    fn payloads_leave_in_any_order_and_the_window_follows() {
        let mut payloads = Payloads::new(1 << 20);
        for seq in 10..20 {
            payloads.cache(seq, Bytes::from(vec![1u8; 100]));
        }
        payloads.uncache(12);
        payloads.uncache(10);
        check(&payloads);
        assert_eq!(payloads.base, 11);
        payloads.uncache(11);
        assert_eq!(payloads.base, 13);
        assert_eq!(cached(&payloads), (13..20).collect::<Vec<_>>());
        // Forgetting what is not cached, below or above the window, changes nothing.
        payloads.uncache(3);
        payloads.uncache(400);
        for seq in 13..20 {
            payloads.uncache(seq);
        }
        check(&payloads);
        assert!(payloads.window.is_empty());
        assert_eq!(payloads.cache_bytes, 0);
        // An empty window starts again wherever the next payload is.
        payloads.cache(1000, Bytes::from_static(b"x"));
        assert_eq!(cached(&payloads), vec![1000]);
        // Older than the window: not cached.
        payloads.cache(999, Bytes::from_static(b"y"));
        assert_eq!(cached(&payloads), vec![1000]);
        check(&payloads);
    }

    #[test]
    fn the_cache_keeps_to_its_bytes() {
        let mut payloads = Payloads::new(250);
        for seq in 0..5 {
            payloads.cache(seq, Bytes::from(vec![0u8; 100]));
        }
        assert_eq!(cached(&payloads), vec![0, 1]);
        payloads.uncache(0);
        payloads.cache(5, Bytes::from(vec![0u8; 100]));
        assert_eq!(cached(&payloads), vec![1, 5]);
        check(&payloads);
    }

    #[test]
    fn a_payload_far_ahead_pushes_out_the_oldest() {
        let mut payloads = Payloads::new(1 << 20);
        payloads.cache(0, Bytes::from_static(b"old"));
        payloads.cache(5, Bytes::from_static(b"kept"));
        let far = WINDOW_SLOTS_MAX as u64 + 2;
        payloads.cache(far, Bytes::from_static(b"new"));
        check(&payloads);
        assert_eq!(cached(&payloads), vec![5, far]);
        // So far ahead that nothing stays.
        let farther = far + 10 * WINDOW_SLOTS_MAX as u64;
        payloads.cache(farther, Bytes::from_static(b"newer"));
        check(&payloads);
        assert_eq!(cached(&payloads), vec![farther]);
        assert_eq!(payloads.base, farther);
    }
}

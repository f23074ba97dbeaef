//! Which journal segments still hold live messages, and how much: what decides when a
//! segment can be deleted and when it is worth compacting.
//!
//! Invariant: a segment's entry exists exactly while at least one live message (queued,
//! leased or being handed over) has its record there; counts and bytes are sums over those
//! messages.

use std::collections::BTreeMap;

/// Live records per segment.
#[derive(Debug, Default)]
pub struct Liveness {
    segments: BTreeMap<u64, Live>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Live {
    records: u64,
    bytes: u64,
}

impl Liveness {
    /// A live record of `len` payload bytes in `segment`.
    pub fn add(&mut self, segment: u64, len: u32) {
        let live = self.segments.entry(segment).or_default();
        live.records += 1;
        live.bytes += u64::from(len);
    }

    /// The record of `len` bytes in `segment` is dead.
    pub fn remove(&mut self, segment: u64, len: u32) {
        if let Some(live) = self.segments.get_mut(&segment) {
            live.records -= 1;
            live.bytes -= u64::from(len);
            if live.records == 0 {
                self.segments.remove(&segment);
            }
        }
    }

    /// The oldest segment holding a live record.
    pub fn oldest(&self) -> Option<u64> {
        self.segments.keys().next().copied()
    }

    /// Live payload bytes in `segment`.
    pub fn bytes(&self, segment: u64) -> u64 {
        self.segments.get(&segment).map_or(0, |live| live.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_live_while_a_record_does() {
        let mut liveness = Liveness::default();
        liveness.add(3, 10);
        liveness.add(3, 20);
        liveness.add(5, 1);
        assert_eq!(liveness.oldest(), Some(3));
        assert_eq!(liveness.bytes(3), 30);
        liveness.remove(3, 10);
        liveness.remove(3, 20);
        assert_eq!(liveness.oldest(), Some(5));
        assert_eq!(liveness.bytes(3), 0);
        liveness.remove(5, 1);
        assert_eq!(liveness.oldest(), None);
    }
}

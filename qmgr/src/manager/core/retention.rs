//! Journal retention: which segments are still needed, when dead ones are retired, and when a
//! mostly dead one is worth compacting.
//!
//! Only a prefix of the journal is ever deleted: removal records in a segment refer to
//! messages in older ones, so a segment goes only once everything before it is gone; nor may a
//! segment go that a commit still in flight may have written to (its records are durable but
//! not yet counted as live). The core tells this owner which records are live (through
//! [`Liveness`]) and which segment the journal writes and the oldest commit in flight pinned;
//! this owner answers what to retire and what to compact.
//!
//! Invariants: `retired_below` only grows, and every segment before it has been handed to the
//! storage to delete or keep as a spare; at most one compaction is in progress
//! (`relocating` counts its records not yet written).

use crate::manager::liveness::Liveness;

/// Compact a segment when its live bytes are under 1/this of a segment.
const COMPACT_LIVE_FRACTION: u64 = 4;
/// ...and at least this many segments lie between it and the active one (so a segment that
/// its consumers are about to drain is left to die on its own).
const COMPACT_DISTANCE_MIN: u64 = 2;
/// ...and it has been the oldest live segment for this long. The front of a transmission queue
/// or a local queue that is draining frees its segment within moments; copying those messages
/// (a relay behind on a saturated line had 16k of them in one segment) is pure extra work, so
/// only messages that stay are copied.
pub(in crate::manager) const COMPACT_AGE_MS: u64 = 2_000;

/// See the module documentation.
pub(super) struct Retention {
    liveness: Liveness,
    segment_bytes: u64,
    /// Records of the compaction in progress not yet written.
    relocating: u64,
    /// The oldest live segment and since when (monotonic ms) it has been the oldest.
    oldest_live_since: Option<(u64, u64)>,
    /// Every journal segment before this one has been retired.
    retired_below: u64,
}

/// Where the journal stands when retention is asked.
#[derive(Debug, Clone, Copy)]
pub(super) struct Head {
    /// The segment appends go to.
    pub(super) active: u64,
    /// The oldest segment a commit in flight may have written to.
    pub(super) oldest_in_flight: Option<u64>,
}

impl Retention {
    pub(super) fn new(liveness: Liveness, segment_bytes: u64) -> Self {
        Self {
            liveness,
            segment_bytes,
            relocating: 0,
            oldest_live_since: None,
            retired_below: 0,
        }
    }

    /// A live record of `len` bytes in `segment`.
    pub(super) fn live(&mut self, segment: u64, len: u32) {
        self.liveness.add(segment, len);
    }

    /// The record of `len` bytes in `segment` is dead.
    pub(super) fn dead(&mut self, segment: u64, len: u32) {
        self.liveness.remove(segment, len);
    }

    /// The oldest segment still needed.
    pub(super) fn oldest_needed(&self, head: Head) -> u64 {
        self.liveness
            .oldest()
            .unwrap_or(head.active)
            .min(head.active)
            .min(head.oldest_in_flight.unwrap_or(head.active))
    }

    /// The segment before which everything may be retired now, if that is more than before.
    /// The caller retires them and then calls [`Self::retired`].
    pub(super) fn retirable_below(&self, head: Head) -> Option<u64> {
        let oldest = self.oldest_needed(head);
        (oldest > self.retired_below).then_some(oldest)
    }

    /// Everything before `below` was retired.
    pub(super) fn retired(&mut self, below: u64) {
        self.retired_below = self.retired_below.max(below);
    }

    /// The segment to compact now, with its live bytes, if one is worth it: the oldest needed
    /// segment, oldest for [`COMPACT_AGE_MS`], mostly dead, far enough from the head, and no
    /// compaction in progress. Called at every maintenance tick: it also keeps the age.
    pub(super) fn compaction_due(&mut self, head: Head, now_ms: u64) -> Option<(u64, u64)> {
        let oldest = self.oldest_needed(head);
        let since = match self.oldest_live_since {
            Some((segment, since)) if segment == oldest => since,
            _ => {
                self.oldest_live_since = Some((oldest, now_ms));
                now_ms
            }
        };
        if oldest >= head.active
            || self.relocating > 0
            || now_ms.saturating_sub(since) < COMPACT_AGE_MS
        {
            return None;
        }
        let live_bytes = self.liveness.bytes(oldest);
        let worth_it = live_bytes <= self.segment_bytes / COMPACT_LIVE_FRACTION
            && head.active - oldest >= COMPACT_DISTANCE_MIN;
        worth_it.then_some((oldest, live_bytes))
    }

    /// A compacted copy of one record is being written.
    pub(super) fn relocation_started(&mut self) {
        self.relocating += 1;
    }

    /// A compacted copy's write ended (durable or failed).
    pub(super) fn relocation_ended(&mut self) {
        self.relocating = self.relocating.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT: u64 = 1000;

    fn head(active: u64) -> Head {
        Head {
            active,
            oldest_in_flight: None,
        }
    }

    #[test]
    fn only_a_prefix_older_than_every_live_record_and_commit_is_retired() {
        let mut retention = Retention::new(Liveness::default(), SEGMENT);
        retention.live(3, 10);
        retention.live(5, 10);
        assert_eq!(retention.retirable_below(head(7)), Some(3));
        retention.retired(3);
        assert_eq!(retention.retirable_below(head(7)), None, "retired once");
        retention.dead(3, 10);
        let pinned = Head {
            active: 7,
            oldest_in_flight: Some(4),
        };
        assert_eq!(
            retention.retirable_below(pinned),
            Some(4),
            "a commit in flight pins its segment"
        );
        retention.retired(4);
        retention.dead(5, 10);
        assert_eq!(
            retention.retirable_below(head(7)),
            Some(7),
            "nothing live: up to the active one"
        );
    }

    #[test]
    fn a_mostly_dead_old_segment_is_compacted_once_it_stayed_oldest_long_enough() {
        let mut retention = Retention::new(Liveness::default(), SEGMENT);
        retention.live(2, 100);
        assert_eq!(
            retention.compaction_due(head(6), 0),
            None,
            "just became the oldest"
        );
        assert_eq!(retention.compaction_due(head(6), COMPACT_AGE_MS - 1), None);
        assert_eq!(
            retention.compaction_due(head(6), COMPACT_AGE_MS),
            Some((2, 100))
        );
        retention.relocation_started();
        assert_eq!(
            retention.compaction_due(head(6), COMPACT_AGE_MS + 1),
            None,
            "one compaction at a time"
        );
        retention.relocation_ended();
        assert_eq!(
            retention.compaction_due(head(6), COMPACT_AGE_MS + 1),
            Some((2, 100))
        );
    }

    #[test]
    fn a_live_or_recent_segment_is_left_alone() {
        let mut retention = Retention::new(Liveness::default(), SEGMENT);
        retention.live(2, 600);
        retention.compaction_due(head(6), 0);
        assert_eq!(
            retention.compaction_due(head(6), COMPACT_AGE_MS),
            None,
            "mostly live"
        );
        let mut near = Retention::new(Liveness::default(), SEGMENT);
        near.live(5, 10);
        near.compaction_due(head(6), 0);
        assert_eq!(
            near.compaction_due(head(6), COMPACT_AGE_MS),
            None,
            "next to the head"
        );
    }

    #[test]
    fn a_new_oldest_segment_starts_its_age_afresh() {
        let mut retention = Retention::new(Liveness::default(), SEGMENT);
        retention.live(1, 10);
        retention.live(2, 10);
        retention.compaction_due(head(6), 0);
        retention.dead(1, 10);
        assert_eq!(retention.compaction_due(head(6), COMPACT_AGE_MS), None);
        assert_eq!(
            retention.compaction_due(head(6), 2 * COMPACT_AGE_MS),
            Some((2, 10))
        );
    }
}

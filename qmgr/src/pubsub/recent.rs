//! The ids of the non-persistent publications a manager received last, so a copy of one that
//! comes again is dropped: they travel outside the channels' numbered streams, which is what
//! drops copies of everything else.
//!
//! Invariant: at most [`RECENT_IDS_MAX`] ids are remembered; the oldest is forgotten first.

use std::collections::VecDeque;

use rustc_hash::FxHashSet;

/// How many ids are remembered: a copy that comes later than this many others is not
/// recognised (a transport copies a frame right behind the original, if ever).
pub const RECENT_IDS_MAX: usize = 16 * 1024;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct RecentIds {
    order: VecDeque<u128>,
    known: FxHashSet<u128>,
}

impl RecentIds {
    /// True the first time `id` is seen (among the last [`RECENT_IDS_MAX`]); it is then
    /// remembered.
    pub fn first_time(&mut self, id: u128) -> bool {
        if !self.known.insert(id) {
            return false;
        }
        if self.order.len() == RECENT_IDS_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.known.remove(&oldest);
            }
        }
        self.order.push_back(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_recognised_until_its_id_is_forgotten() {
        let mut recent = RecentIds::default();
        assert!(recent.first_time(1));
        assert!(!recent.first_time(1));
        for id in 2..=RECENT_IDS_MAX as u128 {
            assert!(recent.first_time(id));
        }
        assert!(!recent.first_time(1), "still among the last RECENT_IDS_MAX");
        assert!(recent.first_time(0));
        assert!(recent.first_time(1), "forgotten, the oldest first");
        assert_eq!(recent.order.len(), RECENT_IDS_MAX);
        assert_eq!(recent.known.len(), RECENT_IDS_MAX);
    }
}

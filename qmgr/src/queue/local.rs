//! One local queue's ordering state: which message is handed out next.
//!
//! Plain data, no I/O, time passed in. The queue holds small [`Entry`] values (where the body
//! is, its size, priority, expiry), never bodies, so a deep queue costs ~50 bytes a message.
//!
//! Invariants: within a priority, entries are in increasing `seq` (put order), including after
//! an entry returns from a lease; higher priorities are always taken first; an entry whose
//! expiry has passed is never returned by [`LocalQueue::take`]; `depth` and `bytes` equal the
//! sums over the entries held.

use std::collections::VecDeque;

use hopmq::PRIORITY_MAX;

use crate::store::Location;

/// Where a message's full record lives. Compact on purpose (12 bytes of payload): a deep
/// queue holds millions of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRef {
    /// In the journal, at this segment, offset and length.
    Journal { segment: u32, offset: u32, len: u32 },
    /// Only in memory (a non-persistent message), under its seq.
    Memory,
}

impl BodyRef {
    /// The journal location of a record. Segment ids stay far below `u32::MAX` (one per
    /// segment written) and offsets below the segment size limit (1 GiB), so they fit.
    pub fn journal(location: Location) -> Self {
        debug_assert!(
            location.segment <= u64::from(u32::MAX) && location.offset <= u64::from(u32::MAX)
        );
        Self::Journal {
            segment: u32::try_from(location.segment).unwrap_or(u32::MAX),
            offset: u32::try_from(location.offset).unwrap_or(u32::MAX),
            len: location.len,
        }
    }

    /// The journal location, for a journaled record.
    pub fn location(&self) -> Option<Location> {
        match *self {
            Self::Journal {
                segment,
                offset,
                len,
            } => Some(Location {
                segment: u64::from(segment),
                offset: u64::from(offset),
                len,
            }),
            Self::Memory => None,
        }
    }
}

/// A queued message, as the queue sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The manager-wide put order; unique.
    pub seq: u64,
    /// Where the record is.
    pub body: BodyRef,
    /// Body size, for limits and status.
    pub bytes: u32,
    /// 0 to 9.
    pub priority: u8,
    /// The reports its put asked for that may still be due (none once it is dead-lettered).
    pub reports: hopmq::Reports,
    /// Milliseconds since the epoch; `u64::MAX` for never.
    pub expires_at_ms: u64,
    /// When it was put, in milliseconds since the epoch.
    pub put_at_ms: u64,
    /// A hash of its correlation id, 0 for none; a match is confirmed against the record.
    pub correlation: u32,
    /// Deliveries so far (leased gets that came back).
    pub delivery_count: u32,
}

impl Entry {
    /// True once its expiry has passed at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms <= now_ms
    }
}

/// The hash stored in [`Entry::correlation`]; never 0 for a present id.
pub(crate) fn correlation_hash(correlation_id: Option<&str>) -> u32 {
    correlation_id.map_or(0, |id| crc32c::crc32c(id.as_bytes()) | 1)
}

/// The ordering state of one local queue.
#[derive(Debug, Default)]
pub struct LocalQueue {
    by_priority: [VecDeque<Entry>; PRIORITY_MAX as usize + 1],
    depth: u64,
    bytes: u64,
    /// Entries inserted since start (puts, arrivals, lease returns), for the console's rates.
    entered_total: u64,
    /// Entries handed out by takes since start (expired ones not counted).
    taken_total: u64,
}

/// What a take found besides the messages it returns.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// Messages to hand out, best first.
    pub entries: Vec<Entry>,
    /// Expired messages met on the way, now removed; the caller records their removal.
    pub expired: Vec<Entry>,
}

impl LocalQueue {
    /// Messages waiting.
    pub fn depth(&self) -> u64 {
        self.depth
    }

    /// Bytes of the waiting messages' bodies.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Entries inserted since the queue was built (recovered ones not counted): puts,
    /// arrivals and lease returns.
    pub fn entered_total(&self) -> u64 {
        self.entered_total
    }

    /// Entries handed out by takes since the queue was built.
    pub fn taken_total(&self) -> u64 {
        self.taken_total
    }

    /// The put time of the oldest waiting message.
    pub fn oldest_put_at_ms(&self) -> Option<u64> {
        self.by_priority
            .iter()
            .filter_map(|q| q.front())
            .map(|e| e.put_at_ms)
            .min()
    }

    /// A queue holding `entries`, which must be in increasing `seq` order. Built without
    /// copying or growing: start-up uses it for queues of millions of messages.
    pub fn from_sorted(entries: Vec<Entry>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].seq < w[1].seq));
        let mut counts = [0usize; PRIORITY_MAX as usize + 1];
        for entry in &entries {
            counts[usize::from(entry.priority.min(PRIORITY_MAX))] += 1;
        }
        let mut queue = Self::default();
        if counts.iter().filter(|&&count| count > 0).count() <= 1 {
            // One priority (the common case): the vector becomes the deque as it is.
            let priority = entries
                .first()
                .map_or(0, |e| usize::from(e.priority.min(PRIORITY_MAX)));
            queue.depth = entries.len() as u64;
            queue.bytes = entries.iter().map(|e| u64::from(e.bytes)).sum();
            queue.by_priority[priority] = VecDeque::from(entries);
            return queue;
        }
        for (deque, count) in queue.by_priority.iter_mut().zip(counts) {
            deque.reserve_exact(count);
        }
        for entry in entries {
            queue.insert(entry);
        }
        // Recovered, not entered: the counters count what happens from now on.
        queue.entered_total = 0;
        queue
    }

    /// Adds an entry in `seq` order within its priority. New puts carry the highest seq so far
    /// and land at the back in O(1); an entry returning from a lease is slotted back in place.
    pub fn insert(&mut self, entry: Entry) {
        let queue = &mut self.by_priority[usize::from(entry.priority.min(PRIORITY_MAX))];
        match queue.back() {
            Some(last) if last.seq > entry.seq => {
                let at = queue.partition_point(|e| e.seq < entry.seq);
                queue.insert(at, entry);
            }
            _ => queue.push_back(entry),
        }
        self.depth += 1;
        self.bytes += u64::from(entry.bytes);
        self.entered_total += 1;
    }

    /// Removes and returns up to `max` unexpired entries, highest priority first, FIFO within
    /// a priority. With `correlation` (a [`correlation_hash`]), only matching entries qualify;
    /// `confirm` is asked about each candidate so that hash collisions never match.
    pub fn take(
        &mut self,
        now_ms: u64,
        max: usize,
        correlation: Option<u32>,
        confirm: impl FnMut(&Entry) -> bool,
    ) -> Taken {
        self.take_within(now_ms, max, u64::MAX, |_| 0, correlation, confirm)
    }

    /// Like [`Self::take`], stopping before the `cost` of what is taken would pass
    /// `bytes_max` (the first entry is always taken, whatever its cost), so that what is taken
    /// fits one reply.
    pub fn take_within(
        &mut self,
        now_ms: u64,
        max: usize,
        bytes_max: u64,
        cost: impl Fn(&Entry) -> u64,
        correlation: Option<u32>,
        mut confirm: impl FnMut(&Entry) -> bool,
    ) -> Taken {
        let mut taken = Taken::default();
        let mut bytes = 0u64;
        'priorities: for queue in self.by_priority.iter_mut().rev() {
            let mut index = 0;
            while index < queue.len() && taken.entries.len() < max {
                let entry = queue[index];
                if entry.expired(now_ms) {
                    queue.remove(index);
                    taken.expired.push(entry);
                    continue;
                }
                let wanted = match correlation {
                    None => true,
                    Some(hash) => entry.correlation == hash && confirm(&entry),
                };
                if !wanted {
                    index += 1;
                    continue;
                }
                bytes += cost(&entry);
                // Stopping, not skipping: a smaller entry behind must not overtake this one.
                if bytes > bytes_max && !taken.entries.is_empty() {
                    break 'priorities;
                }
                queue.remove(index);
                taken.entries.push(entry);
            }
        }
        for entry in taken.entries.iter().chain(&taken.expired) {
            self.depth -= 1;
            self.bytes -= u64::from(entry.bytes);
        }
        self.taken_total += taken.entries.len() as u64;
        taken
    }

    /// Removes expired entries from the front of each priority (where the oldest are), at most
    /// `max` of them, so a sweep costs little even on a deep queue.
    pub fn remove_expired(&mut self, now_ms: u64, max: usize) -> Vec<Entry> {
        let mut expired = Vec::new();
        for queue in &mut self.by_priority {
            while expired.len() < max && queue.front().is_some_and(|e| e.expired(now_ms)) {
                if let Some(entry) = queue.pop_front() {
                    expired.push(entry);
                }
            }
        }
        for entry in &expired {
            self.depth -= 1;
            self.bytes -= u64::from(entry.bytes);
        }
        expired
    }

    /// Up to `max` entries in delivery order, without removing them (browse), stopping before
    /// their `cost` would pass `bytes_max` (the first entry is always there, whatever its
    /// cost), as [`Self::take_within`] does.
    pub fn peek(
        &self,
        now_ms: u64,
        max: usize,
        bytes_max: u64,
        cost: impl Fn(&Entry) -> u64,
    ) -> Vec<Entry> {
        let mut bytes = 0u64;
        self.by_priority
            .iter()
            .rev()
            .flat_map(|q| q.iter())
            .filter(|e| !e.expired(now_ms))
            .take(max)
            .enumerate()
            .take_while(|(index, e)| {
                bytes += cost(e);
                *index == 0 || bytes <= bytes_max
            })
            .map(|(_, e)| *e)
            .collect()
    }

    /// Every entry, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.by_priority.iter().flat_map(|q| q.iter())
    }

    /// Entry `seq` (of any priority); `None` if it is not here.
    pub fn get(&self, seq: u64) -> Option<Entry> {
        self.by_priority.iter().find_map(|queue| {
            // Entries are in seq order within a priority.
            queue
                .binary_search_by_key(&seq, |e| e.seq)
                .ok()
                .map(|i| queue[i])
        })
    }

    /// Removes entry `seq` (of any priority); `None` if it is not here.
    pub fn remove(&mut self, seq: u64) -> Option<Entry> {
        for queue in &mut self.by_priority {
            // Entries are in seq order within a priority.
            if let Ok(i) = queue.binary_search_by_key(&seq, |e| e.seq) {
                let entry = queue.remove(i)?;
                self.depth -= 1;
                self.bytes -= u64::from(entry.bytes);
                return Some(entry);
            }
        }
        None
    }

    /// Points entry `seq` at a new copy of its record; false if the entry is not here.
    pub fn relocate(&mut self, seq: u64, body: BodyRef) -> bool {
        for queue in &mut self.by_priority {
            // Entries are in seq order within a priority.
            if let Ok(i) = queue.binary_search_by_key(&seq, |e| e.seq) {
                queue[i].body = body;
                return true;
            }
        }
        false
    }

    /// Every entry, in no particular order (for moving or draining a queue).
    pub fn drain(&mut self) -> Vec<Entry> {
        self.depth = 0;
        self.bytes = 0;
        self.by_priority
            .iter_mut()
            .flat_map(|q| q.drain(..))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_bytes(entry: &Entry) -> u64 {
        u64::from(entry.bytes)
    }

    fn entry(seq: u64, priority: u8) -> Entry {
        Entry {
            seq,
            body: BodyRef::Memory,
            bytes: 10,
            priority,
            reports: hopmq::Reports::NONE,
            expires_at_ms: u64::MAX,
            put_at_ms: seq,
            correlation: 0,
            delivery_count: 0,
        }
    }

    fn seqs(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn remove_takes_one_entry_of_any_priority() {
        let mut queue = LocalQueue::default();
        for (seq, priority) in [(1, 0), (2, 5), (3, 0), (4, 5)] {
            queue.insert(entry(seq, priority));
        }
        assert_eq!(queue.remove(2).map(|e| e.seq), Some(2));
        assert_eq!(queue.remove(3).map(|e| e.seq), Some(3));
        assert!(queue.remove(3).is_none());
        assert_eq!(queue.depth(), 2);
        assert_eq!(queue.bytes(), 20);
        let left: Vec<u64> = queue
            .take(0, 10, None, |_| true)
            .entries
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(left, [4, 1]);
    }

    #[test]
    fn entries_stay_small() {
        // 5 million queued messages must fit in a few hundred MiB (BENCHMARKS.md).
        assert!(
            std::mem::size_of::<Entry>() <= 56,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn higher_priority_first_then_fifo() {
        let mut q = LocalQueue::default();
        for (seq, priority) in [(1, 4), (2, 9), (3, 0), (4, 4), (5, 9)] {
            q.insert(entry(seq, priority));
        }
        assert_eq!(q.depth(), 5);
        assert_eq!(q.bytes(), 50);
        assert_eq!(seqs(&q.peek(0, 10, u64::MAX, body_bytes)), [2, 5, 1, 4, 3]);
        assert_eq!(seqs(&q.take(0, 3, None, |_| true).entries), [2, 5, 1]);
        assert_eq!(seqs(&q.take(0, 3, None, |_| true).entries), [4, 3]);
        assert_eq!(q.depth(), 0);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn a_byte_budget_stops_a_take_or_peek_in_order_but_never_before_the_first_entry() {
        let mut q = LocalQueue::default();
        for (seq, bytes) in [(1, 600), (2, 500), (3, 10), (4, 10)] {
            q.insert(Entry {
                bytes,
                ..entry(seq, 4)
            });
        }
        assert_eq!(seqs(&q.peek(0, 10, 1000, body_bytes)), [1]);
        assert_eq!(seqs(&q.peek(0, 10, 100, body_bytes)), [1]);
        assert_eq!(seqs(&q.peek(0, 10, 1105, body_bytes)), [1, 2]);
        let first = q
            .take_within(0, 10, 1000, body_bytes, None, |_| true)
            .entries;
        assert_eq!(seqs(&first), [1], "seq 3 must not overtake seq 2");
        let second = q
            .take_within(0, 10, 100, body_bytes, None, |_| true)
            .entries;
        assert_eq!(
            seqs(&second),
            [2],
            "an entry larger than the budget still goes alone"
        );
        assert_eq!(
            seqs(&q.take_within(0, 10, 20, body_bytes, None, |_| true).entries),
            [3, 4]
        );
        assert_eq!(q.depth(), 0);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn a_queue_built_from_sorted_entries_keeps_priority_and_order() {
        let single = LocalQueue::from_sorted((1..=3).map(|seq| entry(seq, 4)).collect());
        assert_eq!((single.depth(), single.bytes()), (3, 30));
        assert_eq!(seqs(&single.peek(0, 10, u64::MAX, body_bytes)), [1, 2, 3]);
        let mut mixed =
            LocalQueue::from_sorted(vec![entry(1, 0), entry(2, 9), entry(3, 0), entry(4, 9)]);
        assert_eq!(mixed.depth(), 4);
        assert_eq!(
            seqs(&mixed.take(0, 10, None, |_| true).entries),
            [2, 4, 1, 3]
        );
        assert_eq!(LocalQueue::from_sorted(Vec::new()).depth(), 0);
    }

    #[test]
    fn returned_entries_go_back_in_put_order() {
        let mut q = LocalQueue::default();
        for seq in 1..=4 {
            q.insert(entry(seq, 4));
        }
        let first = q.take(0, 2, None, |_| true).entries;
        q.insert(first[1]);
        q.insert(first[0]);
        assert_eq!(seqs(&q.take(0, 10, None, |_| true).entries), [1, 2, 3, 4]);
    }

    #[test]
    fn counters_count_entries_in_and_out_but_not_recovered_or_expired() {
        let recovered = LocalQueue::from_sorted(vec![entry(1, 0), entry(2, 5)]);
        assert_eq!((recovered.entered_total(), recovered.taken_total()), (0, 0));
        let mut q = LocalQueue::default();
        q.insert(entry(1, 4));
        q.insert(Entry {
            expires_at_ms: 100,
            ..entry(2, 4)
        });
        q.insert(entry(3, 4));
        let taken = q.take(150, 1, None, |_| true);
        assert_eq!(seqs(&taken.entries), [1]);
        q.insert(taken.entries[0]);
        assert_eq!((q.entered_total(), q.taken_total()), (4, 1));
    }

    #[test]
    fn expired_entries_are_never_taken_and_are_reported() {
        let mut q = LocalQueue::default();
        q.insert(Entry {
            expires_at_ms: 100,
            ..entry(1, 4)
        });
        q.insert(entry(2, 4));
        q.insert(Entry {
            expires_at_ms: 200,
            ..entry(3, 4)
        });
        let taken = q.take(150, 10, None, |_| true);
        assert_eq!(seqs(&taken.entries), [2, 3]);
        assert_eq!(seqs(&taken.expired), [1]);
        assert_eq!(q.depth(), 0);
        q.insert(Entry {
            expires_at_ms: 200,
            ..entry(4, 4)
        });
        assert_eq!(seqs(&q.peek(199, 10, u64::MAX, body_bytes)), [4]);
        assert!(q.peek(200, 10, u64::MAX, body_bytes).is_empty());
        assert_eq!(seqs(&q.remove_expired(200, 10)), [4]);
        assert_eq!(q.depth(), 0);
    }

    #[test]
    fn correlation_selects_and_collisions_are_confirmed() {
        let mut q = LocalQueue::default();
        let wanted = correlation_hash(Some("req-7"));
        q.insert(entry(1, 4));
        q.insert(Entry {
            correlation: wanted,
            ..entry(2, 4)
        });
        q.insert(Entry {
            correlation: wanted,
            ..entry(3, 4)
        });
        // Entry 2 collides on the hash but the record says otherwise.
        let taken = q.take(0, 1, Some(wanted), |e| e.seq != 2);
        assert_eq!(seqs(&taken.entries), [3]);
        assert_eq!(seqs(&q.take(0, 10, None, |_| true).entries), [1, 2]);
        assert_ne!(correlation_hash(Some("")), 0);
        assert_eq!(correlation_hash(None), 0);
    }
}

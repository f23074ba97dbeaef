//! A simulated disk per manager, behind the core's [`Storage`] seam.
//!
//! Appends are written at once (readable) but durable only at a simulated `fdatasync`
//! ([`Disk::sync`]), which completes every pending group in append order. A crash
//! ([`Disk::crash`]) keeps every synced group and a random prefix of the unsynced ones, whole
//! groups only: what the journal's recovery makes of a torn last write (a group is delivered
//! only if it is intact). Recovery then runs the manager's real replay over what survived.
//!
//! Invariant: groups are durable in append order; records never move; a deleted segment's
//! records are gone for good.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use hopmq::ManagerName;
use qmgr::manager::{Durability, Recovered, Replay, Storage};
use qmgr::store::{JournalStats, Location, RecoveryReport, StoreError};

use crate::rng::Rng;

/// Bytes of a simulated segment: small, so segments roll, retire and compact within a run.
pub const SEGMENT_BYTES: u64 = 256 * 1024;
/// The largest group an append may hold.
pub const GROUP_BYTES_MAX: u64 = 128 * 1024;
/// Where a segment's first record starts (its header).
const SEGMENT_HEADER_BYTES: u64 = 64;
/// A record's header (length, group flags, CRC), before 8-byte alignment.
const RECORD_HEADER_BYTES: u64 = 16;

/// One appended group not yet synced.
#[derive(Debug)]
struct Pending {
    result: Result<Vec<Location>, StoreError>,
    durability: Durability,
}

#[derive(Debug, Default)]
struct State {
    active_segment: u64,
    next_offset: u64,
    /// Every record written and not deleted, by place (journal order).
    records: BTreeMap<(u64, u64), Bytes>,
    /// Groups appended and not yet synced, oldest first.
    pending: VecDeque<Pending>,
    deleted_below: u64,
    commits: u64,
    /// Every record ever appended, deleted or lost ones too, when tracing (for finding where a
    /// missing message went).
    history: Option<Vec<Bytes>>,
    /// The links an operator drained: written durably at once, as the drained-links file is.
    drained: BTreeSet<ManagerName>,
}

/// The disk of one manager; the core's [`Storage`] is a handle on it.
#[derive(Debug, Clone)]
pub struct Disk {
    state: Arc<Mutex<State>>,
}

impl Default for Disk {
    fn default() -> Self {
        Self::new()
    }
}

impl Disk {
    /// An empty disk.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                active_segment: 1,
                next_offset: SEGMENT_HEADER_BYTES,
                ..State::default()
            })),
        }
    }

    /// Keeps every record ever appended, for [`Disk::history`].
    pub fn keep_history(&self) {
        self.lock().history = Some(Vec::new());
    }

    /// An empty disk in this one's place (the machine replaced), keeping its history: a
    /// traced run's last words say where a message went before the loss too.
    pub fn replaced(&self) -> Disk {
        let disk = Disk::new();
        disk.lock().history = self.lock().history.take();
        disk
    }

    /// Every record ever appended (when kept), in append order.
    pub fn history(&self) -> Vec<Bytes> {
        self.lock().history.clone().unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The storage a core writes through.
    pub fn storage(&self) -> Box<dyn Storage> {
        Box::new(self.clone())
    }

    /// Groups appended and not yet synced.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Whether every pending group is deferred (it waits for a synced one, or a short timer).
    pub fn only_deferred(&self) -> bool {
        self.lock()
            .pending
            .iter()
            .all(|p| p.durability == Durability::Deferred)
    }

    /// An `fdatasync`: every pending group becomes durable; their outcomes, in append order.
    pub fn sync(&self) -> Vec<Result<Vec<Location>, StoreError>> {
        let mut state = self.lock();
        state.commits += 1;
        state.pending.drain(..).map(|p| p.result).collect()
    }

    /// A crash: keeps the synced groups and a random prefix of the unsynced ones (whole
    /// groups: a torn group is cut by recovery). Returns a fresh disk with what survived,
    /// the records of the unsynced groups that survived (for the checker), and the replayed
    /// state.
    pub fn crash(&self, rng: &mut Rng) -> (Disk, Vec<Bytes>, Recovered) {
        let mut state = self.lock();
        let pending: Vec<Pending> = state.pending.drain(..).collect();
        let kept = rng.below(pending.len() as u64 + 1) as usize;
        let mut survived = Vec::new();
        for (index, group) in pending.iter().enumerate() {
            let Ok(locations) = &group.result else {
                continue;
            };
            for location in locations {
                let key = (location.segment, location.offset);
                if index < kept {
                    if let Some(payload) = state.records.get(&key) {
                        survived.push(payload.clone());
                    }
                } else {
                    state.records.remove(&key);
                }
            }
        }
        let mut replay = Replay::default();
        for (&(segment, offset), payload) in &state.records {
            let location = Location {
                segment,
                offset,
                len: payload.len() as u32,
            };
            if let Err(error) = replay.record(location, payload) {
                // The core wrote it; a record it cannot read back is the simulator's bug.
                panic!("replay refused a record the core wrote: {error}");
            }
        }
        let recovered = replay.finish(RecoveryReport::default());
        // The next incarnation writes from a fresh segment, as after a sealed tail.
        let disk = Disk {
            state: Arc::new(Mutex::new(State {
                active_segment: state.active_segment + 1,
                next_offset: SEGMENT_HEADER_BYTES,
                records: std::mem::take(&mut state.records),
                pending: VecDeque::new(),
                deleted_below: state.deleted_below,
                commits: 0,
                history: state.history.take(),
                drained: std::mem::take(&mut state.drained),
            })),
        };
        (disk, survived, recovered)
    }

    /// Every record on the disk, in journal order (for the checker).
    pub fn records(&self) -> Vec<Bytes> {
        self.lock().records.values().cloned().collect()
    }

    /// The links drained, as the next start reads them.
    pub fn drained(&self) -> BTreeSet<ManagerName> {
        self.lock().drained.clone()
    }
}

fn record_bytes(payload: &Bytes) -> u64 {
    (RECORD_HEADER_BYTES + payload.len() as u64).div_ceil(8) * 8
}

impl Storage for Disk {
    fn append(&mut self, durability: Durability, payloads: Vec<Bytes>) {
        let mut state = self.lock();
        let bytes: u64 = payloads.iter().map(record_bytes).sum();
        let result = if payloads.is_empty() {
            Err(StoreError::EmptyGroup)
        } else if bytes > GROUP_BYTES_MAX {
            Err(StoreError::GroupTooLarge {
                bytes,
                bytes_max: GROUP_BYTES_MAX,
            })
        } else {
            if state.next_offset + bytes > SEGMENT_BYTES {
                state.active_segment += 1;
                state.next_offset = SEGMENT_HEADER_BYTES;
            }
            let mut locations = Vec::with_capacity(payloads.len());
            for payload in payloads {
                let location = Location {
                    segment: state.active_segment,
                    offset: state.next_offset,
                    len: payload.len() as u32,
                };
                state.next_offset += record_bytes(&payload);
                if let Some(history) = &mut state.history {
                    history.push(payload.clone());
                }
                state
                    .records
                    .insert((location.segment, location.offset), payload);
                locations.push(location);
            }
            Ok(locations)
        };
        state.pending.push_back(Pending { result, durability });
    }

    fn read(&self, location: Location) -> Result<Vec<u8>, StoreError> {
        self.lock()
            .records
            .get(&(location.segment, location.offset))
            .map(|payload| payload.to_vec())
            .ok_or(StoreError::NotFound {
                segment: location.segment,
                offset: location.offset,
                reason: "no record there (deleted, or never written)",
            })
    }

    fn active_segment(&self) -> u64 {
        self.lock().active_segment
    }

    fn group_bytes_max(&self) -> u64 {
        GROUP_BYTES_MAX
    }

    fn retire_segments_before(&mut self, segment: u64) {
        let mut state = self.lock();
        let kept = state.records.split_off(&(segment, 0));
        state.records = kept;
        state.deleted_below = state.deleted_below.max(segment);
    }

    fn stats(&self) -> JournalStats {
        let state = self.lock();
        // Segment by segment, jumping over each one's records: status asks for this often
        // (the simulator watches every manager's routes each step).
        let mut segments: Vec<u64> = Vec::new();
        let mut from = 0;
        while let Some((&(segment, _), _)) = state.records.range((from, 0)..).next() {
            segments.push(segment);
            from = segment + 1;
        }
        JournalStats {
            active_segment: state.active_segment,
            segments: segments
                .into_iter()
                .map(|segment| qmgr::store::SegmentStats {
                    segment,
                    bytes_on_disk: SEGMENT_BYTES,
                    bytes_written: SEGMENT_BYTES,
                })
                .collect(),
            bytes_on_disk: 0,
            commits: state.commits,
            commits_inline: 0,
            records: state.records.len() as u64,
            batch_records_last: 0,
            fsyncs: state.commits,
            fsync_nanos_total: 0,
            fsync_nanos_max: 0,
            fsync_micros_log2_buckets: [0; qmgr::store::FSYNC_BUCKETS],
        }
    }

    fn save_drained(&mut self, drained: BTreeSet<ManagerName>) {
        // Written durably at once, as the drained-links file is; the answer waits for the
        // next sync, in order with the appends before it.
        let mut state = self.lock();
        state.drained = drained;
        state.pending.push_back(Pending {
            result: Ok(Vec::new()),
            durability: Durability::Synced,
        });
    }
}

//! What a bench checks about its own run before its figures count: that every message it put
//! came back exactly once and in order, and that the managers it measured sync as it says.
//!
//! Every message a bench sends starts with a [`Header`]: its send time, the run it belongs to,
//! its producer and the producer's sequence number for it (0, 1, 2, ...). Consumers hand each
//! body they get to a [`Reader`] of the run's shared [`Ledger`], which keeps one bit per
//! message a producer was to send. At the end, [`Ledger::verdict`] compares what was got with
//! what each producer had acknowledged, and the [`Verdict`] prints one line that every bench
//! prints alike:
//!
//! - **lost**: sent and acknowledged, never got by the end of the run's drain;
//! - **duplicated**: copies got beyond the first of a message (on any consumer);
//! - **reordered**: first copies got by a consumer after it had already got a higher sequence
//!   number from the same producer;
//! - **unexpected**: got, but not put by this run (another run's leftovers, a sequence number
//!   its producer never acknowledged, a body too short to carry a header).
//!
//! Any of them non-zero fails the run (exit code 1).
//!
//! [`check_sync`] refuses a manager whose `status` does not report the sync policy the figures
//! claim: `always` for a manager the bench was given, the one asked for where the bench started
//! the managers itself.

use qmgr::outln;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use anyhow::bail;
use hopmq::protocol::Status;

use qmgr::config::SyncMode;

/// The header's size: every bench body is at least this long.
pub(super) const HEADER_BYTES: usize = 24;
/// Lost and duplicated messages named in a failed run's report.
const LISTED_MAX: usize = 10;

/// What a bench writes at the start of every body, little-endian: send time (8 bytes), run
/// (4), producer (4), sequence number (8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    /// When the message was sent, in microseconds on the bench's own clock (for latency).
    pub(super) sent_us: u64,
    /// The run it belongs to: another run's messages left in a queue are not this run's.
    pub(super) run: u32,
    /// Its producer, from 0.
    pub(super) producer: u32,
    /// Its place in its producer's sequence, from 0.
    pub(super) seq: u64,
}

impl Header {
    /// Writes the header into the first [`HEADER_BYTES`] of `body`, which must be that long.
    pub(super) fn write(&self, body: &mut [u8]) {
        body[..8].copy_from_slice(&self.sent_us.to_le_bytes());
        body[8..12].copy_from_slice(&self.run.to_le_bytes());
        body[12..16].copy_from_slice(&self.producer.to_le_bytes());
        body[16..HEADER_BYTES].copy_from_slice(&self.seq.to_le_bytes());
    }

    /// The header at the start of `body`; `None` if it is too short to hold one.
    pub(super) fn read(body: &[u8]) -> Option<Self> {
        let u64_at = |at: usize| Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?));
        let u32_at = |at: usize| Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?));
        Some(Self {
            sent_us: u64_at(0)?,
            run: u32_at(8)?,
            producer: u32_at(12)?,
            seq: u64_at(16)?,
        })
    }
}

/// A number for this run, unlikely to be another's: from the clock and the process id.
pub(super) fn run_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut mix = qmgr::generate::SplitMix(nanos ^ (u64::from(std::process::id()) << 32));
    (mix.next_u64() >> 32) as u32
}

/// What a consumer made of one body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Take {
    /// The first copy of a message of this run.
    First(Header),
    /// A copy of a message already got.
    Duplicate,
    /// Not a message this run put.
    Unexpected,
}

/// Every message a run's producers were to send, and which of them were got; shared by the
/// run's consumers (each through its own [`Reader`]).
#[derive(Debug)]
pub(super) struct Ledger {
    run: u32,
    /// Per producer, one bit per sequence number it was to send, set when a copy is got.
    seen: Vec<Vec<AtomicU64>>,
    /// Messages the producers are to send in all.
    expected: u64,
    distinct: AtomicU64,
    /// When the last message expected was first got.
    all_got: OnceLock<Instant>,
    duplicated: AtomicU64,
    unexpected: AtomicU64,
    /// The first duplicates got, for the report.
    duplicates: Mutex<Vec<(u32, u64)>>,
}

impl Ledger {
    /// A ledger for run `run`, whose producer `p` is to send `shares[p]` messages.
    pub(super) fn new(run: u32, shares: &[u64]) -> Self {
        let seen = shares
            .iter()
            .map(|&share| (0..share.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
            .collect();
        Self {
            run,
            seen,
            expected: shares.iter().sum(),
            distinct: AtomicU64::new(0),
            all_got: OnceLock::new(),
            duplicated: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            duplicates: Mutex::new(Vec::new()),
        }
    }

    /// Messages of this run got at least once so far.
    pub(super) fn distinct(&self) -> u64 {
        self.distinct.load(Ordering::Relaxed)
    }

    /// When every message the producers were to send had been got, if it has been.
    pub(super) fn all_got_at(&self) -> Option<Instant> {
        self.all_got.get().copied()
    }

    /// A reader for one consumer.
    pub(super) fn reader(self: &Arc<Self>) -> Reader {
        Reader {
            ledger: Arc::clone(self),
            highest: vec![None; self.seen.len()],
            reordered: 0,
        }
    }

    /// Marks the message `header` names as got.
    fn mark(&self, header: Option<Header>) -> Take {
        let slot = header.filter(|h| h.run == self.run).and_then(|h| {
            let words = self.seen.get(h.producer as usize)?;
            let word = words.get(usize::try_from(h.seq / 64).ok()?)?;
            Some((h, word))
        });
        let Some((header, word)) = slot else {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            return Take::Unexpected;
        };
        let bit = 1u64 << (header.seq % 64);
        if word.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            self.duplicated.fetch_add(1, Ordering::Relaxed);
            let mut listed = self
                .duplicates
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if listed.len() < LISTED_MAX {
                listed.push((header.producer, header.seq));
            }
            return Take::Duplicate;
        }
        if self.distinct.fetch_add(1, Ordering::Relaxed) + 1 == self.expected {
            let _ = self.all_got.set(Instant::now());
        }
        Take::First(header)
    }

    /// The run's outcome, once every consumer has stopped: `acknowledged[p]` is how many
    /// messages producer `p` had acknowledged (its sequence numbers `0..acknowledged[p]`), and
    /// `reordered` the sum of every reader's count.
    pub(super) fn verdict(&self, acknowledged: &[u64], reordered: u64) -> Verdict {
        let mut lost = 0;
        let mut lost_first = Vec::new();
        let mut unacknowledged = 0;
        for (p, words) in self.seen.iter().enumerate() {
            let sent = acknowledged.get(p).copied().unwrap_or(0);
            for (w, word) in words.iter().enumerate() {
                let bits = word.load(Ordering::Relaxed);
                for b in 0..64 {
                    let seq = w as u64 * 64 + b;
                    let got = bits & (1 << b) != 0;
                    if seq >= sent {
                        unacknowledged += u64::from(got);
                    } else if !got {
                        lost += 1;
                        if lost_first.len() < LISTED_MAX {
                            lost_first.push((p as u32, seq));
                        }
                    }
                }
            }
            // Acknowledged beyond what the ledger was told to expect: never counted as got.
            lost += sent.saturating_sub(words.len() as u64 * 64);
        }
        lost += acknowledged.iter().skip(self.seen.len()).sum::<u64>();
        let distinct = self.distinct();
        let duplicated = self.duplicated.load(Ordering::Relaxed);
        let unexpected = self.unexpected.load(Ordering::Relaxed) + unacknowledged;
        Verdict {
            acknowledged: acknowledged.iter().sum(),
            got: distinct + duplicated + self.unexpected.load(Ordering::Relaxed),
            lost,
            duplicated,
            reordered,
            unexpected,
            lost_first,
            duplicated_first: self
                .duplicates
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// One consumer's view of the [`Ledger`]: it alone sees the order that consumer got messages
/// in.
#[derive(Debug)]
pub(super) struct Reader {
    ledger: Arc<Ledger>,
    /// Per producer, the highest sequence number this consumer has got from it.
    highest: Vec<Option<u64>>,
    reordered: u64,
}

impl Reader {
    /// Checks the body of a message just got.
    pub(super) fn take(&mut self, body: &[u8]) -> Take {
        self.take_header(Header::read(body))
    }

    /// Checks the header of a message just got (`None`: its body holds none).
    pub(super) fn take_header(&mut self, header: Option<Header>) -> Take {
        let take = self.ledger.mark(header);
        if let Take::First(header) = take
            && let Some(highest) = self.highest.get_mut(header.producer as usize)
        {
            // A first copy below the highest already got from its producer: the producer
            // sent it earlier, yet it came later.
            match highest {
                Some(top) if header.seq < *top => self.reordered += 1,
                _ => *highest = Some(header.seq),
            }
        }
        take
    }

    /// First copies this consumer got out of their producer's order.
    pub(super) fn reordered(&self) -> u64 {
        self.reordered
    }
}

/// A run's outcome: what was lost, duplicated, reordered or unexpected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Verdict {
    pub(super) acknowledged: u64,
    /// Every copy got, unexpected ones included.
    pub(super) got: u64,
    pub(super) lost: u64,
    pub(super) duplicated: u64,
    pub(super) reordered: u64,
    pub(super) unexpected: u64,
    lost_first: Vec<(u32, u64)>,
    duplicated_first: Vec<(u32, u64)>,
}

impl Verdict {
    /// True if nothing was lost, duplicated, reordered or unexpected.
    pub(super) fn passed(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.unexpected == 0 && self.reordered == 0
    }

    /// The exit code the run ends with, as far as its messages go.
    pub(super) fn exit_code(&self) -> ExitCode {
        if self.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    /// The `verify:` line, the definitions in it; and if the run failed, a line saying so and
    /// the first messages lost and duplicated.
    pub(super) fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "verify: {} sent and acknowledged, {} got; lost {} (never got), duplicated {} \
             (copies beyond the first), reordered {} (first copies got after a higher sequence \
             number from the same producer on the same consumer), unexpected {} (not put by \
             this run)",
            self.acknowledged,
            self.got,
            self.lost,
            self.duplicated,
            self.reordered,
            self.unexpected,
        )];
        if !self.passed() {
            lines.push(format!(
                "VERIFY FAILED: {} lost, {} duplicated, {} reordered, {} unexpected: the \
                 figures of this run do not count",
                self.lost, self.duplicated, self.reordered, self.unexpected
            ));
        }
        if !self.lost_first.is_empty() {
            lines.push(format!("lost: {}", listed(&self.lost_first, self.lost)));
        }
        if !self.duplicated_first.is_empty() {
            lines.push(format!(
                "duplicated: {}",
                listed(&self.duplicated_first, self.duplicated)
            ));
        }
        lines
    }

    /// Prints [`Verdict::lines`].
    pub(super) fn print(&self) -> Result<(), qmgr::cli::output::OutputError> {
        for line in self.lines() {
            outln!("{line}")?;
        }
        Ok(())
    }
}

/// `p<producer>#<seq>` for each, and `...` if there are more than listed.
fn listed(messages: &[(u32, u64)], total: u64) -> String {
    let shown: Vec<String> = messages.iter().map(|(p, s)| format!("p{p}#{s}")).collect();
    let more = if total > messages.len() as u64 {
        ", ..."
    } else {
        ""
    };
    format!("{}{more}", shown.join(", "))
}

/// How the bench came by a manager it measures.
#[derive(Debug, Clone, Copy)]
pub(super) enum Origin {
    /// Started by the bench with this sync policy, which its figures are labelled with.
    Started(SyncMode),
    /// Given to it (`--socket`): its figures are reported as durable.
    Given,
}

/// Fails unless manager `name`'s `status` reports the sync policy its figures claim: the one
/// the bench started it with, or `always` for a manager it was given and whose figures are
/// durable ones (persistent messages).
pub(super) fn check_sync(
    name: &str,
    status: &Status,
    origin: Origin,
    durable: bool,
) -> anyhow::Result<()> {
    let reported = status.store.sync.as_str();
    match origin {
        Origin::Started(mode) if reported != mode.as_str() => bail!(
            "manager {name} was started with sync = {} but reports sync = {reported:?} (a \
             setting from the environment?); refusing to label its figures",
            mode.as_str()
        ),
        Origin::Given if durable && reported != SyncMode::Always.as_str() => bail!(
            "manager {name} reports sync = {reported:?}, not \"always\": its figures for \
             persistent messages would not be durable ones; refusing to measure it (let the \
             bench start its own manager with --sync never to measure without syncing, \
             labelled as such)"
        ),
        _ => Ok(()),
    }
}

/// The label of figures from managers that report sync policy `reported`: `sync always`, or
/// the policy in capitals with what it means.
pub(super) fn sync_label(reported: &str) -> String {
    if reported == SyncMode::Always.as_str() {
        "sync always".to_owned()
    } else {
        format!("sync {reported} (NOT DURABLE: acknowledged before any fdatasync)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(run: u32, producer: u32, seq: u64) -> Vec<u8> {
        let mut body = vec![0u8; HEADER_BYTES + 3];
        Header {
            sent_us: 7,
            run,
            producer,
            seq,
        }
        .write(&mut body);
        body
    }

    #[test]
    fn a_header_reads_back_as_written() {
        let header = Header {
            sent_us: 0x0102_0304_0506_0708,
            run: 0xdead_beef,
            producer: 3,
            seq: 1 << 40,
        };
        let mut body = vec![0u8; HEADER_BYTES];
        header.write(&mut body);
        assert_eq!(Header::read(&body), Some(header));
        assert_eq!(Header::read(&body[..HEADER_BYTES - 1]), None);
    }

    #[test]
    fn a_clean_run_passes() {
        let ledger = Arc::new(Ledger::new(9, &[3, 2]));
        let mut a = ledger.reader();
        let mut b = ledger.reader();
        for (consumer, p, s) in [(0, 0, 0), (1, 0, 1), (0, 1, 0), (0, 0, 2)] {
            let reader = if consumer == 0 { &mut a } else { &mut b };
            assert!(matches!(reader.take(&body(9, p, s)), Take::First(_)));
        }
        assert!(matches!(b.take(&body(9, 1, 1)), Take::First(_)));
        let verdict = ledger.verdict(&[3, 2], a.reordered() + b.reordered());
        assert!(verdict.passed(), "{verdict:?}");
        assert_eq!((verdict.acknowledged, verdict.got), (5, 5));
        assert_eq!(verdict.lines().len(), 1);
    }

    #[test]
    fn losses_duplicates_reorders_and_strangers_are_counted() {
        // Producer 0 acknowledged 0..6, producer 1 acknowledged 0..3.
        let ledger = Arc::new(Ledger::new(5, &[6, 3]));
        let mut a = ledger.reader();
        let mut b = ledger.reader();
        let crafted = [
            (0, 0, 0, Take::First as fn(Header) -> Take),
            (0, 0, 2, Take::First),
            (0, 0, 1, Take::First), // after 2 on the same consumer: reordered
            (0, 0, 2, |_| Take::Duplicate), // again on the same consumer
            (1, 0, 2, |_| Take::Duplicate), // again on the other consumer
            (1, 0, 4, Take::First),
            (1, 0, 3, Take::First), // after 4 on consumer b: reordered
            (0, 1, 2, Take::First),
            (1, 1, 0, Take::First), // b has seen nothing of producer 1: in order
            (0, 1, 0, |_| Take::Duplicate), // a copy, and below a's highest: not a reorder too
        ];
        for (consumer, producer, seq, expected) in crafted {
            let reader = if consumer == 0 { &mut a } else { &mut b };
            let header = Header {
                sent_us: 7,
                run: 5,
                producer,
                seq,
            };
            assert_eq!(
                reader.take(&body(5, producer, seq)),
                expected(header),
                "p{producer}#{seq} on consumer {consumer}"
            );
        }
        // Strangers: another run, a producer and a sequence number the run never had, a
        // short body.
        assert_eq!(a.take(&body(6, 0, 5)), Take::Unexpected);
        assert_eq!(a.take(&body(5, 2, 0)), Take::Unexpected);
        assert_eq!(a.take(&body(5, 0, 64)), Take::Unexpected);
        assert_eq!(a.take(&[1, 2, 3]), Take::Unexpected);
        // Beyond producer 1's share, yet in the ledger's last word: taken as a first copy,
        // and found unexpected at the end.
        assert!(matches!(b.take(&body(5, 1, 5)), Take::First(_)));

        assert_eq!((a.reordered(), b.reordered()), (1, 1));
        // Producer 1 acknowledged only 0..2 in the end: its #2 (got by a) and #5 were never
        // acknowledged.
        let verdict = ledger.verdict(&[6, 2], a.reordered() + b.reordered());
        // Producer 0's #5 and producer 1's #1 never got.
        assert_eq!(verdict.lost, 2);
        assert_eq!(verdict.duplicated, 3);
        assert_eq!(verdict.reordered, 2);
        assert_eq!(verdict.unexpected, 4 + 2);
        assert_eq!(verdict.acknowledged, 8);
        // 8 first copies, 3 duplicates, 4 strangers.
        assert_eq!(verdict.got, 8 + 3 + 4);
        assert!(!verdict.passed());
        let lines = verdict.lines();
        assert!(lines[0].starts_with("verify: 8 sent and acknowledged, 15 got; lost 2 "));
        assert!(lines[1].starts_with("VERIFY FAILED: 2 lost, 3 duplicated, 2 reordered, 6 "));
        assert_eq!(lines[2], "lost: p0#5, p1#1");
        assert_eq!(lines[3], "duplicated: p0#2, p0#2, p1#0");
        // Reordering alone fails a run.
        let only_reordered = Arc::new(Ledger::new(1, &[2]));
        let mut c = only_reordered.reader();
        c.take(&body(1, 0, 1));
        c.take(&body(1, 0, 0));
        let verdict = only_reordered.verdict(&[2], c.reordered());
        assert!(!verdict.passed());
    }

    #[test]
    fn a_given_manager_must_sync_always() {
        let mut status = Status::default();
        status.store.sync = "never".to_owned();
        assert!(check_sync("m", &status, Origin::Given, true).is_err());
        assert!(check_sync("m", &status, Origin::Given, false).is_ok());
        assert!(check_sync("m", &status, Origin::Started(SyncMode::Never), true).is_ok());
        assert!(check_sync("m", &status, Origin::Started(SyncMode::Always), true).is_err());
        status.store.sync = "always".to_owned();
        assert!(check_sync("m", &status, Origin::Given, true).is_ok());
        // A manager too old to say is refused too.
        status.store.sync = String::new();
        assert!(check_sync("m", &status, Origin::Given, true).is_err());
    }
}

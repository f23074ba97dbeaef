//! The console's rates history: every [`SAMPLE_INTERVAL`] the sampler task asks the core for
//! its status and queue counters, and [`History`] turns successive counters into rates and
//! keeps the last [`SAMPLES_MAX`] points per queue (about ten minutes).
//!
//! [`History`] is a pure state machine (time is an argument); the task owns it and publishes,
//! after each sample, an immutable [`Sampled`] on a watch channel that request handlers only
//! read. Invariant: bounded memory: at most [`QUEUES_TRACKED_MAX`] queues of at most
//! [`SAMPLES_MAX`] points each; a queue that goes away takes its points with it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use hopmq::protocol::Status;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::manager::{Command, ConsoleQuery, QueueCounters};

/// How often the sampler reads the core; the console polls at about the same pace.
pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_secs(2);
/// Points kept per queue: ten minutes at one sample every two seconds.
pub(crate) const SAMPLES_MAX: usize = 300;
/// The most queues with a history (the first by name): 256 × 300 points of 32 bytes, 2.4 MiB.
pub(crate) const QUEUES_TRACKED_MAX: usize = 256;

const _: () = assert!(SAMPLES_MAX as u64 * SAMPLE_INTERVAL.as_secs() == 600);

/// Messages per second in and out of a queue over the last interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Rates {
    pub(crate) put_per_sec: f64,
    pub(crate) get_per_sec: f64,
}

/// One queue's points, column by column (compact as JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Series {
    /// Wall-clock time of each point, milliseconds since the Unix epoch.
    pub(crate) at_ms: VecDeque<u64>,
    pub(crate) depth: VecDeque<u64>,
    pub(crate) put_rate: VecDeque<f64>,
    pub(crate) get_rate: VecDeque<f64>,
}

impl Series {
    fn push(&mut self, at_ms: u64, depth: u64, rates: Rates) {
        if self.at_ms.len() == SAMPLES_MAX {
            self.at_ms.pop_front();
            self.depth.pop_front();
            self.put_rate.pop_front();
            self.get_rate.pop_front();
        }
        self.at_ms.push_back(at_ms);
        self.depth.push_back(depth);
        self.put_rate.push_back(rates.put_per_sec);
        self.get_rate.push_back(rates.get_per_sec);
    }
}

/// `/api/history`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct HistoryView {
    pub(crate) interval_ms: u64,
    pub(crate) samples_max: usize,
    pub(crate) queues: BTreeMap<String, Series>,
}

/// The previous reading of one counter pair, to difference against.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at_mono_ms: u64,
    entered: u64,
    taken: u64,
}

/// Rates and points from successive samples.
#[derive(Debug, Default)]
pub(crate) struct History {
    view: HistoryView,
    queues: BTreeMap<String, Reading>,
    /// Per neighbour: (when, messages sent).
    links: BTreeMap<String, (u64, u64)>,
}

/// What the sampler publishes after each sample.
#[derive(Debug, Default)]
pub(crate) struct Sampled {
    /// Per queue.
    pub(crate) rates: BTreeMap<String, Rates>,
    /// Messages sent per second, per neighbour.
    pub(crate) link_rates: BTreeMap<String, f64>,
    /// `/api/history`, serialized once per sample.
    pub(crate) history_json: String,
}

/// Per second, to two decimals; 0 over an empty interval or a counter that went back.
fn per_second(before: u64, after: u64, elapsed_ms: u64) -> f64 {
    if elapsed_ms == 0 {
        return 0.0;
    }
    let rate = after.saturating_sub(before) as f64 * 1000.0 / elapsed_ms as f64;
    (rate * 100.0).round() / 100.0
}

impl History {
    /// Takes one sample: `status` and `counters` read at `at_mono_ms` (a monotonic clock)
    /// and `at_wall_ms` (for the chart's time axis).
    pub(crate) fn record(
        &mut self,
        (at_mono_ms, at_wall_ms): (u64, u64),
        status: &Status,
        counters: &[QueueCounters],
    ) -> Sampled {
        let mut rates = BTreeMap::new();
        let mut queues = BTreeMap::new();
        for queue in status.queues.iter().take(QUEUES_TRACKED_MAX) {
            let Some(counter) = counters.iter().find(|c| c.name == queue.name) else {
                continue;
            };
            let reading = Reading {
                at_mono_ms,
                entered: counter.entered,
                taken: counter.taken,
            };
            let rate = self
                .queues
                .get(&queue.name)
                .map_or_else(Rates::default, |b| {
                    let elapsed = at_mono_ms.saturating_sub(b.at_mono_ms);
                    Rates {
                        put_per_sec: per_second(b.entered, reading.entered, elapsed),
                        get_per_sec: per_second(b.taken, reading.taken, elapsed),
                    }
                });
            queues.insert(queue.name.clone(), reading);
            rates.insert(queue.name.clone(), rate);
            let series = self.view.queues.entry(queue.name.clone()).or_default();
            series.push(at_wall_ms, queue.depth, rate);
        }
        self.queues = queues;
        self.view
            .queues
            .retain(|name, _| self.queues.contains_key(name));
        let mut link_rates = BTreeMap::new();
        let mut links = BTreeMap::new();
        for link in &status.links {
            let rate = self.links.get(&link.neighbour).map_or(0.0, |&(at, sent)| {
                per_second(sent, link.messages_sent, at_mono_ms.saturating_sub(at))
            });
            link_rates.insert(link.neighbour.clone(), rate);
            links.insert(link.neighbour.clone(), (at_mono_ms, link.messages_sent));
        }
        self.links = links;
        self.view.interval_ms = SAMPLE_INTERVAL.as_millis() as u64;
        self.view.samples_max = SAMPLES_MAX;
        Sampled {
            rates,
            link_rates,
            history_json: serde_json::to_string(&self.view).unwrap_or_default(),
        }
    }
}

/// Samples the core until `shutdown` fires or the core goes, publishing on `published`.
pub(crate) async fn sample(
    commands: mpsc::Sender<Command>,
    published: watch::Sender<Arc<Sampled>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let started = tokio::time::Instant::now();
    let mut history = History::default();
    let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.changed() => return,
        }
        let Some((status, counters)) = read_core(&commands).await else {
            return;
        };
        let at_mono_ms = started.elapsed().as_millis() as u64;
        let sampled = history.record((at_mono_ms, wall_ms()), &status, &counters);
        published.send_replace(Arc::new(sampled));
    }
}

/// The core's status and queue counters; `None` once the core is gone.
pub(crate) async fn read_core(
    commands: &mpsc::Sender<Command>,
) -> Option<(Status, Vec<QueueCounters>)> {
    let (reply, status) = oneshot::channel();
    commands.send(Command::Snapshot { reply }).await.ok()?;
    let status = status.await.ok()?;
    let (reply, counters) = oneshot::channel();
    let query = ConsoleQuery::QueueCounters { reply };
    commands.send(Command::Console(query)).await.ok()?;
    Some((status, counters.await.ok()?))
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hopmq::protocol::QueueStatus;

    fn status(depths: &[(&str, u64)]) -> Status {
        Status {
            queues: depths
                .iter()
                .map(|&(name, depth)| QueueStatus {
                    name: name.to_owned(),
                    depth,
                    ..QueueStatus::default()
                })
                .collect(),
            ..Status::default()
        }
    }

    fn counters(values: &[(&str, u64, u64)]) -> Vec<QueueCounters> {
        values
            .iter()
            .map(|&(name, entered, taken)| QueueCounters {
                name: name.to_owned(),
                entered,
                taken,
            })
            .collect()
    }

    #[test]
    fn rates_come_from_successive_counters() {
        let mut history = History::default();
        let first = history.record((0, 1_000), &status(&[("q", 0)]), &counters(&[("q", 0, 0)]));
        assert_eq!(first.rates["q"], Rates::default());
        let second = history.record(
            (2_000, 3_000),
            &status(&[("q", 6)]),
            &counters(&[("q", 10, 4)]),
        );
        assert_eq!(
            second.rates["q"],
            Rates {
                put_per_sec: 5.0,
                get_per_sec: 2.0
            }
        );
        let view: serde_json::Value = serde_json::from_str(&second.history_json).unwrap();
        assert_eq!(view["interval_ms"], 2000);
        assert_eq!(view["queues"]["q"]["depth"], serde_json::json!([0, 6]));
        assert_eq!(
            view["queues"]["q"]["put_rate"],
            serde_json::json!([0.0, 5.0])
        );
        assert_eq!(
            view["queues"]["q"]["at_ms"],
            serde_json::json!([1000, 3000])
        );
    }

    #[test]
    fn memory_stays_bounded_and_gone_queues_are_forgotten() {
        let mut history = History::default();
        for n in 0..(SAMPLES_MAX as u64 + 50) {
            history.record(
                (n * 2_000, n),
                &status(&[("a", n), ("b", 1)]),
                &counters(&[("a", n, 0), ("b", 1, 1)]),
            );
        }
        assert_eq!(history.view.queues["a"].depth.len(), SAMPLES_MAX);
        assert_eq!(history.view.queues["a"].depth.front(), Some(&50));
        history.record((0, 0), &status(&[("b", 1)]), &counters(&[("b", 1, 1)]));
        assert!(!history.view.queues.contains_key("a"));
        let many: Vec<(String, u64)> = (0..QUEUES_TRACKED_MAX + 10)
            .map(|n| (format!("q{n:04}"), 0))
            .collect();
        let names: Vec<(&str, u64)> = many.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        let counts: Vec<(&str, u64, u64)> = many.iter().map(|(n, _)| (n.as_str(), 0, 0)).collect();
        history.record((1, 1), &status(&names), &counters(&counts));
        assert_eq!(history.view.queues.len(), QUEUES_TRACKED_MAX);
    }
}

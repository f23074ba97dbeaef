//! The links' congestion controller: it models the path (its bottleneck bandwidth and its
//! round trip without queues) instead of halving at every loss, so that random loss on a long
//! link does not throttle it, and it keeps little more than the path holds in flight, so that
//! a bottleneck with a short queue is not flooded.
//!
//! Why not quinn's: Cubic (the default) halves its window at each round with a loss: 1% random
//! loss on a 40 ms path kept a link under 2 MB/s (`qmgr bench wan`). quinn's BBR ignores
//! random loss, but it keeps twice the bandwidth-delay product in flight and quinn paces by the
//! window, not by BBR's rate, so it runs at twice the bottleneck's rate until the bottleneck's
//! queue overflows: 43% of the packets dropped behind a 200 Mbit/s cap with 512 KiB of queue.
//!
//! How, in BBR's spirit but with the window as the only control (quinn paces at 1.25 times
//! the window per smoothed round trip):
//! - a round is one smoothed round trip of acknowledgements; its delivery rate is the bytes it
//!   acknowledged over its length. The bandwidth is the best rate of the last
//!   [`BANDWIDTH_ROUNDS`] rounds that had data to send (a round starved by the application
//!   counts only if it is the best so far: it cannot show the path is slower);
//! - the propagation delay is the shortest round trip seen in the last [`MIN_RTT_WINDOW`];
//! - at first the window is [`STARTUP_GAIN`] times what the path held in the last round, so it
//!   grows about that much per round until the bandwidth stops growing by a quarter for three
//!   rounds; then the gain cycles through [`CRUISE_GAINS`], one per round: a round probing for
//!   more bandwidth, one draining what it queued (and seeing the true round trip again), six
//!   holding what the path holds;
//! - on top of the gain, [`ALLOWANCE`] of the bandwidth covers the receiver's scheduling and
//!   acknowledgement delays, which the shortest round trip leaves out;
//! - loss is a signal only past [`LOSS_RATIO_MAX`] of the bytes of a round that had data to
//!   send and lost at least [`LOSS_PACKETS_MIN`] packets (the estimate was too high, a path
//!   that got slower: the round's own rate replaces it) and when everything in flight was lost
//!   (persistent congestion: the window falls to its minimum and the start begins again).
//!
//! Invariants: the window never falls below [`MIN_WINDOW_PACKETS`] packets; time comes only
//! from the calls (quinn's), never from a clock read here.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};

/// Rounds whose best delivery rate is the bandwidth estimate.
pub(crate) const BANDWIDTH_ROUNDS: usize = 10;
/// How long the shortest round trip seen stays the propagation delay.
pub(crate) const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// The start's gain: BBR's 2/ln 2, the smallest that doubles the delivery rate each round.
pub(crate) const STARTUP_GAIN: f64 = 2.885;
/// The gains after the start, one round each, cycling.
pub(crate) const CRUISE_GAINS: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// The start ends after this many rounds without the bandwidth growing by [`GROWTH_MIN`].
const STARTUP_STALLED_ROUNDS: u8 = 3;
/// What a round's bandwidth must grow by for the start to go on.
const GROWTH_MIN: f64 = 1.25;
/// Time at the estimated bandwidth added to the window for delayed acknowledgements.
pub(crate) const ALLOWANCE: Duration = Duration::from_millis(5);
/// A round losing more than this share of its bytes has a bandwidth estimate that is too high.
pub(crate) const LOSS_RATIO_MAX: f64 = 0.2;
/// ... if it lost at least this many packets' worth: a round of a few packets (a start's, with
/// loopback's 6,500-byte packets two to four of them) loses a fifth of itself to one random
/// loss, which held a 150 ms link with 3% loss at tens of KB/s for half a minute (`qmgr bench
/// wan`). Linux's BBRv2 likewise asks for eight losses in a round before it leaves its start.
pub(crate) const LOSS_PACKETS_MIN: u64 = 8;
/// The smallest window, in packets.
pub(crate) const MIN_WINDOW_PACKETS: u64 = 4;
/// The shortest round: a loopback round trip is tens of microseconds, too short to measure a
/// rate over.
const ROUND_MIN: Duration = Duration::from_millis(1);

/// Builds a [`PathModel`] for each connection.
#[derive(Debug, Default)]
pub(crate) struct PathModelConfig;

impl ControllerFactory for PathModelConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(PathModel::new(now, current_mtu))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Startup { best: u64, stalled: u8 },
    Cruise { cycle: usize },
}

/// The acknowledgements of the round under way.
#[derive(Debug, Clone, Copy)]
struct Round {
    start: Instant,
    acked: u64,
    lost: u64,
    starved: bool,
}

impl Round {
    fn new(start: Instant) -> Self {
        Round {
            start,
            acked: 0,
            lost: 0,
            starved: false,
        }
    }
}

/// One connection's model of its path, and the window it gives.
#[derive(Debug, Clone)]
pub(crate) struct PathModel {
    mtu: u64,
    phase: Phase,
    /// Delivery rates (bytes per second) of recent rounds, newest last.
    rates: VecDeque<u64>,
    min_rtt: Option<(Duration, Instant)>,
    round: Round,
    window: u64,
}

impl PathModel {
    pub(crate) fn new(now: Instant, mtu: u16) -> Self {
        let mtu = u64::from(mtu);
        PathModel {
            mtu,
            phase: Phase::Startup {
                best: 0,
                stalled: 0,
            },
            rates: VecDeque::with_capacity(BANDWIDTH_ROUNDS + 1),
            min_rtt: None,
            round: Round::new(now),
            window: initial_window(mtu),
        }
    }

    /// The bandwidth estimate in bytes per second (0 before the first round).
    pub(crate) fn bandwidth(&self) -> u64 {
        self.rates.iter().copied().max().unwrap_or(0)
    }

    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.map(|(rtt, _)| rtt)
    }

    #[cfg(test)]
    pub(crate) fn in_startup(&self) -> bool {
        matches!(self.phase, Phase::Startup { .. })
    }

    fn min_window(&self) -> u64 {
        MIN_WINDOW_PACKETS * self.mtu
    }

    fn acked(&mut self, now: Instant, sent: Instant, bytes: u64, starved: bool, srtt: Duration) {
        let rtt = now.saturating_duration_since(sent);
        self.round.acked += bytes;
        self.round.starved |= starved;
        let expired = self
            .min_rtt
            .is_none_or(|(_, at)| now.saturating_duration_since(at) > MIN_RTT_WINDOW);
        if expired || self.min_rtt.is_some_and(|(min, _)| rtt <= min) {
            self.min_rtt = Some((rtt, now));
        }
        let length = now.saturating_duration_since(self.round.start);
        if length >= srtt.max(ROUND_MIN) {
            self.end_round(now, length, srtt);
        }
    }

    fn end_round(&mut self, now: Instant, length: Duration, srtt: Duration) {
        let round = std::mem::replace(&mut self.round, Round::new(now));
        let rate = rate(round.acked, length);
        // A round far longer than a round trip spanned a pause: its rate says nothing.
        let starved = round.starved || length > srtt.saturating_mul(2).max(ROUND_MIN * 2);
        let total = round.acked + round.lost;
        // Only a round that had data to send can show the estimate too high: across an idle
        // spell a round is a keep-alive or two, and one of them lost was "half the round",
        // which cut a 150 ms link's estimate to a keep-alive's rate and held paced messages
        // up for seconds while cruising climbed back (`qmgr bench wan`, 3% loss).
        let lossy = !starved
            && round.lost >= LOSS_PACKETS_MIN * self.mtu
            && round.lost as f64 > LOSS_RATIO_MAX * total as f64;
        if lossy {
            // The path carries less than believed: start over from what this round got.
            self.rates.clear();
            self.rates.push_back(rate);
            // Advanced below to the draining round.
            self.phase = Phase::Cruise { cycle: 0 };
        } else if !starved || rate > self.bandwidth() {
            self.rates.push_back(rate);
            if self.rates.len() > BANDWIDTH_ROUNDS {
                self.rates.pop_front();
            }
        }
        self.phase = match self.phase {
            Phase::Startup { best, stalled } if !starved => {
                let bandwidth = self.bandwidth();
                if bandwidth as f64 >= best as f64 * GROWTH_MIN {
                    Phase::Startup {
                        best: bandwidth,
                        stalled: 0,
                    }
                } else if stalled + 1 >= STARTUP_STALLED_ROUNDS {
                    // The next gain, 0.75, drains the queue the start built.
                    Phase::Cruise { cycle: 1 }
                } else {
                    Phase::Startup {
                        best,
                        stalled: stalled + 1,
                    }
                }
            }
            Phase::Startup { .. } => self.phase,
            Phase::Cruise { cycle } => Phase::Cruise {
                cycle: (cycle + 1) % CRUISE_GAINS.len(),
            },
        };
        self.window = self.target_window();
    }

    fn target_window(&self) -> u64 {
        let (Some(min_rtt), bandwidth) = (self.min_rtt(), self.bandwidth()) else {
            return self.window;
        };
        if bandwidth == 0 {
            return self.window;
        }
        let gain = match self.phase {
            Phase::Startup { .. } => STARTUP_GAIN,
            Phase::Cruise { cycle } => CRUISE_GAINS[cycle],
        };
        let held = bandwidth as f64 * (gain * min_rtt.as_secs_f64() + ALLOWANCE.as_secs_f64());
        let window = held as u64;
        match self.phase {
            // The start never shrinks its window: an early round's rate is not the path's.
            Phase::Startup { .. } => window.max(self.window),
            Phase::Cruise { .. } => window,
        }
        .max(self.min_window())
    }

    fn lost(&mut self, bytes: u64, persistent: bool) {
        self.round.lost += bytes;
        if persistent {
            self.rates.clear();
            self.phase = Phase::Startup {
                best: 0,
                stalled: 0,
            };
            self.window = self.min_window();
        }
    }
}

/// RFC 9002's initial window: ten packets, at least 14,720 bytes, at most ten packets.
fn initial_window(mtu: u64) -> u64 {
    (10 * mtu).min(14_720u64.max(2 * mtu))
}

fn rate(bytes: u64, over: Duration) -> u64 {
    let seconds = over.as_secs_f64();
    if seconds <= 0.0 {
        0
    } else {
        (bytes as f64 / seconds) as u64
    }
}

impl Controller for PathModel {
    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &quinn_proto::RttEstimator,
    ) {
        self.acked(now, sent, bytes, app_limited, rtt.get());
    }

    fn on_congestion_event(
        &mut self,
        _now: Instant,
        _sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.lost(lost_bytes, is_persistent_congestion);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = u64::from(new_mtu);
        self.window = self.window.max(self.min_window());
    }

    fn window(&self) -> u64 {
        self.window
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = ControllerMetrics::default();
        metrics.congestion_window = self.window;
        metrics
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        initial_window(self.mtu)
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests;

//! A WAN link's impairments, as a plain state machine: for each packet, given its arrival time
//! and size, whether it is lost and when it comes out. [`relay`] is the tokio task that moves
//! datagrams through it; nothing here reads a clock or touches a socket, so a seed replays a
//! run exactly.
//!
//! One [`Direction`] is one way of a link, applied in the order netem applies its own:
//! 1. random loss, each packet alone with probability `loss`;
//! 2. the bandwidth cap: a bottleneck that sends one packet after another at `bandwidth`
//!    (a token bucket holding one packet's worth), with a bounded queue in front of it; a
//!    packet that would overflow the queue is dropped (tail drop);
//! 3. propagation: the one-way `delay`, plus a jitter drawn uniformly in `±jitter`. Jitter
//!    alone never reorders (a packet leaves no earlier than the one before it, as on a real
//!    path where jitter is queueing);
//! 4. reordering: a packet picked with probability `reorder` is held back an extra
//!    [`REORDER_HOLD_MIN`] to `REORDER_HOLD_MIN + 2 × jitter`, and does not hold back those
//!    after it, which overtake it.
//!
//! Invariants: release times of packets not picked for reordering never decrease; a packet is
//! released no earlier than it arrived plus its queueing and its delay less its jitter; the
//! queue in front of the cap never holds more than `queue_bytes_max`.

pub(super) mod relay;

use std::time::Duration;

/// How long a packet picked for reordering is held back at least: a millisecond, tokio's timer
/// granularity, so that it is overtaken even on a path with no jitter.
pub(super) const REORDER_HOLD_MIN: Duration = Duration::from_millis(1);

/// One direction's impairments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Impairment {
    /// The one-way delay (half the round trip).
    pub(super) delay: Duration,
    /// Each packet's delay varies uniformly by up to this much either way.
    pub(super) jitter: Duration,
    /// The probability of losing each packet, in `0.0..=1.0`.
    pub(super) loss: f64,
    /// The probability of holding a packet back so that later ones overtake it.
    pub(super) reorder: f64,
    /// The bottleneck's rate in bytes per second; `None`: no cap.
    pub(super) bandwidth_bytes_per_second: Option<u64>,
    /// The most bytes waiting in front of the bottleneck; more are dropped.
    pub(super) queue_bytes_max: u64,
}

/// What becomes of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Lost at random.
    Lost,
    /// Dropped: the queue in front of the bandwidth cap is full.
    TailDropped,
    /// Released at `at` (on the same clock as the arrival).
    Released { at: Duration, reordered: bool },
}

/// One way of a link: its impairments and what it remembers between packets.
#[derive(Debug)]
pub(super) struct Direction {
    impairment: Impairment,
    rng: Rng,
    /// When the bottleneck has sent everything queued so far.
    bottleneck_free_at: Duration,
    /// The release time of the last packet released in order: none after it goes earlier.
    in_order_at: Duration,
}

impl Direction {
    pub(super) fn new(impairment: Impairment, seed: u64) -> Self {
        assert!(
            (0.0..=1.0).contains(&impairment.loss),
            "loss is a probability"
        );
        assert!(
            (0.0..=1.0).contains(&impairment.reorder),
            "reorder is a probability"
        );
        Self {
            impairment,
            rng: Rng::new(seed),
            bottleneck_free_at: Duration::ZERO,
            in_order_at: Duration::ZERO,
        }
    }

    /// The fate of a packet of `bytes` arriving at `now`; arrival times never decrease.
    pub(super) fn handle_packet(&mut self, now: Duration, bytes: usize) -> Fate {
        let impairment = self.impairment;
        // Drawn for every packet, lost or not, so one decision never shifts the others'.
        let lose = self.rng.chance(impairment.loss);
        let reorder = self.rng.chance(impairment.reorder);
        let jitter_draw = self.rng.unit();
        let hold_draw = self.rng.unit();
        if lose {
            return Fate::Lost;
        }
        let Some(sent_at) = self.bottleneck(now, bytes) else {
            return Fate::TailDropped;
        };
        // Uniform in [delay - jitter, delay + jitter], never below zero.
        let spread = impairment.jitter.mul_f64(2.0 * jitter_draw);
        let propagated = (impairment.delay + spread).saturating_sub(impairment.jitter);
        let arrival = sent_at + propagated;
        if reorder {
            let hold = REORDER_HOLD_MIN + impairment.jitter.mul_f64(2.0 * hold_draw);
            return Fate::Released {
                at: arrival.max(self.in_order_at) + hold,
                reordered: true,
            };
        }
        self.in_order_at = arrival.max(self.in_order_at);
        Fate::Released {
            at: self.in_order_at,
            reordered: false,
        }
    }

    /// When the bottleneck has sent a packet of `bytes` arriving at `now`; `None` if the
    /// queue in front of it has no room. Without a cap, at once.
    fn bottleneck(&mut self, now: Duration, bytes: usize) -> Option<Duration> {
        let Some(rate) = self.impairment.bandwidth_bytes_per_second else {
            return Some(now);
        };
        let queued_for = self.bottleneck_free_at.saturating_sub(now);
        let queued_bytes = queued_for.as_secs_f64() * rate as f64;
        if queued_bytes + bytes as f64 > self.impairment.queue_bytes_max as f64 {
            return None;
        }
        let sending = Duration::from_secs_f64(bytes as f64 / rate as f64);
        self.bottleneck_free_at = self.bottleneck_free_at.max(now) + sending;
        Some(self.bottleneck_free_at)
    }
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a tiny, well-mixed generator, enough for drawing
/// losses and delays, and seeded so that a run replays.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`: the top 53 bits, an `f64`'s mantissa.
    pub(super) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `true` with probability `p`.
    pub(super) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> Impairment {
        Impairment {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            reorder: 0.0,
            bandwidth_bytes_per_second: None,
            queue_bytes_max: 64 * 1024,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn released(fate: Fate) -> Duration {
        match fate {
            Fate::Released { at, .. } => at,
            other => panic!("not released: {other:?}"),
        }
    }

    #[test]
    fn a_clean_link_delays_every_packet_by_the_delay_in_order() {
        let mut link = Direction::new(
            Impairment {
                delay: ms(20),
                ..clean()
            },
            1,
        );
        for t in 0..100 {
            assert_eq!(
                link.handle_packet(ms(t), 1200),
                Fate::Released {
                    at: ms(t + 20),
                    reordered: false
                }
            );
        }
    }

    #[test]
    fn loss_drops_about_its_share_and_a_seed_replays_exactly() {
        let impairment = Impairment {
            loss: 0.03,
            ..clean()
        };
        let fates = |seed| {
            let mut link = Direction::new(impairment, seed);
            (0..100_000)
                .map(|t| link.handle_packet(Duration::from_micros(t), 1200))
                .collect::<Vec<_>>()
        };
        let first = fates(7);
        assert_eq!(first, fates(7));
        assert_ne!(first, fates(8));
        let lost = first.iter().filter(|f| **f == Fate::Lost).count();
        assert!(
            (2_700..3_300).contains(&lost),
            "{lost} lost of 100,000 at 3%"
        );
    }

    #[test]
    fn jitter_varies_the_delay_within_its_bounds_without_reordering() {
        let impairment = Impairment {
            delay: ms(50),
            jitter: ms(10),
            ..clean()
        };
        // Packets 100 µs apart queue behind each other's jitter; 20 ms apart, never.
        for spacing in [Duration::from_micros(100), ms(20)] {
            let mut link = Direction::new(impairment, 3);
            let mut last = Duration::ZERO;
            let (mut shortest, mut longest) = (Duration::MAX, Duration::ZERO);
            for t in 0..2_000u32 {
                let now = spacing * t;
                let at = released(link.handle_packet(now, 1200));
                assert!(at >= last, "jitter alone reordered");
                assert!(at >= now + ms(40) && at <= now + ms(60), "{:?}", at - now);
                shortest = shortest.min(at - now);
                longest = longest.max(at - now);
                last = at;
            }
            if spacing == ms(20) {
                assert!(
                    shortest < ms(41) && longest > ms(59),
                    "{shortest:?}..{longest:?}"
                );
            }
        }
    }

    #[test]
    fn reordered_packets_are_overtaken_by_later_ones() {
        let mut link = Direction::new(
            Impairment {
                delay: ms(5),
                reorder: 0.1,
                ..clean()
            },
            4,
        );
        let fates: Vec<(Duration, bool)> = (0..10_000u64)
            .map(
                |t| match link.handle_packet(Duration::from_micros(t * 50), 1200) {
                    Fate::Released { at, reordered } => (at, reordered),
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        let picked = fates.iter().filter(|(_, reordered)| *reordered).count();
        assert!(
            (800..1_200).contains(&picked),
            "{picked} picked of 10,000 at 10%"
        );
        for (i, (at, reordered)) in fates.iter().enumerate() {
            if *reordered {
                let overtaken = fates[i + 1..].iter().any(|(later, _)| later < at);
                assert!(
                    overtaken || i + 20 >= fates.len(),
                    "packet {i} not overtaken"
                );
            }
        }
    }

    #[test]
    fn the_bandwidth_cap_paces_packets_and_drops_what_overflows_its_queue() {
        // 1 MB/s: a 1,000-byte packet takes a millisecond; the queue holds 10 of them.
        let mut link = Direction::new(
            Impairment {
                delay: ms(10),
                bandwidth_bytes_per_second: Some(1_000_000),
                queue_bytes_max: 10_000,
                ..clean()
            },
            5,
        );
        let fates: Vec<Fate> = (0..20).map(|_| link.handle_packet(ms(0), 1000)).collect();
        for (i, fate) in fates.iter().take(10).enumerate() {
            assert_eq!(released(*fate), ms(10 + i as u64 + 1), "packet {i}");
        }
        assert!(
            fates[10..].iter().all(|f| *f == Fate::TailDropped),
            "{fates:?}"
        );
        // Once the queue has drained, packets go through again at the line rate.
        assert_eq!(released(link.handle_packet(ms(10), 1000)), ms(21));
        assert_eq!(released(link.handle_packet(ms(100), 1000)), ms(111));
    }
}

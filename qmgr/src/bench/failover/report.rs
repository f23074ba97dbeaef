//! What a failover run found, read from its arrivals against its timeline: the lines the
//! bench prints.

use super::*;
use qmgr::cli::output::OutputError;
use qmgr::outln;

/// The arrivals of a run, in the order they arrived, read against its timeline.
pub(super) struct Findings<'a> {
    pub(super) timeline: &'a Timeline,
    pub(super) arrivals: &'a [Arrival],
}

impl Findings<'_> {
    /// Milliseconds from the kill to `us` (0 before it).
    pub(super) fn after_kill(&self, us: u64) -> f64 {
        ms(us.saturating_sub(self.timeline.kill_us))
    }

    /// `us` as a signed distance from the kill: before or after it.
    pub(super) fn around_kill(&self, us: u64) -> String {
        let kill_us = self.timeline.kill_us;
        if us >= kill_us {
            format!("{:.1} ms after", ms(us - kill_us))
        } else {
            format!("{:.1} ms before", ms(kill_us - us))
        }
    }

    /// (1) The first arrival via charlie, whenever it was put; false if there was none.
    pub(super) fn failover(&self) -> Result<bool, OutputError> {
        let failover = self
            .arrivals
            .iter()
            .find(|a| a.via == Via::Charlie && a.arrived_us >= self.timeline.kill_us);
        match failover {
            Some(a) => outln!(
                "failover: first arrival via {CHARLIE} {:.1} ms after the kill",
                self.after_kill(a.arrived_us)
            )?,
            None => outln!("failover: no message ever arrived via {CHARLIE}")?,
        }
        Ok(failover.is_some())
    }

    /// (2) The longest silence at delta that overlaps the outage.
    pub(super) fn longest_gap(&self) -> Result<(), OutputError> {
        let Timeline {
            kill_us,
            restart_us,
            ..
        } = *self.timeline;
        let gap = self
            .arrivals
            .windows(2)
            .filter(|pair| pair[1].arrived_us > kill_us && pair[0].arrived_us < restart_us)
            .map(|pair| (pair[1].arrived_us - pair[0].arrived_us, pair))
            .max_by_key(|(gap, _)| *gap);
        if let Some((gap, pair)) = gap {
            outln!(
                "longest gap at {DELTA} during the outage: {:.1} ms (from {} the kill to {} it)",
                ms(gap),
                self.around_kill(pair[0].arrived_us),
                self.around_kill(pair[1].arrived_us),
            )?;
        }
        Ok(())
    }

    /// (3) Messages put after the kill: when the first got through, and their latency.
    pub(super) fn flowing_again(&self) -> Result<(), OutputError> {
        let Timeline {
            kill_us,
            restart_us,
            dead_interval_us,
            ..
        } = *self.timeline;
        match self
            .arrivals
            .iter()
            .find(|a| a.via == Via::Charlie && a.put_us() >= kill_us)
        {
            Some(a) => outln!(
                "flowing again: first message put after the kill got via {CHARLIE} {:.1} ms \
                 after the kill ({:.1} ms after it was put)",
                self.after_kill(a.arrived_us),
                ms(a.arrived_us.saturating_sub(a.put_us()))
            )?,
            None => outln!("flowing again: no message put after the kill got via {CHARLIE}")?,
        }
        let outage = self.latencies(kill_us, restart_us);
        let steady = self.latencies(kill_us + dead_interval_us, restart_us);
        outln!(
            "latency put->get of the {} put while {BRAVO} was down: {}; of the {} put after \
             kill + dead interval: {}",
            outage.len(),
            latency_summary(outage),
            steady.len(),
            latency_summary(steady),
        )?;
        Ok(())
    }

    /// Put→get latencies of the messages put from `from_us` to `to_us`.
    pub(super) fn latencies(&self, from_us: u64, to_us: u64) -> Vec<u64> {
        self.arrivals
            .iter()
            .filter(|a| (from_us..to_us).contains(&a.put_us()))
            .map(|a| a.arrived_us.saturating_sub(a.put_us()))
            .collect()
    }

    /// (4) Messages that waited with bravo (in flight on its channel, or stored on it), and
    /// any that went via bravo when it should have been routed around.
    pub(super) fn stranded(&self) -> Result<(), OutputError> {
        let Timeline {
            kill_us,
            restart_us,
            dead_interval_us,
            ..
        } = *self.timeline;
        let stranded: Vec<&Arrival> = self
            .arrivals
            .iter()
            .filter(|a| {
                a.via == Via::Bravo
                    && a.arrived_us >= restart_us
                    && a.put_us() < kill_us + dead_interval_us
            })
            .collect();
        match (stranded.iter().map(|a| a.put_us()).min(), stranded.last()) {
            (Some(first_put), Some(last)) => outln!(
                "stranded with {BRAVO}: {} message(s), put from {} to {} the kill, got via \
                 {BRAVO} {:.1} ms to {:.1} ms after its restart",
                stranded.len(),
                self.around_kill(first_put),
                self.around_kill(
                    stranded
                        .iter()
                        .map(|a| a.put_us())
                        .max()
                        .unwrap_or(first_put)
                ),
                ms(stranded[0].arrived_us - restart_us),
                ms(last.arrived_us - restart_us),
            )?,
            _ => outln!("stranded with {BRAVO}: none")?,
        }
        let late = self
            .arrivals
            .iter()
            .filter(|a| {
                a.via == Via::Bravo
                    && (kill_us + dead_interval_us..restart_us).contains(&a.put_us())
            })
            .count();
        if late > 0 {
            outln!(
                "unexpected: {late} message(s) put after kill + dead interval, before the \
                 restart, went via {BRAVO}"
            )?;
        }
        Ok(())
    }

    /// (4) With bravo lost for good: the messages put before the kill that arrived after
    /// it (what bravo held or had in flight, sent again by alpha), and when the last came.
    pub(super) fn stranded_for_good(&self) -> Result<(), OutputError> {
        let Timeline {
            kill_us,
            dead_interval_us,
            ..
        } = *self.timeline;
        let rescued: Vec<&Arrival> = self
            .arrivals
            .iter()
            .filter(|a| a.put_us() < kill_us && a.arrived_us >= kill_us)
            .collect();
        match rescued.last() {
            Some(last) => {
                let after = last.arrived_us - kill_us;
                outln!(
                    "stranded with {BRAVO} (never back): {} message(s) put before the kill \
                     arrived after it, via {CHARLIE}; the last {:.1} ms after the kill \
                     (target: the dead interval + 1 s = {:.0} ms: {})",
                    rescued.len(),
                    ms(after),
                    ms(dead_interval_us + 1_000_000),
                    if after <= dead_interval_us + 1_000_000 {
                        "met"
                    } else {
                        "missed"
                    }
                )
            }
            None => outln!("stranded with {BRAVO} (never back): none"),
        }
    }

    /// (5) Routing back through the cheaper path.
    pub(super) fn back_via_bravo(&self) -> Result<(), OutputError> {
        let restart_us = self.timeline.restart_us;
        match self
            .arrivals
            .iter()
            .find(|a| a.via == Via::Bravo && a.put_us() >= restart_us)
        {
            Some(a) => outln!(
                "back via {BRAVO}: first message put after the restart got via {BRAVO} {:.1} ms \
                 after the restart",
                ms(a.arrived_us - restart_us)
            )?,
            None => outln!("back via {BRAVO}: no message put after the restart went via it")?,
        }
        Ok(())
    }

    /// How many messages came each way.
    pub(super) fn paths(&self) -> Result<(), OutputError> {
        let mut paths: BTreeMap<&Via, u64> = BTreeMap::new();
        for a in self.arrivals {
            *paths.entry(&a.via).or_default() += 1;
        }
        let paths: Vec<String> = paths
            .into_iter()
            .map(|(via, n)| match via {
                Via::Bravo => format!("{n} via {BRAVO}"),
                Via::Charlie => format!("{n} via {CHARLIE}"),
                Via::Other(path) => format!("{n} by {path}"),
            })
            .collect();
        outln!("paths: {}", paths.join(", "))?;
        Ok(())
    }

    /// (6) Exactly once: every message put got once, none that was not put, checked against a
    /// ledger in the order they arrived, and in put order (custody keeps it through the
    /// failover).
    pub(super) fn verdict(&self, run: u32, put: u64) -> Verdict {
        let ledger = Arc::new(Ledger::new(run, &[put]));
        let mut reader = ledger.reader();
        for a in self.arrivals {
            reader.take_header(Some(a.header));
        }
        ledger.verdict(&[put], reader.reordered())
    }
}

/// Median, 99th percentile and maximum of `samples` in microseconds, printed in ms.
fn latency_summary(mut samples: Vec<u64>) -> String {
    if samples.is_empty() {
        return "no samples".to_owned();
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i] as f64 / 1000.0
    };
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

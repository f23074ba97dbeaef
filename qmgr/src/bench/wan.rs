//! `qmgr bench wan`: put→get throughput and paced latency across one link whose packets go
//! through an impairment proxy ([`super::impair`]): one-way delay, jitter, random loss,
//! reordering and a bandwidth cap, for a grid of round-trip times and losses.
//!
//! Each grid point starts two fresh managers, `alpha` and `bravo`, linked, with the queue
//! `bench` homed at bravo. Each manager has a relay in front of it: the topology gives the
//! relay's address, the manager binds a free port of its own (`QMGR_LISTEN`), and the relay
//! forwards to it. A connection alpha dials goes through bravo's relay only and one bravo
//! dials through alpha's only, and each relay delays both ways by half the round trip, so
//! every packet of the link sees the configured impairment exactly once. Loss applies to each
//! direction alone.
//!
//! Per point, two phases, each checked message by message ([`super::verify`]):
//! - throughput: producers at alpha, consumers at bravo, as fast as the link goes, for
//!   `--duration` seconds of puts (at most `--count` messages), never more than `--ahead`
//!   messages put and not yet got, so the drain after the last put stays short on a slow
//!   path; the rate is messages over the time from the first put to the last get;
//! - latency: one producer paced at `--rate`, one consumer, put→get p50 and p99.
//!
//! Relays draw from `--seed`, so a point's impairment decisions replay (the traffic's timing,
//! and so the packets they fall on, do not).

use qmgr::outln;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use hopmq::Client;

use super::cluster::{Cluster, Spec};
use super::impair::relay::{Relay, RelayStats, bind_socket};
use super::impair::{Impairment, Rng};
use super::traffic::{Drained, Traffic, TrafficSpec};
use super::verify::{HEADER_BYTES, Verdict, sync_label};
use qmgr::config::SyncMode;

const ALPHA: &str = "alpha";
const BRAVO: &str = "bravo";
/// The queue the messages go to, homed at bravo.
const QUEUE: &str = "bench";
/// Messages the throughput phase puts at most by default: far more than a few seconds at
/// loopback speed, so the duration is what bounds it.
const COUNT_DEFAULT: u64 = 1_000_000;

#[derive(Debug, clap::Args)]
pub(crate) struct WanBench {
    /// Round-trip times to measure, in milliseconds (half each way).
    #[arg(long, value_delimiter = ',', default_value = "0,10,40,150")]
    rtt: Vec<u64>,
    /// Random losses to measure, in percent of packets, each direction alone.
    #[arg(long, value_delimiter = ',', default_value = "0,0.1,1,3")]
    loss: Vec<f64>,
    /// Jitter in milliseconds: each packet's one-way delay varies uniformly by up to this much.
    #[arg(long, default_value_t = 0)]
    jitter: u64,
    /// Percent of packets held back so that later ones overtake them.
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// A bandwidth cap in Mbit/s, each direction (default: none).
    #[arg(long)]
    bandwidth: Option<f64>,
    /// The queue in front of the bandwidth cap, in KiB; past it packets are dropped.
    #[arg(long, default_value_t = 256)]
    queue_kib: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Seconds of puts in each point's throughput phase.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// The most messages each point's throughput phase puts.
    #[arg(long, default_value_t = COUNT_DEFAULT)]
    count: u64,
    /// The most messages put and not yet got in the throughput phase: more than a 150 ms
    /// path holds at 100,000 msg/s (6,144 alone capped such a path at 40,000 msg/s).
    #[arg(long, default_value_t = 32_768)]
    ahead: u64,
    /// Producer tasks at alpha in the throughput phase.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Consumer tasks at bravo in the throughput phase.
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// Messages per put request in the throughput phase.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Messages per second of the latency phase (one producer, one message per put).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 3.0)]
    latency_duration: f64,
    /// Both managers' sync policy.
    #[arg(long, value_enum, default_value_t = SyncMode::Always)]
    sync: SyncMode,
    /// Seed of the relays' impairment decisions.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Keep each point's run folder (topology, certificates, data, logs) and print where.
    #[arg(long)]
    keep: bool,
}

/// Put requests each producer keeps in flight.
const WINDOW: usize = 8;
/// Messages each consumer fetches ahead.
const PREFETCH: u32 = 256;
/// Put requests the paced producer may have in flight: enough that a slow put never holds
/// back the schedule (the stamps keep their due times regardless; `traffic::Schedule`).
const PACED_WINDOW: usize = 64;

/// One point of the grid.
#[derive(Debug, Clone, Copy)]
struct Point {
    index: usize,
    rtt_ms: u64,
    loss_percent: f64,
}

/// What one phase measured.
struct Phase {
    messages: u64,
    elapsed: Duration,
    p50_ms: f64,
    p99_ms: f64,
    verdict: Verdict,
}

/// What one point measured.
struct Row {
    point: Point,
    throughput: Phase,
    latency: Phase,
    relays: RelayStats,
    link: LinkFigures,
}

/// Alpha's link to bravo after the point.
struct LinkFigures {
    connects: u64,
    resent: u64,
    rtt_ms: Option<f64>,
    /// Batches bravo took from an early copy, ahead of the stream (both phases).
    early: u64,
}

impl WanBench {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        self.check()?;
        self.print_setup()?;
        outln!("{}", header())?;
        let mut rows = Vec::new();
        let points = self
            .rtt
            .iter()
            .flat_map(|rtt| self.loss.iter().map(move |loss| (*rtt, *loss)));
        for (index, (rtt_ms, loss_percent)) in points.enumerate() {
            let point = Point {
                index,
                rtt_ms,
                loss_percent,
            };
            let row = self
                .run_point(point)
                .with_context(|| format!("at rtt {rtt_ms} ms, loss {loss_percent}%"))?;
            outln!("{}", row.line(self.size))?;
            rows.push(row);
        }
        let mut code = ExitCode::SUCCESS;
        for row in &rows {
            for (phase, what) in [(&row.throughput, "throughput"), (&row.latency, "latency")] {
                let lines = phase.verdict.lines();
                let label = format!(
                    "{} ms, {}% {what}",
                    row.point.rtt_ms, row.point.loss_percent
                );
                for line in &lines {
                    outln!("{label} {line}")?;
                }
                if !phase.verdict.passed() {
                    code = ExitCode::FAILURE;
                }
            }
        }
        Ok(code)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.size < HEADER_BYTES {
            bail!(
                "--size must be at least {HEADER_BYTES} bytes (the send time, producer and sequence number ride in the body)"
            );
        }
        if self.producers == 0 || self.consumers == 0 || self.batch == 0 || self.count == 0 {
            bail!("--producers, --consumers, --batch and --count must be at least 1");
        }
        if self.ahead < (self.batch * self.producers) as u64 {
            bail!("--ahead must be at least --batch × --producers, or no producer could put");
        }
        let percent = |p: f64| (0.0..=100.0).contains(&p);
        if !self.loss.iter().copied().all(percent) || !percent(self.reorder) {
            bail!("--loss and --reorder are percentages, between 0 and 100");
        }
        let positive = |s: f64| s.is_finite() && s > 0.0;
        if !positive(self.duration) || !positive(self.latency_duration) {
            bail!("--duration and --latency-duration must be more than 0 seconds");
        }
        if self.bandwidth.is_some_and(|b| !positive(b)) {
            bail!("--bandwidth must be more than 0 Mbit/s");
        }
        if self.rtt.is_empty() || self.loss.is_empty() {
            bail!("--rtt and --loss need at least one value each");
        }
        Ok(())
    }

    /// The impairment of each direction at `point`.
    fn impairment(&self, point: Point) -> Impairment {
        Impairment {
            delay: Duration::from_micros(point.rtt_ms * 500),
            jitter: Duration::from_millis(self.jitter),
            loss: point.loss_percent / 100.0,
            reorder: self.reorder / 100.0,
            bandwidth_bytes_per_second: self.bandwidth.map(|mbit| (mbit * 1e6 / 8.0) as u64),
            queue_bytes_max: self.queue_kib * 1024,
        }
    }

    /// Starts the two managers behind their relays and measures one point.
    fn run_point(&self, point: Point) -> anyhow::Result<Row> {
        let any_port: SocketAddr = ([127, 0, 0, 1], 0).into();
        let fronts = [bind_socket(any_port)?, bind_socket(any_port)?];
        let advertised: BTreeMap<String, SocketAddr> = [
            (ALPHA.to_owned(), fronts[0].local_addr()?),
            (BRAVO.to_owned(), fronts[1].local_addr()?),
        ]
        .into();
        let cluster = Cluster::start(Spec {
            folder_prefix: "qmgr-bench-wan",
            managers: vec![ALPHA.to_owned(), BRAVO.to_owned()],
            links: vec![(ALPHA.to_owned(), BRAVO.to_owned(), 1)],
            queues: vec![(QUEUE.to_owned(), BRAVO.to_owned())],
            sync: self.sync,
            env: Vec::new(),
            advertised,
            console: false,
        })?;
        super::cluster::run_on(cluster, self.keep, async |cluster| {
            match self.measure(cluster, point, fronts).await {
                Ok(row) => Ok(row),
                Err(error) => {
                    // A manager that died is usually why a client failed.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let exited = cluster
                        .exited()
                        .map_or(String::new(), |exited| format!(" ({exited})"));
                    bail!("{error:#}{exited}\n{}", cluster.log_tails())
                }
            }
        })
    }

    /// Starts the relays, waits for the link, and runs both phases.
    async fn measure(
        &self,
        cluster: &mut Cluster,
        point: Point,
        fronts: [std::net::UdpSocket; 2],
    ) -> anyhow::Result<Row> {
        let impairment = self.impairment(point);
        let mut relays = Vec::with_capacity(fronts.len());
        for (i, (front, node)) in fronts.into_iter().zip(cluster.nodes()).enumerate() {
            let upstream = node
                .listen
                .with_context(|| format!("manager {} has no address of its own", node.name))?;
            let seed = Rng::new(self.seed ^ ((point.index as u64) << 8) ^ i as u64).next_u64();
            relays.push(Relay::start(front, upstream, impairment, seed)?);
        }
        let clients = cluster.ready_clients().await?;
        let throughput = self
            .phase(
                cluster,
                self.throughput_spec(),
                self.producers,
                self.consumers,
            )
            .await?;
        let latency = self.phase(cluster, self.latency_spec(), 1, 1).await?;
        let link = link_figures(&clients[0], &clients[1]).await?;
        let mut stats = RelayStats::default();
        for relay in relays {
            stats.add(relay.stop().await?);
        }
        Ok(Row {
            point,
            throughput,
            latency,
            relays: stats,
            link,
        })
    }

    /// Runs `spec`'s traffic from `producers` clients at alpha to `consumers` at bravo.
    async fn phase(
        &self,
        cluster: &mut Cluster,
        spec: TrafficSpec,
        producers: usize,
        consumers: usize,
    ) -> anyhow::Result<Phase> {
        let (alpha, bravo) = (
            cluster.node(ALPHA)?.socket.clone(),
            cluster.node(BRAVO)?.socket.clone(),
        );
        let mut consumer_clients = Vec::with_capacity(consumers);
        for _ in 0..consumers {
            consumer_clients.push(Client::connect_to(&bravo).await?);
        }
        let mut producer_clients = Vec::with_capacity(producers);
        for _ in 0..producers {
            producer_clients.push(Client::connect_to(&alpha).await?);
        }
        let mut traffic = Traffic::start(&spec, producer_clients, consumer_clients)?;
        let drained = traffic
            .drain(|| match cluster.exited() {
                Some(exited) => bail!("{exited} during the run"),
                None => Ok(()),
            })
            .await?;
        if drained == Drained::Stalled {
            outln!("(a phase stalled: what is missing counts as lost)")?;
        }
        let outcome = traffic.finish(drained).await?;
        let verdict = outcome.verdict.context("a wan phase has consumers")?;
        let ms = |q: f64| outcome.histogram.value_at_quantile(q) as f64 / 1000.0;
        Ok(Phase {
            messages: verdict.acknowledged,
            elapsed: outcome.elapsed,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            verdict,
        })
    }

    /// As fast as the link goes, for `--duration` of puts.
    fn throughput_spec(&self) -> TrafficSpec {
        TrafficSpec {
            queue: QUEUE.to_owned(),
            count: self.count,
            size: self.size,
            batch: self.batch,
            window: WINDOW,
            prefetch: PREFETCH,
            single_gets: 0,
            persistent: true,
            rate: None,
            put_for: Some(Duration::from_secs_f64(self.duration)),
            ahead_max: Some(self.ahead),
        }
    }

    /// One message per put at `--rate`, for `--latency-duration`.
    fn latency_spec(&self) -> TrafficSpec {
        TrafficSpec {
            queue: QUEUE.to_owned(),
            count: ((self.rate as f64 * self.latency_duration).ceil() as u64).max(1),
            size: self.size,
            batch: 1,
            window: PACED_WINDOW,
            prefetch: PREFETCH,
            single_gets: 0,
            persistent: true,
            rate: Some(self.rate),
            put_for: None,
            ahead_max: None,
        }
    }

    fn print_setup(&self) -> Result<(), qmgr::cli::output::OutputError> {
        outln!(
            "wan: alpha -> bravo, one link, each manager behind a relay; {} B messages, persistent, {}; \
             throughput: {} producers, {} consumers, batch {}, {} s of puts (at most {}), at most {} ahead; \
             latency: paced at {} msg/s for {} s; jitter {} ms, reorder {}%, bandwidth {}, seed {}",
            self.size,
            sync_label(self.sync.as_str()),
            self.producers,
            self.consumers,
            self.batch,
            self.duration,
            self.count,
            self.ahead,
            self.rate,
            self.latency_duration,
            self.jitter,
            self.reorder,
            self.bandwidth.map_or("uncapped".to_owned(), |b| format!(
                "{b} Mbit/s (queue {} KiB)",
                self.queue_kib
            )),
            self.seed,
        )?;
        Ok(())
    }
}

/// The table's header; [`Row::line`] lines up under it.
fn header() -> String {
    format!(
        "{:>6} {:>6} {:>9} {:>7} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7} {:>8} {:>7}",
        "rtt ms",
        "loss %",
        "msg/s",
        "MB/s",
        "msgs",
        "p50 ms",
        "p99 ms",
        "packets",
        "dropped",
        "seen rtt",
        "connect",
        "resent",
        "early"
    )
}

impl Row {
    fn line(&self, size: usize) -> String {
        let rate = self.throughput.messages as f64 / self.throughput.elapsed.as_secs_f64();
        let dropped = self.relays.lost + self.relays.tail_dropped + self.relays.overflowed;
        format!(
            "{:>6} {:>6} {:>9.0} {:>7.2} {:>8} {:>9.2} {:>9.2} {:>9} {:>7.2}% {:>8} {:>7} {:>8} {:>7}",
            self.point.rtt_ms,
            self.point.loss_percent,
            rate,
            rate * size as f64 / 1e6,
            self.throughput.messages,
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.relays.received,
            dropped as f64 * 100.0 / self.relays.received.max(1) as f64,
            self.link
                .rtt_ms
                .map_or("-".to_owned(), |ms| format!("{ms:.1}")),
            self.link.connects,
            self.link.resent,
            self.link.early,
        )
    }
}

/// Alpha's link to bravo: connections made, messages sent again, and QUIC's smoothed RTT;
/// and what bravo took from early copies.
async fn link_figures(alpha: &Client, bravo: &Client) -> anyhow::Result<LinkFigures> {
    let status = alpha.status().await.context("status of manager alpha")?;
    let link = status
        .links
        .iter()
        .find(|l| l.linked)
        .context("manager alpha reports no link")?;
    Ok(LinkFigures {
        connects: link.connects,
        resent: link
            .messages_sent
            .saturating_sub(link.messages_acked + link.in_flight),
        rtt_ms: link.rtt_us.map(|us| us as f64 / 1000.0),
        early: bravo
            .status()
            .await
            .context("status of manager bravo")?
            .links
            .iter()
            .map(|l| l.early_batches)
            .sum(),
    })
}

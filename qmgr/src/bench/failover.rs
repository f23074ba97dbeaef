//! `qmgr bench failover`: how long a network of real managers takes to route around a relay
//! killed with SIGKILL, and whether any message is lost or duplicated on the way.
//!
//! Starts four managers on loopback (through [`super::cluster`]: certificates, free ports, one
//! data folder, socket and log each) in a diamond: `alpha-bravo` and `bravo-delta` cost 1,
//! `alpha-charlie` and `charlie-delta` cost 2, the queue `bench` homed on `delta`, every
//! manager with `QMGR_LINK_DEAD_INTERVAL_MS` set to `--dead-interval-ms`. One producer puts to
//! `bench` at `alpha`, one message at a time (a window of them in flight) paced at `--rate`;
//! each persistent body carries a [`Header`]: its sequence number and the time the pacing
//! schedule says it is due, stamped before it waits for room in the window (see
//! [`Schedule`]), so a put that stalls shows in the latency of the messages due behind it. One
//! consumer at `delta` records each message's header, arrival time and relay (the middle entry
//! of its trace, `[alpha, relay, delta]`). All times are taken by this process on one
//! monotonic clock. Every manager's status must report the sync policy asked for.
//!
//! After `--warmup-secs` it checks that everything so far came via `bravo` (the cheaper path),
//! then kills `bravo` and notes the instant. Production goes on. `bravo` stays down
//! `--down-secs`, is started again on the same data folder, and production goes on for
//! `--after-secs` more. Then production stops and the run waits until every message put has
//! arrived (those that were given to `bravo`'s channel before it died, or were stored on
//! `bravo`, can only arrive once it is back), until every link is empty, and a little longer
//! for any duplicate; if none arrives for [`PROGRESS_DEADLINE`] first, the missing ones are
//! lost.
//!
//! Reported: the failover time (from the kill to the first arrival via `charlie`); the longest
//! gap between arrivals during the outage; when messages put after the kill flow again and
//! their put→get latency; the messages stranded with `bravo` until its return; the time from
//! the restart to the first new message via `bravo`; and the [`super::verify`] line: messages
//! put, lost, duplicated, reordered and unexpected. The exit code is 1 when any message is
//! lost, duplicated, reordered (the messages stranded with `bravo` must not arrive after later
//! ones that went via `charlie`: their destination holds those) or unexpected, or none ever
//! went via `charlie`.
//!
//! With `--for-good`, `bravo` is never started again (a relay lost with its disk): what it
//! held comes from `alpha`, which kept custody of it, and the report says how many messages
//! put before the kill arrived after it, and when the last of them did (the target: the dead
//! interval plus a second).

use qmgr::cli::output::OutputError;
use qmgr::outln;
use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hopmq::{Client, Message};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

mod report;

use self::report::Findings;
use super::cluster::{Cluster, START_DEADLINE, Spec};
use super::traffic::{PutsInFlight, Schedule, send_put};
use super::verify::{HEADER_BYTES, Header, Ledger, Verdict, run_id, sync_label};
use qmgr::config::SyncMode;

/// The queue the messages go to, homed on [`DELTA`].
const QUEUE: &str = "bench";
/// Where the producer puts.
const ALPHA: &str = "alpha";
/// The relay of the cheaper path, the one killed.
const BRAVO: &str = "bravo";
/// The relay of the dearer path.
const CHARLIE: &str = "charlie";
/// Where the queue is homed and the consumer gets.
const DELTA: &str = "delta";
/// Puts the producer keeps in flight: each waits for a sync at `alpha` (a few ms at most on
/// ordinary disks), so 64 keep the default 1000 msg/s, and far more, on schedule.
const PUTS_IN_FLIGHT_MAX: usize = 64;
/// How often the run takes in arrivals and checks on its tasks and managers.
const WATCH_TICK: Duration = Duration::from_millis(10);
/// Arrivals buffered between the consumer and the run: over a minute at the default rate,
/// while the run is busy restarting `bravo`.
const ARRIVALS_BUFFERED_MAX: usize = 65_536;
/// Waiting for the last messages with none arriving for this long ends the drain: the ones
/// still missing are lost.
const PROGRESS_DEADLINE: Duration = Duration::from_secs(60);
/// How long every link gets to empty once every message has arrived.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);
/// How long the consumer goes on once everything is settled, for a late duplicate.
const DUPLICATE_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, clap::Args)]
pub(crate) struct FailoverBench {
    /// Messages per second the producer puts at alpha.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Body size in bytes (the put time, run, producer and sequence number ride in the first
    /// 24).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Seconds of traffic before bravo is killed.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Seconds bravo stays down.
    #[arg(long, default_value_t = 8)]
    down_secs: u64,
    /// Seconds of traffic after bravo is started again.
    #[arg(long, default_value_t = 4)]
    after_secs: u64,
    /// Every manager's link dead interval (`QMGR_LINK_DEAD_INTERVAL_MS`).
    #[arg(long, default_value_t = qmgr::config::defaults::LINK_DEAD_INTERVAL_MS)]
    dead_interval_ms: u64,
    /// Messages the consumer fetches ahead.
    #[arg(long, default_value_t = 256)]
    prefetch: u32,
    /// Every manager's sync policy.
    #[arg(long, value_enum, default_value_t = SyncMode::Always)]
    sync: SyncMode,
    /// Keep the run folder (topology, certificates, data, logs) and print where it is.
    #[arg(long)]
    keep: bool,
    /// Never start bravo again: a relay lost for good, disk and all. What it held comes from
    /// alpha's custody; reports when the last of it arrived.
    #[arg(long)]
    for_good: bool,
}

/// Which way a message came.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Via {
    Bravo,
    Charlie,
    /// Any other trace, managers joined by `-`: never expected.
    Other(String),
}

/// One message got at `delta`. Times are microseconds since the run's start.
#[derive(Debug)]
struct Arrival {
    /// Its header; `sent_us` is its put time, in microseconds since the run's start.
    header: Header,
    arrived_us: u64,
    via: Via,
}

impl Arrival {
    fn of(message: &Message, arrived_us: u64) -> anyhow::Result<Self> {
        let Some(header) = Header::read(&message.body) else {
            bail!(
                "message {} of {} bytes carries no header",
                message.id,
                message.body.len()
            );
        };
        let managers: Vec<&str> = message.trace.iter().map(|t| t.manager.as_str()).collect();
        let via = match managers.as_slice() {
            [ALPHA, BRAVO, DELTA] => Via::Bravo,
            [ALPHA, CHARLIE, DELTA] => Via::Charlie,
            other => Via::Other(other.join("-")),
        };
        Ok(Self {
            header,
            arrived_us,
            via,
        })
    }

    /// When it was put (due), in microseconds since the run's start.
    fn put_us(&self) -> u64 {
        self.header.sent_us
    }
}

/// Microseconds from `base` to now.
fn micros_since(base: Instant) -> u64 {
    micros_between(base, Instant::now())
}

/// Microseconds from `base` to `instant` (0 if it came first).
fn micros_between(base: Instant, instant: Instant) -> u64 {
    u64::try_from(instant.saturating_duration_since(base).as_micros()).unwrap_or(u64::MAX)
}

/// The instants of the run, in microseconds since its start.
struct Timeline {
    kill_us: u64,
    restart_us: u64,
    answered_us: u64,
    stopped_us: u64,
    /// When the last message was got.
    drained_us: u64,
    dead_interval_us: u64,
}

/// What the run watches between its steps: the producer and consumer tasks and the arrivals.
struct Watch {
    arrivals_rx: mpsc::Receiver<Arrival>,
    arrivals: Vec<Arrival>,
    distinct: HashSet<u64>,
    last_arrival: Instant,
    /// The run's number, in every header.
    run: u32,
    producer: Option<JoinHandle<anyhow::Result<u64>>>,
    consumer: JoinHandle<anyhow::Result<()>>,
}

impl Watch {
    /// Takes in arrivals and checks the tasks and the managers until `until`.
    async fn until(&mut self, cluster: &mut Cluster, until: Instant) -> anyhow::Result<()> {
        loop {
            self.check(cluster).await?;
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            tokio::time::sleep(WATCH_TICK.min(until - now)).await;
        }
    }

    /// One look: arrivals taken in, a task that ended early or a manager that exited is an
    /// error.
    async fn check(&mut self, cluster: &mut Cluster) -> anyhow::Result<()> {
        while let Ok(arrival) = self.arrivals_rx.try_recv() {
            self.distinct.insert(arrival.header.seq);
            self.arrivals.push(arrival);
            self.last_arrival = Instant::now();
        }
        if self.consumer.is_finished() {
            (&mut self.consumer).await?.context("the consumer failed")?;
            bail!("the consumer stopped");
        }
        if let Some(producer) = &mut self.producer
            && producer.is_finished()
        {
            producer.await?.context("the producer failed")?;
            bail!("the producer stopped before it was asked to");
        }
        if let Some(exited) = cluster.exited() {
            bail!("{exited} during the run");
        }
        Ok(())
    }

    /// Fails unless every arrival so far, and at least one, came via `bravo`.
    fn check_all_via_bravo(&self) -> anyhow::Result<()> {
        let via_bravo = self.arrivals.iter().filter(|a| a.via == Via::Bravo).count();
        if via_bravo == 0 || via_bravo < self.arrivals.len() {
            bail!(
                "traffic did not all go via {BRAVO} before the kill: {via_bravo} of {} arrivals",
                self.arrivals.len()
            );
        }
        Ok(())
    }

    /// Waits until every message put has arrived: true if they all did, false if none arrived
    /// for [`PROGRESS_DEADLINE`] first (the ones missing are then lost).
    async fn wait_all_arrived(&mut self, cluster: &mut Cluster, put: u64) -> anyhow::Result<bool> {
        loop {
            self.check(cluster).await?;
            if self.distinct.len() as u64 >= put {
                return Ok(true);
            }
            if self.last_arrival.elapsed() > PROGRESS_DEADLINE {
                outln!(
                    "drain: {} of {put} messages arrived, none for {} s; what is missing is lost",
                    self.distinct.len(),
                    PROGRESS_DEADLINE.as_secs()
                )?;
                return Ok(false);
            }
            tokio::time::sleep(WATCH_TICK).await;
        }
    }
}

impl FailoverBench {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        if self.size < HEADER_BYTES {
            bail!(
                "--size must be at least {HEADER_BYTES} bytes (the put time, run, producer and \
                 sequence number ride in the body)"
            );
        }
        if self.rate == 0 || self.warmup_secs == 0 {
            bail!("--rate and --warmup-secs must be at least 1");
        }
        let cluster = Cluster::start(Spec {
            folder_prefix: "qmgr-bench-failover",
            managers: [ALPHA, BRAVO, CHARLIE, DELTA].map(str::to_owned).to_vec(),
            links: [
                (ALPHA, BRAVO, 1),
                (BRAVO, DELTA, 1),
                (ALPHA, CHARLIE, 2),
                (CHARLIE, DELTA, 2),
            ]
            .map(|(a, b, cost)| (a.to_owned(), b.to_owned(), cost))
            .to_vec(),
            queues: vec![(QUEUE.to_owned(), DELTA.to_owned())],
            sync: self.sync,
            env: vec![(
                "QMGR_LINK_DEAD_INTERVAL_MS",
                self.dead_interval_ms.to_string(),
            )],
            advertised: std::collections::BTreeMap::new(),
            console: false,
        })?;
        super::cluster::run_on(cluster, self.keep, async |cluster| {
            self.bench(cluster).await
        })
    }

    /// Measures on the started diamond; a failure is reported with any manager that exited
    /// and the tail of every manager's log.
    async fn bench(&self, cluster: &mut Cluster) -> anyhow::Result<ExitCode> {
        let mut clients = Vec::with_capacity(cluster.nodes().len());
        for node in cluster.nodes() {
            clients.push(
                Client::connect_to(&node.socket)
                    .await
                    .with_context(|| format!("cannot connect to manager {}", node.name))?,
            );
        }
        match self.measure(cluster, &clients).await {
            Ok(code) => Ok(code),
            Err(error) => {
                // A manager that died is usually why a client failed: give it a moment to be
                // seen as exited.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let exited = cluster
                    .exited()
                    .map_or(String::new(), |exited| format!(" ({exited})"));
                let links = cluster.link_summary(&clients).await;
                bail!(
                    "{error:#}{exited}\n{}\n{}",
                    links.trim_end(),
                    cluster.log_tails()
                )
            }
        }
    }

    async fn measure(&self, cluster: &mut Cluster, clients: &[Client]) -> anyhow::Result<ExitCode> {
        cluster.wait_links_up(clients).await?;
        cluster.check_sync(clients).await?;
        wait_route_via(&clients[0], BRAVO).await?;

        let base = Instant::now();
        let (mut watch, stop) = self.start_traffic(cluster, base).await?;
        watch
            .until(cluster, base + Duration::from_secs(self.warmup_secs))
            .await?;
        watch.check_all_via_bravo()?;

        let kill_us = micros_since(base);
        let killed = Instant::now();
        cluster.kill(BRAVO)?;
        watch
            .until(cluster, killed + Duration::from_secs(self.down_secs))
            .await?;

        let (restart_us, answered_us) = if self.for_good {
            watch
                .until(
                    cluster,
                    Instant::now() + Duration::from_secs(self.after_secs),
                )
                .await?;
            (u64::MAX, u64::MAX)
        } else {
            let restart_us = micros_since(base);
            let restarted = Instant::now();
            // Waiting for the socket blocks this thread only; the consumer and producer run
            // on the runtime's workers and keep their own times.
            tokio::task::block_in_place(|| cluster.restart(BRAVO))?;
            let answered_us = micros_since(base);
            watch
                .until(cluster, restarted + Duration::from_secs(self.after_secs))
                .await?;
            (restart_us, answered_us)
        };

        let _ = stop.send(true);
        let stopped_us = micros_since(base);
        let producer = watch.producer.take().context("the producer is started")?;
        let put = producer.await?.context("the producer failed")?;

        let all_arrived = watch.wait_all_arrived(cluster, put).await?;
        let drained_us = watch
            .arrivals
            .last()
            .map_or_else(|| micros_since(base), |a| a.arrived_us);
        if all_arrived {
            // Bravo's copies stay with alpha's channel to it for as long as it is gone.
            let gone = self.for_good.then_some(BRAVO);
            wait_settled(cluster, &mut watch, clients, gone).await?;
            watch
                .until(cluster, Instant::now() + DUPLICATE_GRACE)
                .await?;
        }
        watch.consumer.abort();

        let timeline = Timeline {
            kill_us,
            restart_us,
            answered_us,
            stopped_us,
            drained_us,
            dead_interval_us: self.dead_interval_ms * 1000,
        };
        Ok(self.report(&timeline, put, watch.run, &mut watch.arrivals)?)
    }

    /// Starts the consumer at `delta` and the producer at `alpha`; the sender stops the
    /// producer.
    async fn start_traffic(
        &self,
        cluster: &Cluster,
        base: Instant,
    ) -> anyhow::Result<(Watch, watch::Sender<bool>)> {
        let (arrivals_tx, arrivals_rx) = mpsc::channel(ARRIVALS_BUFFERED_MAX);
        let consumer_client = Client::connect_to(&cluster.node(DELTA)?.socket).await?;
        let consumer = tokio::spawn(consume(
            consumer_client.consumer(QUEUE, self.prefetch),
            base,
            arrivals_tx,
        ));
        let (stop, stop_rx) = watch::channel(false);
        let producer_client = Client::connect_to(&cluster.node(ALPHA)?.socket).await?;
        let run = run_id();
        let producer = tokio::spawn(produce(
            producer_client,
            Pacing {
                rate: self.rate,
                size: self.size,
                base,
                run,
            },
            stop_rx,
        ));
        let watch = Watch {
            arrivals_rx,
            arrivals: Vec::new(),
            distinct: HashSet::new(),
            last_arrival: Instant::now(),
            run,
            producer: Some(producer),
            consumer,
        };
        Ok((watch, stop))
    }

    /// Prints the report; the exit code says whether the run kept every message exactly once
    /// and failed over at all.
    fn report(
        &self,
        timeline: &Timeline,
        put: u64,
        run: u32,
        arrivals: &mut [Arrival],
    ) -> Result<ExitCode, OutputError> {
        // Stable: arrivals were taken in one at a time, in the order they came.
        arrivals.sort_by_key(|a| a.arrived_us);
        let findings = Findings { timeline, arrivals };
        self.print_header(timeline)?;
        let failed_over = findings.failover()?;
        findings.longest_gap()?;
        findings.flowing_again()?;
        if self.for_good {
            findings.stranded_for_good()?;
        } else {
            findings.stranded()?;
            findings.back_via_bravo()?;
        }
        findings.paths()?;
        let verdict = findings.verdict(run, put);
        verdict.print()?;
        Ok(if verdict.passed() && failed_over {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    /// What was run, and when each step happened.
    fn print_header(&self, timeline: &Timeline) -> Result<(), OutputError> {
        outln!(
            "failover: diamond {ALPHA}-{BRAVO}-{DELTA} (cost 2) and {ALPHA}-{CHARLIE}-{DELTA} \
             (cost 4), {} msg/s x {} B, persistent, {}, dead interval {} ms",
            self.rate,
            self.size,
            sync_label(self.sync.as_str()),
            self.dead_interval_ms
        )?;
        if self.for_good {
            return outln!(
                "run: {BRAVO} killed (SIGKILL) at {:.2} s and never started again, puts \
                 stopped at {:.2} s, last message got at {:.2} s",
                ms(timeline.kill_us) / 1000.0,
                ms(timeline.stopped_us) / 1000.0,
                ms(timeline.drained_us) / 1000.0,
            );
        }
        outln!(
            "run: {BRAVO} killed (SIGKILL) at {:.2} s, restarted at {:.2} s (answering after \
             {:.0} ms), puts stopped at {:.2} s, last message got at {:.2} s",
            ms(timeline.kill_us) / 1000.0,
            ms(timeline.restart_us) / 1000.0,
            ms(timeline.answered_us - timeline.restart_us),
            ms(timeline.stopped_us) / 1000.0,
            ms(timeline.drained_us) / 1000.0,
        )?;
        Ok(())
    }
}

/// Microseconds as milliseconds.
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Waits until `alpha` routes to `delta` via `relay` and sees every link of the network up.
async fn wait_route_via(alpha: &Client, relay: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let status = alpha.status().await.context("status of alpha")?;
        let next_hop = status
            .routes
            .iter()
            .find(|r| r.destination == DELTA)
            .and_then(|r| r.next_hop.clone());
        let all_up = status.network.iter().all(|l| l.state == "up");
        if next_hop.as_deref() == Some(relay) && all_up {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{ALPHA} does not route to {DELTA} via {relay} within {} s (next hop {next_hop:?}, \
                 every link up: {all_up})",
                START_DEADLINE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until nothing is left on any link and in `delta`'s queue, taking arrivals in
/// meanwhile.
async fn wait_settled(
    cluster: &mut Cluster,
    watch: &mut Watch,
    clients: &[Client],
    gone: Option<&str>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        watch.check(cluster).await?;
        let mut pending = Vec::new();
        for (client, node) in clients.iter().zip(cluster.nodes()) {
            if Some(node.name.as_str()) == gone {
                continue;
            }
            let status = client
                .status()
                .await
                .with_context(|| format!("status of manager {}", node.name))?;
            for link in &status.links {
                if Some(link.neighbour.as_str()) == gone {
                    continue;
                }
                if link.transmission_depth > 0 || link.in_flight > 0 {
                    pending.push(format!(
                        "{}->{}: {} waiting, {} in flight",
                        node.name, link.neighbour, link.transmission_depth, link.in_flight
                    ));
                }
            }
            if let Some(queue) = status.queues.iter().find(|q| q.name == QUEUE)
                && queue.depth + queue.leased > 0
            {
                pending.push(format!(
                    "{}: {} in {QUEUE}",
                    node.name,
                    queue.depth + queue.leased
                ));
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "links not empty {} s after every message arrived: {}",
                SETTLE_DEADLINE.as_secs(),
                pending.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How the producer puts: `rate` messages per second of `size` bytes, stamped with their due
/// time in microseconds since `base`, for run `run`.
struct Pacing {
    rate: u64,
    size: usize,
    base: Instant,
    run: u32,
}

/// Puts one message at a time to the queue at `alpha`, paced at `pacing.rate` per second,
/// until told to stop; returns how many were put and acknowledged (sequence numbers 0 to
/// that, exclusive).
async fn produce(
    client: Client,
    pacing: Pacing,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<u64> {
    let window = Arc::new(tokio::sync::Semaphore::new(PUTS_IN_FLIGHT_MAX));
    let mut in_flight = PutsInFlight::new();
    let mut schedule = Schedule::new(Duration::from_secs_f64(1.0 / pacing.rate as f64));
    let mut next = 0u64;
    loop {
        let due = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            due = schedule.next() => due?,
        };
        // Stamped before waiting for room in the window: a put that stalls shows in the
        // latency of the ones due behind it.
        let permit = Arc::clone(&window).acquire_owned().await?;
        let mut body = vec![0u8; pacing.size];
        Header {
            sent_us: micros_between(pacing.base, due.into_std()),
            run: pacing.run,
            producer: 0,
            seq: next,
        }
        .write(&mut body);
        next += 1;
        send_put(
            &client,
            vec![(QUEUE.to_owned(), Message::new(body))],
            permit,
            &mut in_flight,
        )
        .await?;
        while let Some(done) = in_flight.try_join_next() {
            done?.context("a put failed")?;
        }
    }
    while let Some(done) = in_flight.join_next().await {
        done?.context("a put failed")?;
    }
    Ok(next)
}

/// Takes messages from `delta` and hands each one's arrival to the run, until aborted.
async fn consume(
    mut consumer: hopmq::Consumer,
    base: Instant,
    arrivals: mpsc::Sender<Arrival>,
) -> anyhow::Result<()> {
    loop {
        let message = consumer.next().await.context("a get failed")?;
        let arrival = Arrival::of(&message, micros_since(base))?;
        if arrivals.send(arrival).await.is_err() {
            return Ok(());
        }
    }
}

//! `qmgr bench forward`: end-to-end put→get throughput and latency of persistent messages
//! forwarded along a line of managers on loopback.
//!
//! Starts `--hops + 1` managers (this same binary, `qmgr run`) named `m0` .. `mN` in one
//! temporary folder: a topology with links `m0-m1`, `m1-m2`, ... (cost 1), free UDP ports on
//! 127.0.0.1 and the queue `bench` homed on the last manager; a development CA and one
//! certificate per manager; one data folder, API socket and log (`<folder>/<name>.log`) per
//! manager. Once every manager answers on its socket and every declared link's channel is up,
//! producers put to the address `bench` at `m0` and consumers take from `bench` at the last
//! manager, so every message crosses every hop. Each body carries its put time; consumers
//! compute put→get latency from it into an HDR histogram. Throughput is the count over the
//! time from the first put to the last get. At the end, the links' sent and acknowledged
//! message counters show resends (sent > acked).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use hopmq::Client;
use tokio::sync::Mutex;

use super::cluster::{Cluster, CpuUse, Node, Spec, describe_cpu};
use super::local::{ProducerSpec, STAMP_BYTES, now_micros, produce, stamp};
use qmgr::config::SyncMode;

/// The queue the messages go to, homed on the last manager.
const QUEUE: &str = "bench";
/// A run without a single message got for this long is stalled.
const PROGRESS_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub(crate) struct ForwardBench {
    /// Links between the first and the last manager (the line has hops + 1 managers).
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(qmgr::config::defaults::MAX_HOPS)))]
    hops: u32,
    /// Messages in all.
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Producer tasks, all on the first manager.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Consumer tasks, all on the last manager.
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// Messages per put request (an atomic batch).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Put requests each producer keeps in flight.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Messages each consumer fetches ahead.
    #[arg(long, default_value_t = 256)]
    prefetch: u32,
    /// Pace the producers to this many messages per second in all (default: as fast as possible).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// Every manager's sync policy.
    #[arg(long, value_enum, default_value_t = SyncMode::Always)]
    sync: SyncMode,
    /// Keep the run folder (topology, certificates, data, logs) and print where it is.
    #[arg(long)]
    keep: bool,
}

impl ForwardBench {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        if self.size < STAMP_BYTES {
            bail!("--size must be at least {STAMP_BYTES} bytes (the send time rides in the body)");
        }
        if self.producers == 0 || self.consumers == 0 || self.batch == 0 || self.window == 0 {
            bail!("--producers, --consumers, --batch and --window must be at least 1");
        }
        if self.count == 0 {
            bail!("--count must be at least 1");
        }
        let line = self.start_line()?;
        super::cluster::run_on(line, self.keep, async |line| self.bench(line).await)
    }

    /// Writes the topology and certificates and starts every manager, waiting until each
    /// answers on its socket.
    fn start_line(&self) -> anyhow::Result<Cluster> {
        let names: Vec<String> = (0..=self.hops).map(|i| format!("m{i}")).collect();
        let links = names
            .windows(2)
            .map(|pair| (pair[0].clone(), pair[1].clone(), 1))
            .collect();
        let home = names
            .last()
            .context("a line has at least one manager")?
            .clone();
        Cluster::start(Spec {
            folder_prefix: "qmgr-bench-forward",
            managers: names,
            links,
            queues: vec![(QUEUE.to_owned(), home)],
            sync: self.sync,
            env: Vec::new(),
        })
    }

    /// Measures on the started line; a failure is reported with any manager that exited and
    /// the tail of every manager's log.
    async fn bench(&self, line: &mut Cluster) -> anyhow::Result<ExitCode> {
        match self.connect_and_measure(line).await {
            Ok(code) => Ok(code),
            Err(error) => {
                // A manager that died is usually why a client failed: give it a moment to be
                // seen as exited.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let exited = line
                    .exited()
                    .map_or(String::new(), |exited| format!(" ({exited})"));
                bail!("{error:#}{exited}\n{}", line.log_tails())
            }
        }
    }

    async fn connect_and_measure(&self, line: &mut Cluster) -> anyhow::Result<ExitCode> {
        let mut clients = Vec::with_capacity(line.nodes().len());
        for node in line.nodes() {
            clients.push(
                Client::connect_to(&node.socket)
                    .await
                    .with_context(|| format!("cannot connect to manager {}", node.name))?,
            );
        }
        line.wait_links_up(&clients).await?;
        self.measure(line, &clients).await
    }

    async fn measure(&self, line: &mut Cluster, clients: &[Client]) -> anyhow::Result<ExitCode> {
        let commits_before = commits(line, clients).await?;
        let received = Arc::new(AtomicU64::new(0));
        let latencies = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
            1, 60_000_000, 3,
        )?));
        // Set once every message is got: consumers still waiting for one stop, and every
        // consumer merges its samples into the shared histogram as it ends.
        let (done, done_rx) = tokio::sync::watch::channel(false);
        let mut consumers = tokio::task::JoinSet::new();
        for _ in 0..self.consumers {
            let client = Client::connect_to(&last(line).socket).await?;
            consumers.spawn(consume(
                client.consumer(QUEUE, self.prefetch),
                received.clone(),
                latencies.clone(),
                self.count,
                done_rx.clone(),
            ));
        }
        let mut producer_clients = Vec::with_capacity(self.producers);
        for _ in 0..self.producers {
            producer_clients.push(Client::connect_to(&first(line).socket).await?);
        }
        let cpu_before = line.cpu_use();
        let client_before = CpuUse::of(std::process::id());
        let started = Instant::now();
        let mut tasks = Tasks {
            producers: self.start_producers(producer_clients),
            consumers,
        };
        let put_elapsed = self
            .watch_run(line, clients, &received, &mut tasks, started)
            .await?;
        let elapsed = started.elapsed();
        let cpu_after = line.cpu_use();
        let client_use = CpuUse::of(std::process::id())
            .zip(client_before)
            .map(|(after, before)| after.since(before));
        let _ = done.send(true);
        tasks.join().await?;
        let put_elapsed = put_elapsed.unwrap_or(elapsed);

        let histogram = latencies.lock().await;
        let rate = self.count as f64 / elapsed.as_secs_f64();
        self.print_setup();
        super::local::print_results(rate, self.size, put_elapsed, elapsed, &histogram);
        drop(histogram);
        println!(
            "{}",
            describe_cpu(&cpu_before, &cpu_after, client_use, self.count)
        );
        let commits_after = commits(line, clients).await?;
        self.print_journal_writes(line, &commits_before, &commits_after);
        println!("{}", first_link_line(line, &clients[0]).await?);
        Ok(ExitCode::SUCCESS)
    }

    /// Starts each producer on its share of the messages.
    fn start_producers(&self, clients: Vec<Client>) -> tokio::task::JoinSet<anyhow::Result<()>> {
        let mut producers = tokio::task::JoinSet::new();
        let per_producer = self.count.div_ceil(self.producers as u64);
        for (p, client) in clients.into_iter().enumerate() {
            let share = per_producer.min(self.count.saturating_sub(per_producer * p as u64));
            let spec = ProducerSpec {
                queue: QUEUE.to_owned(),
                size: self.size,
                batch: self.batch,
                window: self.window,
                persistent: true,
                interval: self
                    .rate
                    .map(|rate| super::local::put_interval(rate, self.producers, self.batch)),
            };
            producers.spawn(produce(client, spec, share));
        }
        producers
    }

    /// Watches over the run until every message is got: errors of producers and consumers,
    /// managers that exit, stalls. Returns how long the puts took, if they all returned.
    async fn watch_run(
        &self,
        line: &mut Cluster,
        clients: &[Client],
        received: &AtomicU64,
        tasks: &mut Tasks,
        started: Instant,
    ) -> anyhow::Result<Option<Duration>> {
        let mut put_elapsed = None;
        let mut last = (received.load(Ordering::Relaxed), Instant::now());
        while received.load(Ordering::Relaxed) < self.count {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tasks.check()?;
            if put_elapsed.is_none() && tasks.producers.is_empty() {
                put_elapsed = Some(started.elapsed());
            }
            if let Some(exited) = line.exited() {
                bail!("{exited} during the run");
            }
            let now = received.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > PROGRESS_DEADLINE {
                bail!(
                    "stalled: {now} of {} messages got, none for {} s, puts {}\n{}",
                    self.count,
                    PROGRESS_DEADLINE.as_secs(),
                    if put_elapsed.is_some() {
                        "done"
                    } else {
                        "still running"
                    },
                    line.link_summary(clients).await.trim_end(),
                );
            }
        }
        Ok(put_elapsed)
    }

    /// The line saying what was run.
    fn print_setup(&self) {
        println!(
            "forward: {} hop(s), {} producers, {} consumers, {} x {} B, batch {}, window {}, prefetch {}, persistent, sync {}{}",
            self.hops,
            self.producers,
            self.consumers,
            self.count,
            self.size,
            self.batch,
            self.window,
            self.prefetch,
            self.sync.as_str(),
            self.rate
                .map_or(String::new(), |r| format!(", paced at {r} msg/s")),
        );
    }

    /// Each manager's group commits during the run, per 1000 messages.
    fn print_journal_writes(&self, line: &Cluster, before: &[u64], after: &[u64]) {
        let writes: Vec<String> = line
            .nodes()
            .iter()
            .zip(before.iter().zip(after))
            .map(|(node, (before, after))| {
                let per = after.saturating_sub(*before) as f64 * 1000.0 / self.count.max(1) as f64;
                format!("{} {per:.1}", node.name)
            })
            .collect();
        println!("journal writes per 1000 messages: {}", writes.join(", "));
    }
}

/// The producer and consumer tasks of a run.
struct Tasks {
    producers: tokio::task::JoinSet<anyhow::Result<()>>,
    consumers: tokio::task::JoinSet<anyhow::Result<()>>,
}

impl Tasks {
    /// Fails if a task that has ended failed.
    fn check(&mut self) -> anyhow::Result<()> {
        while let Some(done) = self.producers.try_join_next() {
            done?.context("a producer failed")?;
        }
        while let Some(done) = self.consumers.try_join_next() {
            done?.context("a consumer failed")?;
        }
        Ok(())
    }

    /// Waits for every task once every message is got, for their results.
    async fn join(mut self) -> anyhow::Result<()> {
        while let Some(ended) = self.consumers.join_next().await {
            ended?.context("a consumer failed")?;
        }
        // Every message was got, so every put returned; join them for their results.
        while let Some(done) = self.producers.join_next().await {
            done?.context("a producer failed")?;
        }
        Ok(())
    }
}

/// Takes messages until `count` are got in all or `done` is set, then merges its latencies
/// into the shared histogram.
async fn consume(
    mut consumer: hopmq::Consumer,
    received: Arc<AtomicU64>,
    latencies: Arc<Mutex<Histogram<u64>>>,
    count: u64,
    mut done: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    while received.load(Ordering::Relaxed) < count {
        let message = tokio::select! {
            biased;
            _ = done.wait_for(|done| *done) => break,
            message = consumer.next() => message?,
        };
        let micros = now_micros().saturating_sub(stamp(&message.body));
        local.saturating_record(micros.max(1));
        received.fetch_add(1, Ordering::Relaxed);
    }
    latencies.lock().await.add(&local)?;
    Ok(())
}

/// Every manager's group commits so far, in the line's order.
async fn commits(line: &Cluster, clients: &[Client]) -> anyhow::Result<Vec<u64>> {
    let mut commits = Vec::with_capacity(clients.len());
    for (node, client) in line.nodes().iter().zip(clients) {
        let status = client
            .status()
            .await
            .with_context(|| format!("status of manager {}", node.name))?;
        commits.push(status.store.commits);
    }
    Ok(commits)
}

/// The first manager's link after the run: messages sent against messages acknowledged.
/// Waits a little for the last acknowledgements, which may still be on their way.
async fn first_link_line(line: &Cluster, client: &Client) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let status = client
            .status()
            .await
            .with_context(|| format!("status of manager {}", first(line).name))?;
        let settled = status.links.iter().all(|l| l.in_flight == 0);
        if settled || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let Some(link) = status.links.iter().find(|l| l.linked) else {
        bail!("manager {} reports no link", first(line).name);
    };
    Ok(format!(
        "link {}->{}: {} sent, {} acked ({} resent), {} in flight, {} connect(s), rtt {}",
        status.manager,
        link.neighbour,
        link.messages_sent,
        link.messages_acked,
        link.messages_sent
            .saturating_sub(link.messages_acked + link.in_flight),
        link.in_flight,
        link.connects,
        link.rtt_us.map_or("unknown".to_owned(), |us| format!(
            "{:.3} ms",
            us as f64 / 1000.0
        )),
    ))
}

fn first(line: &Cluster) -> &Node {
    &line.nodes()[0]
}

fn last(line: &Cluster) -> &Node {
    &line.nodes()[line.nodes().len() - 1]
}

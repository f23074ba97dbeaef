//! `qmgr bench pubsub`: publish→deliver throughput and latency on a diamond of managers on
//! loopback, one publisher and four subscriptions on three managers.
//!
//! The diamond: alpha–bravo and bravo–delta (cost 1), alpha–charlie and charlie–delta (cost 2).
//! Producers publish to `bench.data` at alpha; the subscriptions are `b` (`bench.>`) on bravo,
//! `c` (`bench.*`) on charlie, and `d1` (`bench.data`) and `d2` (`bench.>`) on delta: durable
//! ones read with prefetching gets, or with `--transient` transient ones. Every subscription
//! checks its own copies against a ledger of the run ([`super::verify`]): each publication
//! once, in order per producer. Throughput counts deliveries (copies got, in all) over the
//! time from the first publish to the last delivery. alpha's link counters give the copies and
//! bytes each link carried per publication: one copy per link is one publication each to bravo
//! (for bravo and delta) and to charlie. With `--rate` the run is paced, and `--compare-queue`
//! then sends as many queue messages at the same rate along the same path to delta (queue
//! `bench-q`), so the latency of a publication and of a queue message are read side by side.

use qmgr::outln;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use hopmq::{Client, GetOptions, Message, Publication};
use tokio::task::JoinHandle;

use super::cluster::{Cluster, Spec};
use super::traffic::{Schedule, clock_us, clock_us_at, latency_histogram, put_interval};
use super::verify::{HEADER_BYTES, Header, Ledger, Take, run_id, sync_label};
use qmgr::config::SyncMode;

/// The topic every publication goes to.
const TOPIC: &str = "bench.data";
/// The queue of `--compare-queue`, homed on delta.
const QUEUE: &str = "bench-q";
/// The subscriptions: manager, name, filter.
const SUBSCRIPTIONS: [(&str, &str, &str); 4] = [
    ("bravo", "b", "bench.>"),
    ("charlie", "c", "bench.*"),
    ("delta", "d1", "bench.data"),
    ("delta", "d2", "bench.>"),
];
/// A run that delivers nothing for this long has lost what is missing.
/// Messages each durable consumer fetches ahead.
const PREFETCH: u32 = 256;

const STALL_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub(crate) struct PubsubBench {
    /// Publications in all.
    #[arg(long, default_value_t = 50_000)]
    count: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Transient subscriptions instead of durable ones.
    #[arg(long)]
    transient: bool,
    /// Non-persistent publications: they skip every journal (and may be lost: the run counts
    /// any loss and fails on it).
    #[arg(long)]
    non_persistent: bool,
    /// Producer tasks at alpha, each with its own connection and one request in flight.
    #[arg(long, default_value_t = 8)]
    producers: usize,
    /// Publications per publish request (an atomic batch).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Pace the producers to this many publications per second in all.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// After the publications, as many queue messages at the same pace to delta, for their
    /// latency beside the publications'.
    #[arg(long, requires = "rate")]
    compare_queue: bool,
    /// Every manager's sync policy.
    #[arg(long, value_enum, default_value_t = SyncMode::Always)]
    sync: SyncMode,
    /// Keep the run folder (topology, certificates, data, logs) and print where it is.
    #[arg(long)]
    keep: bool,
}

/// Where a phase's producers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Topic,
    Queue,
}

/// What one consumer got.
struct Got {
    histogram: Histogram<u64>,
    reordered: u64,
    missed: u64,
    last_at: Option<Instant>,
}

impl PubsubBench {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        if self.size < HEADER_BYTES {
            bail!("--size must be at least {HEADER_BYTES} bytes (the header rides in the body)");
        }
        if self.producers == 0 || self.batch == 0 || self.count == 0 {
            bail!("--count, --producers and --batch must be at least 1");
        }
        let link = |a: &str, b: &str, cost| (a.to_owned(), b.to_owned(), cost);
        let cluster = Cluster::start(Spec {
            folder_prefix: "qmgr-bench-pubsub",
            managers: ["alpha", "bravo", "charlie", "delta"]
                .map(str::to_owned)
                .to_vec(),
            links: vec![
                link("alpha", "bravo", 1),
                link("bravo", "delta", 1),
                link("alpha", "charlie", 2),
                link("charlie", "delta", 2),
            ],
            queues: vec![(QUEUE.to_owned(), "delta".to_owned())],
            sync: self.sync,
            env: Vec::new(),
            advertised: std::collections::BTreeMap::new(),
            console: false,
        })?;
        super::cluster::run_on(cluster, self.keep, async |cluster| {
            match self.measure(cluster).await {
                Ok(code) => Ok(code),
                Err(error) => bail!("{error:#}\n{}", cluster.log_tails()),
            }
        })
    }

    async fn measure(&self, cluster: &mut Cluster) -> anyhow::Result<ExitCode> {
        let clients = cluster.ready_clients().await?;
        let alpha = &clients[0];
        let consumers = self.subscribe(cluster).await?;
        wait_for_interest(alpha).await?;
        let before = alpha.status().await?;
        let commits = cluster.commits(&clients).await?;
        let run = run_id();
        let (ledgers, shares) = self.ledgers(run, SUBSCRIPTIONS.len());
        let started = Instant::now();
        let consumers = consumers
            .into_iter()
            .zip(&ledgers)
            .map(|(consumer, ledger)| consumer.start(Arc::clone(ledger)))
            .collect();
        let acknowledged = self.produce(cluster, Target::Topic, run, &shares).await?;
        let got = finish(consumers).await?;
        let after = alpha.status().await?;
        let commits_after = cluster.commits(&clients).await?;
        let commits = cluster.commits_per(&commits, &commits_after, self.count);

        self.print_setup()?;
        let deliveries = self.count * SUBSCRIPTIONS.len() as u64;
        let last = got
            .iter()
            .filter_map(|g| g.last_at)
            .max()
            .unwrap_or(started);
        let elapsed = last.saturating_duration_since(started).as_secs_f64();
        outln!(
            "throughput: {:.0} deliveries/s ({:.0} publications/s to {} subscriptions), all got in {elapsed:.2} s",
            deliveries as f64 / elapsed,
            self.count as f64 / elapsed,
            SUBSCRIPTIONS.len()
        )?;
        let mut all = latency_histogram()?;
        for g in &got {
            all.add(&g.histogram)?;
        }
        print_latency("publish->deliver", &all)?;
        print_links(&before, &after, self.count)?;
        print_commits(&commits)?;
        let mut code = ExitCode::SUCCESS;
        for ((g, ledger), (manager, name, _)) in got.iter().zip(&ledgers).zip(SUBSCRIPTIONS) {
            let mut verdict = ledger.verdict(&acknowledged, g.reordered);
            verdict.lost += g.missed;
            let lines = verdict.lines();
            let p50 = g.histogram.value_at_quantile(0.5) as f64 / 1000.0;
            outln!("{name} on {manager}: {}; p50 {p50:.3} ms", lines.join("; "))?;
            if !verdict.passed() || g.missed > 0 {
                code = ExitCode::FAILURE;
            }
        }
        if self.compare_queue {
            let queue = self.compare(cluster, &clients, &all).await?;
            if queue != ExitCode::SUCCESS {
                code = queue;
            }
        }
        Ok(code)
    }

    /// Makes the subscriptions (or opens them, transient ones), one consumer each.
    async fn subscribe(&self, cluster: &Cluster) -> anyhow::Result<Vec<Consumer>> {
        let mut consumers = Vec::new();
        for (manager, name, filter) in SUBSCRIPTIONS {
            let client = Client::connect_to(&cluster.node(manager)?.socket).await?;
            let consumer = if self.transient {
                Consumer::Transient(client.subscribe_topic(filter).await?)
            } else {
                client.create_subscription(name, filter, None).await?;
                self.durable(client, name)
            };
            consumers.push(consumer);
        }
        Ok(consumers)
    }

    /// How a durable subscription (or the queue beside them) is read: paced, for latency, by
    /// the prefetching consumer, whose gets always wait at the manager, so a copy is handed
    /// over in the write that stores it; unpaced, for throughput, by gets of up to
    /// [`PREFETCH`] messages, which cost the bench less per message.
    fn durable(&self, client: Client, name: &'static str) -> Consumer {
        if self.rate.is_some() {
            Consumer::Prefetching(client.consumer(name, PREFETCH))
        } else {
            Consumer::Gets(client, name)
        }
    }

    /// One ledger per consumer, and each producer's share.
    fn ledgers(&self, run: u32, consumers: usize) -> (Vec<Arc<Ledger>>, Vec<u64>) {
        let producers = self.producers as u64;
        let shares: Vec<u64> = (0..producers)
            .map(|p| self.count / producers + u64::from(p < self.count % producers))
            .collect();
        let ledgers = (0..consumers)
            .map(|_| Arc::new(Ledger::new(run, &shares)))
            .collect();
        (ledgers, shares)
    }

    /// Runs the producers to the end; what each had acknowledged.
    async fn produce(
        &self,
        cluster: &Cluster,
        target: Target,
        run: u32,
        shares: &[u64],
    ) -> anyhow::Result<Vec<u64>> {
        let mut tasks = Vec::new();
        for (producer, &share) in shares.iter().enumerate() {
            let client = Client::connect_to(&cluster.node("alpha")?.socket).await?;
            let acknowledged = Arc::new(AtomicU64::new(0));
            let (size, batch, persistent) = (self.size, self.batch, !self.non_persistent);
            let every = self
                .rate
                .map(|rate| put_interval(rate, shares.len(), batch));
            let counted = Arc::clone(&acknowledged);
            let task = tokio::spawn(async move {
                let mut schedule = every.map(Schedule::new);
                let mut seq = 0;
                while seq < share {
                    let stamp = match &mut schedule {
                        Some(schedule) => clock_us_at(schedule.next().await?.into_std()),
                        None => clock_us(),
                    };
                    let end = (seq + batch as u64).min(share);
                    let messages: Vec<(String, Message)> = (seq..end)
                        .map(|seq| {
                            let mut body = vec![0u8; size];
                            let header = Header {
                                sent_us: stamp,
                                run,
                                producer: producer as u32,
                                seq,
                            };
                            header.write(&mut body);
                            let to = if target == Target::Topic {
                                TOPIC
                            } else {
                                QUEUE
                            };
                            let mut message = Message::new(body);
                            message.persistent = persistent;
                            (to.to_owned(), message)
                        })
                        .collect();
                    let sent = match target {
                        Target::Topic => client.publish_batch(messages).await?,
                        Target::Queue => client.put_batch(messages).await?,
                    };
                    seq += sent.len() as u64;
                    counted.store(seq, Ordering::Relaxed);
                }
                anyhow::Ok(())
            });
            tasks.push((task, acknowledged));
        }
        let mut acknowledged = Vec::new();
        for (task, count) in tasks {
            task.await.context("a producer panicked")??;
            acknowledged.push(count.load(Ordering::Relaxed));
        }
        Ok(acknowledged)
    }

    /// Queue messages at the same pace along the path to delta; their latency beside the
    /// publications'.
    async fn compare(
        &self,
        cluster: &Cluster,
        clients: &[Client],
        publications: &Histogram<u64>,
    ) -> anyhow::Result<ExitCode> {
        let before = cluster.commits(clients).await?;
        let run = run_id();
        let (ledgers, shares) = self.ledgers(run, 1);
        let delta = Client::connect_to(&cluster.node("delta")?.socket).await?;
        let consumer = self.durable(delta, QUEUE).start(Arc::clone(&ledgers[0]));
        let acknowledged = self.produce(cluster, Target::Queue, run, &shares).await?;
        let got = finish(vec![consumer]).await?;
        print_latency("queue put->get (same path to delta)", &got[0].histogram)?;
        let after = cluster.commits(clients).await?;
        print_commits(&cluster.commits_per(&before, &after, self.count))?;
        let ratio = publications.value_at_quantile(0.5) as f64
            / got[0].histogram.value_at_quantile(0.5).max(1) as f64;
        outln!("publication p50 / queue message p50: {ratio:.2}")?;
        let verdict = ledgers[0].verdict(&acknowledged, got[0].reordered);
        outln!("queue: {}", verdict.lines().join("; "))?;
        Ok(verdict.exit_code())
    }

    fn print_setup(&self) -> Result<(), qmgr::cli::output::OutputError> {
        outln!(
            "pubsub: diamond, {} producers at alpha, {} x {} B {}, batch {}, {} subscriptions ({}), {}{}",
            self.producers,
            self.count,
            self.size,
            if self.non_persistent {
                "non-persistent"
            } else {
                "persistent"
            },
            self.batch,
            if self.transient {
                "transient"
            } else {
                "durable"
            },
            SUBSCRIPTIONS
                .map(|(m, n, f)| format!("{n}@{m} {f}"))
                .join(", "),
            sync_label(self.sync.as_str()),
            self.rate
                .map_or(String::new(), |r| format!(", paced at {r}/s")),
        )?;
        Ok(())
    }
}

/// How one subscription is read.
enum Consumer {
    /// A durable subscription or queue read by gets of many messages.
    Gets(Client, &'static str),
    /// A durable subscription or queue read by the prefetching consumer.
    Prefetching(hopmq::Consumer),
    Transient(hopmq::TopicSubscription),
}

impl Consumer {
    /// Reads until `ledger` has every publication, or nothing came for [`STALL_MAX`].
    fn start(self, ledger: Arc<Ledger>) -> JoinHandle<anyhow::Result<Got>> {
        tokio::spawn(async move {
            let mut reader = ledger.reader();
            let mut got = Got {
                histogram: latency_histogram()?,
                reordered: 0,
                missed: 0,
                last_at: None,
            };
            let mut this = self;
            let mut progress = Instant::now();
            while ledger.all_got_at().is_none() && progress.elapsed() < STALL_MAX {
                let bodies = this.next(&mut got).await?;
                for body in bodies {
                    if let Take::First(header) = reader.take(&body) {
                        let latency = clock_us().saturating_sub(header.sent_us).max(1);
                        got.histogram.saturating_record(latency);
                        got.last_at = Some(Instant::now());
                        progress = Instant::now();
                    }
                }
            }
            got.reordered = reader.reordered();
            Ok(got)
        })
    }

    /// The next bodies got (none after a short wait).
    async fn next(&mut self, got: &mut Got) -> anyhow::Result<Vec<Vec<u8>>> {
        match self {
            Self::Gets(client, name) => {
                let options = GetOptions {
                    max: PREFETCH,
                    timeout: Duration::from_millis(200),
                    ..Default::default()
                };
                let messages = client.get_with(name, options).await?;
                Ok(messages.into_iter().map(|m| m.body).collect())
            }
            Self::Prefetching(consumer) => {
                match tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
                    Ok(message) => Ok(vec![message?.body]),
                    Err(_) => Ok(Vec::new()),
                }
            }
            Self::Transient(subscription) => {
                let next = tokio::time::timeout(Duration::from_millis(200), subscription.next());
                match next.await {
                    Ok(Some(Publication::Message(message))) => Ok(vec![message.body]),
                    Ok(Some(Publication::Missed(count))) => {
                        got.missed += count;
                        Ok(Vec::new())
                    }
                    Ok(None) => bail!("a transient subscription ended"),
                    Err(_) => Ok(Vec::new()),
                }
            }
        }
    }
}

/// Waits for every consumer.
async fn finish(consumers: Vec<JoinHandle<anyhow::Result<Got>>>) -> anyhow::Result<Vec<Got>> {
    let mut got = Vec::new();
    for consumer in consumers {
        got.push(consumer.await.context("a consumer panicked")??);
    }
    Ok(got)
}

/// Waits until alpha knows the interest of bravo, charlie and delta.
async fn wait_for_interest(alpha: &Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + STALL_MAX;
    while alpha.list_subscriptions().await?.interest.len() < 3 {
        if Instant::now() > deadline {
            bail!("alpha never heard of the subscriptions' interest");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn print_latency(
    what: &str,
    histogram: &Histogram<u64>,
) -> Result<(), qmgr::cli::output::OutputError> {
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    outln!(
        "latency {what}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} samples)",
        ms(0.5),
        ms(0.99),
        histogram.max() as f64 / 1000.0,
        histogram.len()
    )?;
    Ok(())
}

/// Journal commits per message on each manager: with `sync always` each is a synced write,
/// and the managers of a bench share one disk.
fn print_commits(commits: &[(String, f64)]) -> Result<(), qmgr::cli::output::OutputError> {
    let each: Vec<String> = commits
        .iter()
        .map(|(name, c)| format!("{name} {c:.2}"))
        .collect();
    let total: f64 = commits.iter().map(|(_, c)| c).sum();
    outln!(
        "journal commits per message: {} (in all {total:.2})",
        each.join(", ")
    )
}

/// Copies and bytes each of alpha's links carried per publication during the run.
fn print_links(
    before: &hopmq::protocol::Status,
    after: &hopmq::protocol::Status,
    count: u64,
) -> Result<(), qmgr::cli::output::OutputError> {
    for link in &after.links {
        let old = before.links.iter().find(|l| l.neighbour == link.neighbour);
        let copies = link.publications_sent - old.map_or(0, |l| l.publications_sent);
        let bytes = link.bytes_sent - old.map_or(0, |l| l.bytes_sent);
        outln!(
            "link alpha->{}: {:.3} copies and {:.0} body bytes per publication",
            link.neighbour,
            copies as f64 / count as f64,
            bytes as f64 / count as f64
        )?;
    }
    Ok(())
}

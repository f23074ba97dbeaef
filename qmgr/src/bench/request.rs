//! `qmgr bench request`: request/reply round trips along a line of managers on loopback.
//!
//! Starts `--hops + 1` managers `m0` .. `mN` (as `bench forward` does; one manager for 0
//! hops) with the queue `service` homed on the last. Servers on the last manager take
//! requests with leased gets of up to 16 and answer each with `reply` (the reply and the
//! request's removal in one write), echoing the request's body. Requesters on the first
//! manager keep `--outstanding` requests in flight in all (each a task that sends its next
//! request once its reply came), or pace them to `--rate` per second. A round trip's latency
//! is from the moment its request was due to the moment its reply was back; every reply is
//! checked against its request's body, and at the end no reply may be left in the
//! requesters' manager's `DLQ` (a reply that came twice, or after its request gave up).

use qmgr::outln;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use hopmq::{Client, GetOptions, Message};
use tokio::task::JoinSet;

use super::cluster::{Cluster, Spec};
use super::traffic::{Schedule, latency_histogram};
use super::verify::sync_label;
use qmgr::config::SyncMode;

/// The queue requests go to, homed on the last manager.
const QUEUE: &str = "service";

/// How long a request waits for its reply before the run counts it as missing.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests a server leases at once.
const SERVER_BATCH: u32 = 16;

#[derive(Debug, clap::Args)]
pub(crate) struct RequestBench {
    /// Links between the requesters' manager and the servers' (0: the same manager).
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(qmgr::config::defaults::MAX_HOPS)))]
    hops: u32,
    /// Round trips in all.
    #[arg(long, default_value_t = 50_000)]
    count: u64,
    /// Body size of requests and replies, in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Requests in flight at once, in all.
    #[arg(long, default_value_t = 64)]
    outstanding: usize,
    /// Requester connections the outstanding requests share.
    #[arg(long, default_value_t = 4)]
    requesters: usize,
    /// Server connections on the last manager.
    #[arg(long, default_value_t = 4)]
    servers: usize,
    /// Pace the requests to this many per second in all (default: as fast as replies come).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// Every manager's sync policy.
    #[arg(long, value_enum, default_value_t = SyncMode::Always)]
    sync: SyncMode,
    /// Keep the run folder (topology, certificates, data, logs) and print where it is.
    #[arg(long)]
    keep: bool,
}

/// What the requesters saw.
struct Seen {
    histogram: Histogram<u64>,
    /// Replies whose body was not their request's.
    wrong: u64,
    /// Requests without a reply within [`REPLY_TIMEOUT`].
    missing: u64,
    elapsed: Duration,
}

impl RequestBench {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        if self.outstanding == 0 || self.requesters == 0 || self.servers == 0 || self.count == 0 {
            bail!("--count, --outstanding, --requesters and --servers must be at least 1");
        }
        let names: Vec<String> = (0..=self.hops).map(|i| format!("m{i}")).collect();
        let links = names
            .windows(2)
            .map(|pair| (pair[0].clone(), pair[1].clone(), 1))
            .collect();
        let home = names.last().context("a line has a manager")?.clone();
        let line = Cluster::start(Spec {
            folder_prefix: "qmgr-bench-request",
            managers: names,
            links,
            queues: vec![(QUEUE.to_owned(), home)],
            sync: self.sync,
            env: Vec::new(),
            advertised: std::collections::BTreeMap::new(),
            console: false,
        })?;
        super::cluster::run_on(line, self.keep, async |line| {
            match self.measure(line).await {
                Ok(code) => Ok(code),
                Err(error) => bail!("{error:#}\n{}", line.log_tails()),
            }
        })
    }

    async fn measure(&self, line: &mut Cluster) -> anyhow::Result<ExitCode> {
        let clients = line.ready_clients().await?;
        let first = &line.nodes()[0].socket;
        let last = &line.nodes()[line.nodes().len() - 1].socket;
        let stop = Arc::new(AtomicBool::new(false));
        let mut servers = JoinSet::new();
        for _ in 0..self.servers {
            let client = Client::connect_to(last).await?;
            servers.spawn(serve(client, Arc::clone(&stop)));
        }
        let mut requesters = Vec::new();
        for _ in 0..self.requesters {
            requesters.push(Client::connect_to(first).await?);
        }
        let before = line.commits(&clients).await?;
        let seen = self.request(&requesters).await;
        stop.store(true, Ordering::Relaxed);
        let mut served = 0;
        while let Some(server) = servers.join_next().await {
            served += server.context("a server panicked")??;
        }
        let seen = seen?;
        let after = line.commits(&clients).await?;
        let dead = clients[0].status().await?;
        let dead_letters = dead
            .queues
            .iter()
            .find(|q| q.name == hopmq::protocol::DEAD_LETTER_QUEUE)
            .map_or(0, |q| q.depth);

        self.print_setup()?;
        outln!(
            "throughput: {:.0} round trips/s ({} in {:.2} s, {served} served)",
            self.count as f64 / seen.elapsed.as_secs_f64(),
            self.count,
            seen.elapsed.as_secs_f64()
        )?;
        let h = &seen.histogram;
        outln!(
            "latency request->reply: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} samples)",
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
            h.len()
        )?;
        let per: Vec<String> = line
            .commits_per(&before, &after, self.count)
            .iter()
            .map(|(name, per)| format!("{name} {per:.2}"))
            .collect();
        outln!("journal commits per round trip: {}", per.join(", "))?;
        outln!(
            "verify: {} replies, {} wrong, {} missing, {} in the requesters' DLQ",
            self.count - seen.missing,
            seen.wrong,
            seen.missing,
            dead_letters
        )?;
        let failed = seen.wrong > 0 || seen.missing > 0 || dead_letters > 0;
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }

    /// Sends every request, `outstanding` at a time, and waits for their replies.
    async fn request(&self, requesters: &[Client]) -> anyhow::Result<Seen> {
        let next = Arc::new(AtomicU64::new(0));
        let every = self
            .rate
            .map(|rate| Duration::from_secs_f64(self.outstanding as f64 / rate as f64));
        let started = tokio::time::Instant::now();
        let mut tasks = JoinSet::new();
        for task in 0..self.outstanding {
            let client = requesters[task % requesters.len()].clone();
            let (next, count, size) = (Arc::clone(&next), self.count, self.size);
            // Each task's schedule starts its share of the interval later than the one
            // before, so the paced requests come evenly rather than in bursts.
            let pace =
                every.map(|every| (every, every.mul_f64(task as f64 / self.outstanding as f64)));
            tasks.spawn(async move {
                let mut seen = Seen {
                    histogram: latency_histogram()?,
                    wrong: 0,
                    missing: 0,
                    elapsed: Duration::ZERO,
                };
                let mut schedule = match pace {
                    Some((every, offset)) => {
                        tokio::time::sleep(offset).await;
                        Some(Schedule::new(every))
                    }
                    None => None,
                };
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        return anyhow::Ok(seen);
                    }
                    let due = match &mut schedule {
                        Some(schedule) => schedule.next().await?,
                        None => tokio::time::Instant::now(),
                    };
                    let mut body = format!("request {n} ").into_bytes();
                    body.resize(size.max(body.len()), b'.');
                    match client
                        .request(QUEUE, Message::new(body.clone()), REPLY_TIMEOUT)
                        .await
                    {
                        Ok(reply) => {
                            let micros = due.elapsed().as_micros();
                            seen.histogram
                                .saturating_record(u64::try_from(micros).unwrap_or(u64::MAX));
                            seen.wrong += u64::from(reply.body != body);
                        }
                        Err(hopmq::ClientError::NoReply(_)) => seen.missing += 1,
                        Err(error) => return Err(error.into()),
                    }
                }
            });
        }
        let mut all = Seen {
            histogram: latency_histogram()?,
            wrong: 0,
            missing: 0,
            elapsed: Duration::ZERO,
        };
        while let Some(task) = tasks.join_next().await {
            let seen = task.context("a requester panicked")??;
            all.histogram.add(&seen.histogram)?;
            all.wrong += seen.wrong;
            all.missing += seen.missing;
        }
        all.elapsed = started.elapsed();
        Ok(all)
    }

    fn print_setup(&self) -> Result<(), qmgr::cli::output::OutputError> {
        outln!(
            "request: {} hop(s), {} round trips of {} B, {} outstanding over {} requester(s), {} server(s), {}{}",
            self.hops,
            self.count,
            self.size,
            self.outstanding,
            self.requesters,
            self.servers,
            sync_label(self.sync.as_str()),
            self.rate
                .map_or(String::new(), |r| format!(", paced at {r}/s")),
        )
    }
}

/// One server: leases requests and replies to each with its body, until `stop`; how many it
/// answered. Its next leased get goes out while its replies are still being written, as a
/// server that takes work while it finishes the last would: a request that arrives meanwhile
/// finds a get waiting.
async fn serve(client: Client, stop: Arc<AtomicBool>) -> anyhow::Result<u64> {
    let mut served = 0;
    let mut replies = JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        let options = GetOptions {
            timeout: Duration::from_millis(100),
            max: SERVER_BATCH,
            lease: Some(REPLY_TIMEOUT),
            ..Default::default()
        };
        let requests = client.get_with(QUEUE, options).await?;
        for request in requests {
            let client = client.clone();
            replies.spawn(async move {
                let reply = Message::new(request.body.clone());
                client.reply(&request, reply).await
            });
        }
        while let Some(reply) = replies.try_join_next() {
            reply.context("a reply task panicked")??;
            served += 1;
        }
    }
    while let Some(reply) = replies.join_next().await {
        reply.context("a reply task panicked")??;
        served += 1;
    }
    Ok(served)
}

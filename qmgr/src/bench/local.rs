//! `qmgr bench local`: put→get throughput and latency through one manager's local API.
//!
//! Starts a manager (this same binary, `qmgr run`) in a temporary folder unless given a
//! socket. Producers stamp each body with the send time; consumers compute put→get latency
//! from it into an HDR histogram.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use hopmq::{Client, Message};
use tokio::sync::Mutex;

use qmgr::config::SyncMode;

/// One message's send time rides in the first bytes of its body.
pub(super) const STAMP_BYTES: usize = 8;

#[derive(Debug, clap::Args)]
pub(crate) struct LocalBench {
    /// Use the manager on this socket instead of starting one.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Producer tasks.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Consumer tasks; 0 only fills the queue (for restart and memory measurements).
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// Messages in all.
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Messages per put request (an atomic batch).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Put requests each producer keeps in flight.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Messages each consumer fetches ahead.
    #[arg(long, default_value_t = 256)]
    prefetch: u32,
    /// Pace the producers to this many messages per second in all (default: as fast as possible).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// Send non-persistent messages.
    #[arg(long)]
    non_persistent: bool,
    /// The started manager's sync policy.
    #[arg(long, value_enum, default_value_t = SyncMode::Always)]
    sync: SyncMode,
    /// The queue to use.
    #[arg(long, default_value = "bench")]
    queue: String,
}

/// A manager process started for the run, stopped when dropped.
struct Started {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalBench {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        if self.size < STAMP_BYTES {
            bail!("--size must be at least {STAMP_BYTES} bytes (the send time rides in the body)");
        }
        if self.producers == 0 || self.batch == 0 || self.window == 0 {
            bail!("--producers, --batch and --window must be at least 1");
        }
        let (socket, _started) = match &self.socket {
            Some(socket) => (socket.clone(), None),
            None => {
                let (socket, started) = self.start_manager()?;
                (socket, Some(started))
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(self.measure(socket))
    }

    fn start_manager(&self) -> anyhow::Result<(PathBuf, Started)> {
        let dir = tempfile::Builder::new().prefix("qmgr-bench").tempdir()?;
        let socket = dir.path().join("qmgr.sock");
        let log = std::fs::File::create(dir.path().join("qmgr.log"))?;
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["run", "--name", "bench", "--sync", self.sync.as_str()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start a manager")?;
        let started = Started { child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if Instant::now() > deadline {
                bail!("the manager did not start within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok((socket, started))
    }

    async fn measure(self, socket: PathBuf) -> anyhow::Result<ExitCode> {
        let received = Arc::new(AtomicU64::new(0));
        let latencies = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
            1, 60_000_000, 3,
        )?));
        let started = Instant::now();
        let mut consumers = tokio::task::JoinSet::new();
        for _ in 0..self.consumers {
            let client = Client::connect_to(&socket).await?;
            let consumer = client.consumer(&self.queue, self.prefetch);
            consumers.spawn(consume(
                consumer,
                received.clone(),
                latencies.clone(),
                self.count,
            ));
        }
        let mut producers = self.start_producers(&socket).await?;
        while let Some(result) = producers.join_next().await {
            result??;
        }
        let put_elapsed = started.elapsed();
        if self.consumers == 0 {
            println!(
                "filled: {} x {} B in {:.2} s, {:.0} msg/s",
                self.count,
                self.size,
                put_elapsed.as_secs_f64(),
                self.count as f64 / put_elapsed.as_secs_f64()
            );
            return Ok(ExitCode::SUCCESS);
        }
        self.wait_all_got(&received).await?;
        let elapsed = started.elapsed();
        consumers.abort_all();
        let histogram = latencies.lock().await;
        let rate = self.count as f64 / elapsed.as_secs_f64();
        self.print_setup();
        print_results(rate, self.size, put_elapsed, elapsed, &histogram);
        Ok(ExitCode::SUCCESS)
    }

    /// Connects each producer and starts it on its share of the messages.
    async fn start_producers(
        &self,
        socket: &Path,
    ) -> anyhow::Result<tokio::task::JoinSet<anyhow::Result<()>>> {
        let mut producers = tokio::task::JoinSet::new();
        let per_producer = self.count.div_ceil(self.producers as u64);
        for p in 0..self.producers {
            let client = Client::connect_to(socket).await?;
            let share = per_producer.min(self.count.saturating_sub(per_producer * p as u64));
            let spec = ProducerSpec {
                queue: self.queue.clone(),
                size: self.size,
                batch: self.batch,
                window: self.window,
                persistent: !self.non_persistent,
                interval: self
                    .rate
                    .map(|rate| put_interval(rate, self.producers, self.batch)),
            };
            producers.spawn(produce(client, spec, share));
        }
        Ok(producers)
    }

    /// Waits until the consumers have got every message; a long silence is a stall.
    async fn wait_all_got(&self, received: &AtomicU64) -> anyhow::Result<()> {
        let progress_deadline = Duration::from_secs(60);
        let mut last = (received.load(Ordering::Relaxed), Instant::now());
        while received.load(Ordering::Relaxed) < self.count {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = received.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > progress_deadline {
                bail!("consumers stalled at {now} of {} messages", self.count);
            }
        }
        Ok(())
    }

    /// The line saying what was run.
    fn print_setup(&self) {
        println!(
            "local: {} producers, {} consumers, {} x {} B, batch {}, window {}, prefetch {}, {}{}",
            self.producers,
            self.consumers,
            self.count,
            self.size,
            self.batch,
            self.window,
            self.prefetch,
            if self.non_persistent {
                "non-persistent"
            } else {
                "persistent"
            },
            self.rate
                .map_or(String::new(), |r| format!(", paced at {r} msg/s")),
        );
    }
}

/// Takes messages until `count` are got in all, recording each one's put→get latency.
async fn consume(
    mut consumer: hopmq::Consumer,
    received: Arc<AtomicU64>,
    latencies: Arc<Mutex<Histogram<u64>>>,
    count: u64,
) -> anyhow::Result<()> {
    // Merged into the shared histogram now and then: a consumer still waiting when the run
    // ends is aborted, and its samples must not be lost with it.
    const MERGE_EVERY: u64 = 1024;
    let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    while received.load(Ordering::Relaxed) < count {
        let message = consumer.next().await?;
        let micros = now_micros().saturating_sub(stamp(&message.body));
        local.saturating_record(micros.max(1));
        let total = received.fetch_add(1, Ordering::Relaxed) + 1;
        if local.len() >= MERGE_EVERY || total >= count {
            latencies.lock().await.add(&local)?;
            local.reset();
        }
    }
    Ok(())
}

pub(super) struct ProducerSpec {
    pub(super) queue: String,
    pub(super) size: usize,
    pub(super) batch: usize,
    pub(super) window: usize,
    pub(super) persistent: bool,
    pub(super) interval: Option<Duration>,
}

/// How often each of `producers` puts a batch of `batch` messages for `rate` messages per
/// second in all.
pub(super) fn put_interval(rate: u64, producers: usize, batch: usize) -> Duration {
    Duration::from_secs_f64(producers as f64 * batch as f64 / rate as f64)
}

pub(super) async fn produce(client: Client, spec: ProducerSpec, count: u64) -> anyhow::Result<()> {
    let spec = Arc::new(spec);
    let window = Arc::new(tokio::sync::Semaphore::new(spec.window));
    let mut in_flight = tokio::task::JoinSet::new();
    let mut ticker = spec.interval.map(|every| {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        ticker
    });
    let mut sent = 0u64;
    while sent < count {
        if let Some(ticker) = &mut ticker {
            ticker.tick().await;
        }
        let n = (spec.batch as u64).min(count - sent) as usize;
        sent += n as u64;
        let permit = window.clone().acquire_owned().await?;
        let (client, spec) = (client.clone(), spec.clone());
        in_flight.spawn(async move {
            let mut messages = Vec::with_capacity(n);
            for _ in 0..n {
                let mut body = vec![0u8; spec.size];
                body[..STAMP_BYTES].copy_from_slice(&now_micros().to_le_bytes());
                let mut message = Message::new(body);
                if !spec.persistent {
                    message = message.non_persistent();
                }
                messages.push((spec.queue.clone(), message));
            }
            let result = if n == 1 {
                let (address, message) = messages.remove(0);
                client.put(&address, message).await.map(|_| ())
            } else {
                client.put_batch(messages).await.map(|_| ())
            };
            drop(permit);
            result
        });
        while let Some(done) = in_flight.try_join_next() {
            done??;
        }
    }
    while let Some(done) = in_flight.join_next().await {
        done??;
    }
    Ok(())
}

/// The throughput and latency lines every put→get benchmark prints.
pub(super) fn print_results(
    rate: f64,
    size: usize,
    put_elapsed: Duration,
    elapsed: Duration,
    histogram: &Histogram<u64>,
) {
    println!(
        "throughput: {rate:.0} msg/s, {:.1} MB/s (puts done in {:.2} s, all got in {:.2} s)",
        rate * size as f64 / 1e6,
        put_elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    if !histogram.is_empty() {
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "latency put->get: p50 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms, max {:.3} ms ({} samples)",
            ms(0.5),
            ms(0.99),
            ms(0.999),
            histogram.max() as f64 / 1000.0,
            histogram.len()
        );
    }
}

pub(super) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

pub(super) fn stamp(body: &[u8]) -> u64 {
    body.get(..STAMP_BYTES)
        .and_then(|bytes| bytes.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_counts_messages_not_batches() {
        assert_eq!(put_interval(1000, 1, 1), Duration::from_millis(1));
        assert_eq!(put_interval(64_000, 4, 16), Duration::from_millis(1));
    }
}

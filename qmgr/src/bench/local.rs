//! `qmgr bench local`: put→get throughput and latency through one manager's local API.
//!
//! Starts a manager (this same binary, `qmgr run`) in a temporary folder unless given a
//! socket, and reads its status first: a manager it was given must sync always for figures of
//! persistent messages, one it started must sync as it was asked to (and `--sync never` is
//! labelled as not durable). The traffic is [`super::traffic`]'s: numbered messages checked
//! by the consumers against the run's ledger, and put→get latency into an HDR histogram.

use qmgr::cli::output::OutputError;
use qmgr::outln;
use std::path::PathBuf;
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hopmq::Client;

use super::traffic::{Drained, Outcome, Traffic, TrafficSpec, print_results};
use super::verify::{HEADER_BYTES, Origin, check_sync, sync_label};
use qmgr::config::SyncMode;

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
    /// Read with this many single `get` calls in flight per consumer instead of the
    /// prefetching consumer (what an application calling `get` from many tasks does).
    #[arg(long, default_value_t = 0)]
    single_gets: usize,
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
        if self.size < HEADER_BYTES {
            bail!(
                "--size must be at least {HEADER_BYTES} bytes (the send time, producer and \
                 sequence number ride in the body)"
            );
        }
        if self.producers == 0 || self.batch == 0 || self.window == 0 || self.count == 0 {
            bail!("--producers, --batch, --window and --count must be at least 1");
        }
        let (socket, origin, _started) = match &self.socket {
            Some(socket) => (socket.clone(), Origin::Given, None),
            None => {
                let (socket, started) = self.start_manager()?;
                (socket, Origin::Started(self.sync), Some(started))
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(self.measure(socket, origin))
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

    async fn measure(self, socket: PathBuf, origin: Origin) -> anyhow::Result<ExitCode> {
        let status = Client::connect_to(&socket)
            .await?
            .status()
            .await
            .context("status of the manager")?;
        check_sync(&status.manager, &status, origin, !self.non_persistent)?;
        let mut consumers = Vec::with_capacity(self.consumers);
        for _ in 0..self.consumers {
            consumers.push(Client::connect_to(&socket).await?);
        }
        let mut producers = Vec::with_capacity(self.producers);
        for _ in 0..self.producers {
            producers.push(Client::connect_to(&socket).await?);
        }
        let spec = TrafficSpec {
            queue: self.queue.clone(),
            count: self.count,
            size: self.size,
            batch: self.batch,
            window: self.window,
            prefetch: self.prefetch,
            single_gets: self.single_gets,
            persistent: !self.non_persistent,
            rate: self.rate,
            put_for: None,
            ahead_max: None,
        };
        let mut traffic = Traffic::start(&spec, producers, consumers)?;
        let drained = traffic.drain(|| Ok(())).await?;
        let outcome = traffic.finish(drained).await?;
        Ok(self.report(drained, &outcome, &sync_label(&status.store.sync))?)
    }

    /// Prints the run's figures and verdict; the exit code is the verdict's.
    fn report(
        &self,
        drained: Drained,
        outcome: &Outcome,
        sync: &str,
    ) -> Result<ExitCode, OutputError> {
        let put_secs = outcome.put_elapsed.as_secs_f64();
        let Some(verdict) = &outcome.verdict else {
            outln!(
                "filled: {} x {} B in {put_secs:.2} s, {:.0} msg/s, {sync} (not verified: no \
                 consumers)",
                self.count,
                self.size,
                self.count as f64 / put_secs
            )?;
            return Ok(ExitCode::SUCCESS);
        };
        self.print_setup(sync)?;
        if drained == Drained::Stalled {
            outln!(
                "drain: nothing got for {} s after the last put; what is missing is lost",
                super::traffic::DRAIN_DEADLINE.as_secs()
            )?;
        }
        let rate = self.count as f64 / outcome.elapsed.as_secs_f64();
        print_results(
            rate,
            self.size,
            outcome.put_elapsed,
            outcome.elapsed,
            &outcome.histogram,
        )?;
        verdict.print()?;
        Ok(verdict.exit_code())
    }

    /// The line saying what was run.
    fn print_setup(&self, sync: &str) -> Result<(), OutputError> {
        outln!(
            "local: {} producers, {} consumers, {} x {} B, batch {}, window {}, {}, {}, {sync}{}",
            self.producers,
            self.consumers,
            self.count,
            self.size,
            self.batch,
            self.window,
            if self.single_gets > 0 {
                format!("{} single gets in flight", self.single_gets)
            } else {
                format!("prefetch {}", self.prefetch)
            },
            if self.non_persistent {
                "non-persistent"
            } else {
                "persistent"
            },
            self.rate
                .map_or(String::new(), |r| format!(", paced at {r} msg/s")),
        )?;
        Ok(())
    }
}

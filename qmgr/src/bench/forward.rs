//! `qmgr bench forward`: end-to-end put→get throughput and latency of persistent messages
//! forwarded along a line of managers on loopback.
//!
//! Starts `--hops + 1` managers (this same binary, `qmgr run`) named `m0` .. `mN` in one
//! temporary folder: a topology with links `m0-m1`, `m1-m2`, ... (cost 1), free UDP ports on
//! 127.0.0.1 and the queue `bench` homed on the last manager; a development CA and one
//! certificate per manager; one data folder, API socket and log (`<folder>/<name>.log`) per
//! manager. Once every manager answers on its socket and every declared link's channel is up,
//! producers put to the address `bench` at `m0` and consumers take from `bench` at the last
//! manager, so every message crosses every hop. Every manager's status must report the sync
//! policy asked for (`--sync never` is labelled as not durable). The traffic is
//! [`super::traffic`]'s: numbered messages checked by the consumers against the run's ledger,
//! put→get latency into an HDR histogram. Throughput is the count over the time from the first
//! put to the last get. At the end, the links' sent and acknowledged message counters show
//! resends (sent > acked).

use qmgr::outln;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hopmq::Client;

use super::cluster::{Cluster, CpuUse, Node, Spec, describe_cpu};
use super::traffic::{DRAIN_DEADLINE, Drained, Traffic, TrafficSpec, print_results};
use super::verify::{HEADER_BYTES, sync_label};
use super::viewer::{ConsoleUse, Viewers};
use qmgr::config::SyncMode;

/// The queue the messages go to, homed on the last manager.
const QUEUE: &str = "bench";

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
    /// The web console on every manager: off, served but unwatched, or watched (a page open
    /// on each manager, reading what the pages read every 2 s).
    #[arg(long, value_enum, default_value_t = ConsoleUse::Off)]
    console: ConsoleUse,
    /// Keep the run folder (topology, certificates, data, logs) and print where it is.
    #[arg(long)]
    keep: bool,
}

impl ForwardBench {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        if self.size < HEADER_BYTES {
            bail!(
                "--size must be at least {HEADER_BYTES} bytes (the send time, producer and \
                 sequence number ride in the body)"
            );
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
            advertised: std::collections::BTreeMap::new(),
            console: self.console.served(),
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
        let clients = line.ready_clients().await?;
        if self.console != ConsoleUse::Watched {
            return self.measure(line, &clients).await;
        }
        let ports: Vec<u16> = line.nodes().iter().filter_map(|node| node.http).collect();
        let viewers = Viewers::open(&ports).await?;
        let code = self.measure(line, &clients).await?;
        let reads = viewers.close().await?;
        outln!(
            "console: {reads} page reads on {} managers during the run, every one 200 OK",
            ports.len()
        )?;
        Ok(code)
    }

    async fn measure(&self, line: &mut Cluster, clients: &[Client]) -> anyhow::Result<ExitCode> {
        let commits_before = line.commits(clients).await?;
        let mut consumers = Vec::with_capacity(self.consumers);
        for _ in 0..self.consumers {
            consumers.push(Client::connect_to(&last(line).socket).await?);
        }
        let mut producers = Vec::with_capacity(self.producers);
        for _ in 0..self.producers {
            producers.push(Client::connect_to(&first(line).socket).await?);
        }
        let cpu_before = line.cpu_use();
        let client_before = CpuUse::of(std::process::id());
        let mut traffic = Traffic::start(&self.traffic_spec(), producers, consumers)?;
        let drained = traffic
            .drain(|| match line.exited() {
                Some(exited) => bail!("{exited} during the run"),
                None => Ok(()),
            })
            .await?;
        let cpu_after = line.cpu_use();
        let client_use = CpuUse::of(std::process::id())
            .zip(client_before)
            .map(|(after, before)| after.since(before));
        let stalled = match drained {
            Drained::Stalled => Some(line.link_summary(clients).await),
            _ => None,
        };
        let outcome = traffic.finish(drained).await?;

        self.print_setup()?;
        if let Some(links) = stalled {
            outln!(
                "drain: nothing got for {} s after the last put; what is missing is lost\n{}",
                DRAIN_DEADLINE.as_secs(),
                links.trim_end()
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
        outln!(
            "{}",
            describe_cpu(&cpu_before, &cpu_after, client_use, self.count)
        )?;
        let commits_after = line.commits(clients).await?;
        self.print_journal_writes(line, &commits_before, &commits_after)?;
        outln!("{}", first_link_line(line, &clients[0]).await?)?;
        let verdict = outcome.verdict.context("a forward run has consumers")?;
        verdict.print()?;
        Ok(verdict.exit_code())
    }

    /// What the producers and consumers send and how.
    fn traffic_spec(&self) -> TrafficSpec {
        TrafficSpec {
            queue: QUEUE.to_owned(),
            count: self.count,
            size: self.size,
            batch: self.batch,
            window: self.window,
            prefetch: self.prefetch,
            single_gets: 0,
            persistent: true,
            rate: self.rate,
            put_for: None,
            ahead_max: None,
        }
    }

    /// The line saying what was run.
    fn print_setup(&self) -> Result<(), qmgr::cli::output::OutputError> {
        outln!(
            "forward: {} hop(s), {} producers, {} consumers, {} x {} B, batch {}, window {}, prefetch {}, persistent, {}{}, {}",
            self.hops,
            self.producers,
            self.consumers,
            self.count,
            self.size,
            self.batch,
            self.window,
            self.prefetch,
            sync_label(self.sync.as_str()),
            self.rate
                .map_or(String::new(), |r| format!(", paced at {r} msg/s")),
            self.console.label(),
        )?;
        Ok(())
    }

    /// Each manager's group commits during the run, per 1000 messages.
    fn print_journal_writes(
        &self,
        line: &Cluster,
        before: &[u64],
        after: &[u64],
    ) -> Result<(), qmgr::cli::output::OutputError> {
        let writes: Vec<String> = line
            .nodes()
            .iter()
            .zip(before.iter().zip(after))
            .map(|(node, (before, after))| {
                let per = after.saturating_sub(*before) as f64 * 1000.0 / self.count.max(1) as f64;
                format!("{} {per:.1}", node.name)
            })
            .collect();
        outln!("journal writes per 1000 messages: {}", writes.join(", "))?;
        Ok(())
    }
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

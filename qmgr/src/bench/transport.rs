//! `qmgr bench transport`: what the QUIC transport alone costs along a line of managers, the
//! floor under `bench forward`.
//!
//! Endpoints are configured exactly as managers' channel endpoints are
//! ([`quic::bind_endpoint`]: mutual TLS 1.3 from a development CA, the same transport settings
//! and socket buffers), each on its own thread with a single-threaded runtime, like a manager
//! with `runtime_threads = 1`. The first writes `count` messages of `size` bytes, each behind a
//! 4-byte length as channel frames are, on one stream; each relay copies what it reads to the
//! next link's stream without parsing it; the last counts bytes and checks each message's
//! [`Header`] (its sequence number) against the run's ledger, as every bench's consumers do.
//! No journal, no channel protocol, no API, no acks: what a `bench forward` run costs beyond
//! this is the product's own.

use qmgr::outln;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hopmq::ManagerName;

use super::verify::{HEADER_BYTES, Header, Ledger, Reader};
use qmgr::channel::quic;
use qmgr::config::TlsSettings;
use qmgr::tls;

/// Messages the first endpoint hands quinn per write.
const WRITE_MESSAGES: usize = 64;
/// The most a relay or the last endpoint takes from quinn per read.
const READ_CHUNK_BYTES: usize = 256 * 1024;
/// The largest body: a manager's default `max_message_bytes`.
const SIZE_MAX: usize = qmgr::config::defaults::MAX_MESSAGE_BYTES as usize;
/// How long an endpoint waits for its neighbour to connect, or for the run to end.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, clap::Args)]
pub(crate) struct TransportBench {
    /// Links between the first and the last endpoint (the line has hops + 1 endpoints).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=8))]
    hops: u8,
    /// Messages in all.
    #[arg(long, default_value_t = 400_000)]
    count: u64,
    /// Body size in bytes (each message also carries a 4-byte length); the run, producer and
    /// sequence number ride in the first 24.
    #[arg(long, default_value_t = 1024)]
    size: usize,
}

/// What one endpoint measured.
struct NodeReport {
    /// Its own thread's CPU time while data flowed through it.
    cpu: Duration,
    /// From its first byte to its last.
    elapsed: Duration,
    bytes: u64,
    /// Messages got out of order (the last endpoint's count).
    reordered: u64,
}

/// What every endpoint of a run is told.
#[derive(Clone)]
struct Job {
    count: u64,
    size: u32,
    total_bytes: u64,
    /// Written into by the first endpoint's headers, checked by the last endpoint.
    ledger: Arc<Ledger>,
    run: u32,
}

/// What an endpoint does with the stream it gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    First,
    Relay,
    Last,
}

impl TransportBench {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        if self.count == 0 {
            bail!("--count must be at least 1");
        }
        if self.size < HEADER_BYTES {
            bail!(
                "--size must be at least {HEADER_BYTES} bytes (the run, producer and sequence \
                 number ride in the body)"
            );
        }
        if self.size > SIZE_MAX {
            bail!("--size is at most {SIZE_MAX} bytes, a manager's default largest message");
        }
        let size = u32::try_from(self.size).context("--size must fit in 32 bits")?;
        let dir = tempfile::Builder::new()
            .prefix("qmgr-bench-transport")
            .tempdir()
            .context("cannot make the run folder")?;
        let names: Vec<ManagerName> = (0..=self.hops)
            .map(|i| ManagerName::new(format!("m{i}")))
            .collect::<Result<_, _>>()?;
        let link_tls = certificates(dir.path(), &names)?;

        // Endpoints start last first, so that each one's next neighbour is already listening.
        let total_bytes = self.count * (u64::from(size) + 4);
        let run = super::verify::run_id();
        let job = Job {
            count: self.count,
            size,
            total_bytes,
            ledger: Arc::new(Ledger::new(run, &[self.count])),
            run,
        };
        let mut next: Option<(ManagerName, SocketAddr)> = None;
        let mut nodes = Vec::with_capacity(names.len());
        for (index, (name, tls)) in names.iter().zip(link_tls).enumerate().rev() {
            let role = match index {
                0 => Role::First,
                i if i == names.len() - 1 => Role::Last,
                _ => Role::Relay,
            };
            let (bound, address) = mpsc::channel();
            let dial = next.clone();
            let job = job.clone();
            let thread = std::thread::Builder::new()
                .name(format!("transport-{name}"))
                .spawn(move || node(role, &tls, dial, &job, &bound).map_err(|e| format!("{e:#}")))
                .context("cannot start an endpoint thread")?;
            let address = address
                .recv_timeout(STEP_TIMEOUT)
                .with_context(|| format!("endpoint {name} did not start"))?;
            next = Some((name.clone(), address));
            nodes.push((name.clone(), thread));
        }
        nodes.reverse();

        let mut reports = Vec::with_capacity(nodes.len());
        let mut reordered = 0;
        for (name, thread) in nodes {
            let report = thread
                .join()
                .map_err(|_| anyhow::anyhow!("endpoint {name} panicked"))?
                .map_err(|e| anyhow::anyhow!("endpoint {name}: {e}"))?;
            if report.bytes != total_bytes {
                bail!(
                    "endpoint {name} saw {} bytes instead of {total_bytes}",
                    report.bytes
                );
            }
            reordered += report.reordered;
            reports.push((name, report));
        }
        self.print(&reports)?;
        let verdict = job.ledger.verdict(&[self.count], reordered);
        verdict.print()?;
        Ok(verdict.exit_code())
    }

    fn print(
        &self,
        reports: &[(ManagerName, NodeReport)],
    ) -> Result<(), qmgr::cli::output::OutputError> {
        let count = self.count as f64;
        let elapsed = reports
            .last()
            .map_or(Duration::ZERO, |(_, last)| last.elapsed);
        let rate = count / elapsed.as_secs_f64().max(1e-9);
        outln!(
            "transport: {} hop(s), {} x {} B on one stream per link, mutual TLS, no journal",
            self.hops,
            self.count,
            self.size
        )?;
        outln!(
            "throughput: {rate:.0} msg/s, {:.1} MB/s (last endpoint, first byte to last)",
            rate * (self.size as f64 + 4.0) / 1e6
        )?;
        let mut line = String::from("cpu per message:");
        let mut total = 0.0;
        for (name, report) in reports {
            let micros = report.cpu.as_secs_f64() * 1e6 / count;
            total += micros;
            line.push_str(&format!(" {name} {micros:.1} µs,"));
        }
        outln!("{line} all {total:.1} µs (each endpoint's own thread, 10 ms resolution)")?;
        Ok(())
    }
}

/// A development CA and one certificate per endpoint in `dir`, loaded as managers load theirs.
fn certificates(dir: &std::path::Path, names: &[ManagerName]) -> anyhow::Result<Vec<tls::LinkTls>> {
    let mut text = String::new();
    for (i, name) in names.iter().enumerate() {
        // Addresses only make the topology valid: endpoints bind free ports themselves.
        text.push_str(&format!(
            "[managers.{name}]\naddress = \"127.0.0.1:{}\"\n\n",
            10_000 + i
        ));
    }
    for pair in names.windows(2) {
        text.push_str(&format!(
            "[[links]]\nbetween = [\"{}\", \"{}\"]\n\n",
            pair[0], pair[1]
        ));
    }
    let checked = hopmq_routing::parse(&text, "bench-transport topology")
        .context("the generated topology is refused")?;
    let certs = super::cluster::certificates(dir, &checked.topology)?;
    names
        .iter()
        .map(|name| {
            let (cert, key) = qmgr::certs::manager_files(&certs, name);
            let settings = TlsSettings {
                ca: Some(certs.join(qmgr::certs::CA_CERT_FILE)),
                cert: Some(cert),
                key: Some(key),
            };
            tls::load_for(&settings, name).with_context(|| format!("TLS for {name}"))
        })
        .collect()
}

/// One endpoint, on its own thread and runtime: binds, says where (`bound`), then plays `role`.
fn node(
    role: Role,
    tls: &tls::LinkTls,
    dial: Option<(ManagerName, SocketAddr)>,
    job: &Job,
    bound: &mpsc::Sender<SocketAddr>,
) -> anyhow::Result<NodeReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    runtime.block_on(async move {
        let (endpoint, client) = quic::bind_endpoint(
            tls,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            qmgr::config::LinkCongestion::default(),
        )?;
        bound
            .send(endpoint.local_addr()?)
            .context("the bench stopped")?;
        let outgoing = match &dial {
            Some((name, address)) => Some(connect(&endpoint, client, name, *address).await?),
            None => None,
        };
        let report = match (role, outgoing) {
            (Role::First, Some((connection, send))) => send_all(&connection, send, job).await?,
            (Role::Relay, outgoing) => pass_on(&endpoint, outgoing, None).await?,
            (Role::Last, outgoing) => {
                let frames = Frames::new(job.ledger.reader(), job.size);
                pass_on(&endpoint, outgoing, Some(frames)).await?
            }
            (Role::First, None) => bail!("the first endpoint has no one to send to"),
        };
        endpoint.wait_idle().await;
        Ok(report)
    })
}

/// Connects to the next endpoint and opens the stream to it.
async fn connect(
    endpoint: &quinn::Endpoint,
    client: quinn::ClientConfig,
    name: &ManagerName,
    address: SocketAddr,
) -> anyhow::Result<(quinn::Connection, quinn::SendStream)> {
    // Checked as the dialler checks it; our names are DNS names as they are.
    tls::server_name(name)?;
    let connection = endpoint
        .connect_with(client, address, name.as_str())?
        .await
        .with_context(|| format!("cannot connect to {name}"))?;
    let (send, _receive) = connection.open_bi().await?;
    Ok((connection, send))
}

/// The first endpoint: writes every message, then waits for the last endpoint to close.
async fn send_all(
    connection: &quinn::Connection,
    mut send: quinn::SendStream,
    job: &Job,
) -> anyhow::Result<NodeReport> {
    let Job {
        count,
        size,
        total_bytes,
        run,
        ..
    } = *job;
    let started = Instant::now();
    let cpu = thread_cpu();
    let mut block = Vec::with_capacity(WRITE_MESSAGES * (size as usize + 4));
    let mut sent = 0;
    while sent < count {
        block.clear();
        let messages = (count - sent).min(WRITE_MESSAGES as u64);
        for seq in sent..sent + messages {
            block.extend_from_slice(&size.to_le_bytes());
            let body = block.len();
            block.resize(body + size as usize, 0x5a);
            // No send time: this bench measures no latency.
            Header {
                sent_us: 0,
                run,
                producer: 0,
                seq,
            }
            .write(&mut block[body..]);
        }
        send.write_all(&block).await?;
        sent += messages;
    }
    send.finish()?;
    // The last endpoint closes once it has everything; the stream's data is not delivered if
    // this end closes first.
    tokio::time::timeout(STEP_TIMEOUT, connection.closed())
        .await
        .context("the run did not end")?;
    Ok(NodeReport {
        cpu: thread_cpu().saturating_sub(cpu),
        elapsed: started.elapsed(),
        bytes: total_bytes,
        reordered: 0,
    })
}

/// The last endpoint's reading of the stream: frames of a 4-byte length and a body of `size`
/// bytes, each body's header checked against the run's ledger.
struct Frames {
    reader: Reader,
    frame_bytes: usize,
    /// Where the next byte falls in its frame.
    at: usize,
    /// The current frame's length and header, as far as they have come.
    head: Vec<u8>,
}

impl Frames {
    /// Bytes of a frame up to the end of its header.
    const HEAD_BYTES: usize = 4 + HEADER_BYTES;

    fn new(reader: Reader, size: u32) -> Self {
        Self {
            reader,
            frame_bytes: 4 + size as usize,
            at: 0,
            head: Vec::with_capacity(Self::HEAD_BYTES),
        }
    }

    /// Reads the next bytes of the stream, which may end anywhere in a frame.
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let end = if self.at < Self::HEAD_BYTES {
                Self::HEAD_BYTES
            } else {
                self.frame_bytes
            };
            let take = (end - self.at).min(bytes.len());
            if self.at < Self::HEAD_BYTES {
                self.head.extend_from_slice(&bytes[..take]);
            }
            self.at += take;
            bytes = &bytes[take..];
            if self.at == Self::HEAD_BYTES {
                self.reader.take(&self.head[4..]);
                self.head.clear();
            }
            if self.at == self.frame_bytes {
                self.at = 0;
            }
        }
    }
}

/// A relay or the last endpoint: takes the neighbour's stream and copies it to `outgoing`,
/// if there is one, counting bytes; the last endpoint checks its `frames` too.
async fn pass_on(
    endpoint: &quinn::Endpoint,
    mut outgoing: Option<(quinn::Connection, quinn::SendStream)>,
    mut frames: Option<Frames>,
) -> anyhow::Result<NodeReport> {
    let incoming = tokio::time::timeout(STEP_TIMEOUT, endpoint.accept())
        .await
        .context("no neighbour connected")?
        .context("the endpoint closed")?;
    let connection = incoming.await?;
    let (_send, mut receive) = connection.accept_bi().await?;
    let mut bytes = 0u64;
    let mut first: Option<(Instant, Duration)> = None;
    while let Some(chunk) = receive.read_chunk(READ_CHUNK_BYTES, true).await? {
        first.get_or_insert_with(|| (Instant::now(), thread_cpu()));
        bytes += chunk.bytes.len() as u64;
        if let Some(frames) = frames.as_mut() {
            frames.feed(&chunk.bytes);
        }
        if let Some((_, send)) = outgoing.as_mut() {
            send.write_chunk(Bytes::clone(&chunk.bytes)).await?;
        }
    }
    let (started, cpu) = first.context("nothing arrived")?;
    let elapsed = started.elapsed();
    let cpu = thread_cpu().saturating_sub(cpu);
    if let Some((next, mut send)) = outgoing {
        send.finish()?;
        tokio::time::timeout(STEP_TIMEOUT, next.closed())
            .await
            .context("the run did not end")?;
    }
    connection.close(0u32.into(), b"done");
    Ok(NodeReport {
        cpu,
        elapsed,
        bytes,
        reordered: frames.map_or(0, |frames| frames.reader.reordered()),
    })
}

/// CPU time of the calling thread so far (user and system); zero where there is no `/proc`.
fn thread_cpu() -> Duration {
    super::cluster::cpu_time("/proc/thread-self/stat").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_across_any_chunking() {
        let (count, size) = (5u64, 30u32);
        let ledger = Arc::new(Ledger::new(7, &[count]));
        let mut stream = Vec::new();
        for seq in [0, 1, 3, 2, 3] {
            stream.extend_from_slice(&size.to_le_bytes());
            let body = stream.len();
            stream.resize(body + size as usize, 0);
            Header {
                sent_us: 0,
                run: 7,
                producer: 0,
                seq,
            }
            .write(&mut stream[body..]);
        }
        let mut frames = Frames::new(ledger.reader(), size);
        for chunk in stream.chunks(7) {
            frames.feed(chunk);
        }
        let verdict = ledger.verdict(&[count], frames.reader.reordered());
        assert_eq!(
            (verdict.lost, verdict.duplicated, verdict.reordered),
            (1, 1, 1)
        );
    }

    #[test]
    fn every_byte_crosses_the_line() {
        // `run` fails unless every endpoint saw every byte of every message.
        let bench = TransportBench {
            hops: 2,
            count: 3000,
            size: 700,
        };
        assert_eq!(bench.run().expect("the run"), ExitCode::SUCCESS);
    }
}

//! Prometheus metrics in the text exposition format, over a minimal HTTP/1.1 endpoint: every
//! request gets the current figures, whatever its path. Read-only; asks the core for a
//! snapshot and the journal for its counters.

use std::fmt::Write;
use std::time::Duration;

use hopmq::protocol::{CustodyStatus, HeldStatus, LinkStatus, QueueStatus, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::debug;

use crate::manager::Command;
use crate::store::{Journal, JournalStats, journal::FSYNC_BUCKETS};

/// A scrape that takes longer than this is dropped.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most request bytes read before answering; a scraper's request is far smaller.
const REQUEST_BYTES_MAX: usize = 8192;

/// Serves metrics until `shutdown` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    commands: mpsc::Sender<Command>,
    journal: Journal,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let (commands, journal) = (commands.clone(), journal.clone());
                    tokio::spawn(async move {
                        if tokio::time::timeout(SCRAPE_TIMEOUT, scrape(stream, commands, journal)).await.is_err() {
                            debug!("metrics scrape timed out");
                        }
                    });
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn scrape(mut stream: TcpStream, commands: mpsc::Sender<Command>, journal: Journal) {
    // Read until the end of the request head; the request itself is not interpreted.
    let mut request = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < REQUEST_BYTES_MAX {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let (reply, status) = oneshot::channel();
    if commands.send(Command::Snapshot { reply }).await.is_err() {
        return;
    }
    let Ok(status) = status.await else { return };
    let body = render(&status, &journal.stats());
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// One metric family: its name, kind, help, and how to read its value from a source; a `None`
/// value leaves the sample out (an RTT before the first connection).
struct Family<T> {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&T) -> Option<f64>,
}

/// Shorthand for the family tables below.
const fn family<T>(
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&T) -> Option<f64>,
) -> Family<T> {
    Family {
        name,
        kind,
        help,
        value,
    }
}

fn count(value: u64) -> Option<f64> {
    Some(value as f64)
}

/// The manager's message counters up to the per-queue figures.
const MESSAGES: [Family<Status>; 2] = [
    family(
        "hopmq_messages_put_total",
        "counter",
        "Messages put since start.",
        |s| count(s.messages_put),
    ),
    family(
        "hopmq_messages_delivered_total",
        "counter",
        "Messages handed to applications since start.",
        |s| count(s.messages_delivered),
    ),
];

const QUEUES: [Family<QueueStatus>; 3] = [
    family(
        "hopmq_queue_depth",
        "gauge",
        "Messages waiting in a queue.",
        |q| count(q.depth),
    ),
    family(
        "hopmq_queue_leased",
        "gauge",
        "Messages leased and not yet settled.",
        |q| count(q.leased),
    ),
    family(
        "hopmq_queue_bytes",
        "gauge",
        "Body bytes waiting in a queue.",
        |q| count(q.bytes),
    ),
];

/// The manager's counters of messages on their way: handed on, expired, re-routed.
const PASSED_ON: [Family<Status>; 9] = [
    family(
        "hopmq_messages_forwarded_total",
        "counter",
        "Messages handed on to a neighbour and acknowledged, since start.",
        |s| count(s.messages_forwarded),
    ),
    family(
        "hopmq_messages_expired_total",
        "counter",
        "Messages dropped because they expired before reaching their queue.",
        |s| count(s.messages_expired),
    ),
    family(
        "hopmq_messages_rerouted_total",
        "counter",
        "Waiting messages moved to another queue by re-routing, since start.",
        |s| count(s.messages_rerouted),
    ),
    family(
        "hopmq_messages_resent_total",
        "counter",
        "Messages sent again around a failure (in flight on a link the route left, or not confirmed by their destination).",
        |s| count(s.messages_resent),
    ),
    family(
        "hopmq_duplicates_dropped_total",
        "counter",
        "Second copies of messages dropped at their destination by custody, since start.",
        |s| count(s.duplicates_dropped),
    ),
    family(
        "hopmq_reports_made_total",
        "counter",
        "Delivery reports made (arrival, delivery, exception) for messages that asked for them.",
        |s| count(s.reports_made),
    ),
    family(
        "hopmq_messages_confirmed_total",
        "counter",
        "This manager's own messages their destination manager confirmed, since start.",
        |s| count(s.messages_confirmed),
    ),
    family(
        "hopmq_messages_unordered_total",
        "counter",
        "Arrivals held for an earlier message of their origin and queue that went on without it at the custody timeout, since start.",
        |s| count(s.messages_unordered),
    ),
    family(
        "hopmq_publications_dropped_total",
        "counter",
        "Non-persistent publications dropped here (no route, no connection taking them, past the hop limit), since start.",
        |s| count(s.publications_dropped),
    ),
];

const HELD: [Family<HeldStatus>; 2] = [
    family(
        "hopmq_held_for_order_messages",
        "gauge",
        "Arrivals held until an earlier message of the same origin, queue and priority arrives.",
        |h| count(h.messages),
    ),
    family(
        "hopmq_held_for_order_oldest_seconds",
        "gauge",
        "How long the oldest arrival held for the origin has waited.",
        |h| Some(h.oldest_ms as f64 / 1000.0),
    ),
];

const CUSTODY: [Family<CustodyStatus>; 3] = [
    family(
        "hopmq_custody_messages",
        "gauge",
        "This manager's own messages kept until their destination manager confirms them.",
        |c| count(c.messages),
    ),
    family(
        "hopmq_custody_oldest_seconds",
        "gauge",
        "How long the oldest message kept for the destination has waited.",
        |c| c.oldest_ms.map(|ms| ms as f64 / 1000.0),
    ),
    family(
        "hopmq_custody_resent_total",
        "counter",
        "Copies sent again to the destination because its confirmation did not come.",
        |c| count(c.resent),
    ),
];

const LINKS: [Family<LinkStatus>; 14] = [
    family(
        "hopmq_link_up",
        "gauge",
        "1 while the channel to the neighbour is up.",
        |l| count(u64::from(l.state == "up")),
    ),
    family(
        "hopmq_link_routable",
        "gauge",
        "1 while routes may use the link (heard within the dead interval, not drained).",
        |l| count(u64::from(l.routing == "up")),
    ),
    family(
        "hopmq_link_rtt_seconds",
        "gauge",
        "Smoothed round-trip time of the channel to the neighbour.",
        |l| l.rtt_us.map(|us| us as f64 / 1e6),
    ),
    family(
        "hopmq_link_transmission_depth",
        "gauge",
        "Messages waiting for the neighbour, in flight included.",
        |l| count(l.transmission_depth),
    ),
    family(
        "hopmq_link_transmission_oldest_age_seconds",
        "gauge",
        "Age of the oldest message waiting for the neighbour.",
        |l| Some(l.transmission_oldest_age_ms.unwrap_or(0) as f64 / 1e3),
    ),
    family(
        "hopmq_link_messages_sent_total",
        "counter",
        "Messages sent to the neighbour (resends included).",
        |l| count(l.messages_sent),
    ),
    family(
        "hopmq_link_bytes_sent_total",
        "counter",
        "Body bytes sent to the neighbour.",
        |l| count(l.bytes_sent),
    ),
    family(
        "hopmq_link_messages_acked_total",
        "counter",
        "Messages the neighbour acknowledged.",
        |l| count(l.messages_acked),
    ),
    family(
        "hopmq_link_bytes_acked_total",
        "counter",
        "Body bytes the neighbour acknowledged.",
        |l| count(l.bytes_acked),
    ),
    family(
        "hopmq_link_messages_received_total",
        "counter",
        "Messages received from the neighbour and stored.",
        |l| count(l.messages_received),
    ),
    family(
        "hopmq_link_duplicates_dropped_total",
        "counter",
        "Resent messages recognised by id and not stored again.",
        |l| count(l.duplicates_dropped),
    ),
    family(
        "hopmq_link_early_batches_total",
        "counter",
        "Batches from the neighbour taken from an early copy, ahead of the stream.",
        |l| count(l.early_batches),
    ),
    family(
        "hopmq_link_publications_received_total",
        "counter",
        "Publications received from the neighbour (one copy each, whatever the managers beyond).",
        |l| count(l.publications_received),
    ),
    family(
        "hopmq_link_publications_sent_total",
        "counter",
        "Copies of publications given to the link (one per publication that needs it).",
        |l| count(l.publications_sent),
    ),
];

const STORE: [Family<JournalStats>; 5] = [
    family(
        "hopmq_store_segments",
        "gauge",
        "Journal segment files.",
        |j| count(j.segments.len() as u64),
    ),
    family(
        "hopmq_store_bytes",
        "gauge",
        "Journal bytes on disk.",
        |j| count(j.bytes_on_disk),
    ),
    family(
        "hopmq_store_commits_total",
        "counter",
        "Group commits.",
        |j| count(j.commits),
    ),
    family(
        "hopmq_store_records_total",
        "counter",
        "Records committed.",
        |j| count(j.records),
    ),
    family(
        "hopmq_store_last_batch_records",
        "gauge",
        "Records in the last group commit.",
        |j| count(j.batch_records_last),
    ),
];

/// The exposition text for one snapshot.
pub(crate) fn render(status: &Status, journal: &JournalStats) -> String {
    let mut out = Exposition::new(&status.manager);
    let queues = |q: &QueueStatus| format!("queue=\"{}\"", q.name);
    let links = |l: &LinkStatus| format!("neighbour=\"{}\"", l.neighbour);
    out.families(&MESSAGES, std::slice::from_ref(status), |_| None);
    out.families(&QUEUES, &status.queues, |q| Some(queues(q)));
    out.families(&PASSED_ON, std::slice::from_ref(status), |_| None);
    out.families(&LINKS, &status.links, |l| Some(links(l)));
    let destinations = |c: &CustodyStatus| format!("destination=\"{}\"", c.destination);
    out.families(&CUSTODY, &status.custody, |c| Some(destinations(c)));
    let origins = |h: &HeldStatus| format!("origin=\"{}\"", h.origin);
    out.families(&HELD, &status.held_for_order, |h| Some(origins(h)));
    out.families(&STORE, std::slice::from_ref(journal), |_| None);
    out.fsync_histogram(journal);
    out.text
}

/// The text being written, and the label every sample of this manager carries.
struct Exposition {
    text: String,
    manager: String,
}

impl Exposition {
    fn new(manager: &str) -> Self {
        Self {
            text: String::new(),
            manager: format!("manager=\"{manager}\""),
        }
    }

    /// Writes each family in turn, with one sample per source (labelled by `label`, if it
    /// gives one, after the manager's label).
    fn families<T>(
        &mut self,
        families: &[Family<T>],
        sources: &[T],
        label: impl Fn(&T) -> Option<String>,
    ) {
        for family in families {
            let _ = writeln!(
                self.text,
                "# HELP {name} {help}\n# TYPE {name} {kind}",
                name = family.name,
                help = family.help,
                kind = family.kind,
            );
            for source in sources {
                let Some(value) = (family.value)(source) else {
                    continue;
                };
                let labels = match label(source) {
                    Some(label) => format!("{{{},{label}}}", self.manager),
                    None => format!("{{{}}}", self.manager),
                };
                let _ = writeln!(self.text, "{}{labels} {value}", family.name);
            }
        }
    }

    /// fdatasync latency as a histogram: bucket i counts syncs under 2^i microseconds.
    fn fsync_histogram(&mut self, journal: &JournalStats) {
        let manager = &self.manager;
        let out = &mut self.text;
        let _ = writeln!(
            out,
            "# HELP hopmq_store_fsync_seconds fdatasync latency.\n# TYPE hopmq_store_fsync_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, count) in journal.fsync_micros_log2_buckets.iter().enumerate() {
            cumulative += count;
            let bound = if i + 1 == FSYNC_BUCKETS {
                "+Inf".to_owned()
            } else {
                format!("{}", (1u64 << i) as f64 / 1e6)
            };
            let _ = writeln!(
                out,
                "hopmq_store_fsync_seconds_bucket{{{manager},le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "hopmq_store_fsync_seconds_sum{{{manager}}} {}",
            journal.fsync_nanos_total as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "hopmq_store_fsync_seconds_count{{{manager}}} {}",
            journal.fsyncs
        );
    }
}

//! Prometheus metrics in the text exposition format, over a minimal HTTP/1.1 endpoint: every
//! request gets the current figures, whatever its path. Read-only; asks the core for a
//! snapshot and the journal for its counters.

use std::fmt::Write;
use std::time::Duration;

use hopmq::protocol::Status;
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
pub async fn serve(
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

/// A per-link metric: name, kind, help, and its value for a link.
type LinkMetric<'a> = (
    &'static str,
    &'static str,
    &'static str,
    &'a dyn Fn(&hopmq::protocol::LinkStatus) -> Option<f64>,
);

/// The exposition text for one snapshot.
pub fn render(status: &Status, journal: &JournalStats) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let manager = format!("manager=\"{}\"", status.manager);
    let one = |value: u64| vec![(format!("{{{manager}}}"), value as f64)];
    let per_queue = |value: fn(&hopmq::protocol::QueueStatus) -> u64| {
        status
            .queues
            .iter()
            .map(|q| {
                (
                    format!("{{{manager},queue=\"{}\"}}", q.name),
                    value(q) as f64,
                )
            })
            .collect::<Vec<_>>()
    };
    metric(
        "hopmq_messages_put_total",
        "counter",
        "Messages put since start.",
        &one(status.messages_put),
    );
    metric(
        "hopmq_messages_delivered_total",
        "counter",
        "Messages handed to applications since start.",
        &one(status.messages_delivered),
    );
    metric(
        "hopmq_queue_depth",
        "gauge",
        "Messages waiting in a queue.",
        &per_queue(|q| q.depth),
    );
    metric(
        "hopmq_queue_leased",
        "gauge",
        "Messages leased and not yet settled.",
        &per_queue(|q| q.leased),
    );
    metric(
        "hopmq_queue_bytes",
        "gauge",
        "Body bytes waiting in a queue.",
        &per_queue(|q| q.bytes),
    );
    // `None` leaves the link out (an RTT before the first connection).
    let per_link = |value: &dyn Fn(&hopmq::protocol::LinkStatus) -> Option<f64>| {
        status
            .links
            .iter()
            .filter_map(|l| {
                let labels = format!("{{{manager},neighbour=\"{}\"}}", l.neighbour);
                value(l).map(|v| (labels, v))
            })
            .collect::<Vec<_>>()
    };
    let count = |v: u64| Some(v as f64);
    metric(
        "hopmq_messages_forwarded_total",
        "counter",
        "Messages handed on to a neighbour and acknowledged, since start.",
        &one(status.messages_forwarded),
    );
    metric(
        "hopmq_messages_expired_total",
        "counter",
        "Messages dropped because they expired before reaching their queue.",
        &one(status.messages_expired),
    );
    let links: [LinkMetric<'_>; 11] = [
        (
            "hopmq_link_up",
            "gauge",
            "1 while the channel to the neighbour is up.",
            &|l| count(u64::from(l.state == "up")),
        ),
        (
            "hopmq_link_routable",
            "gauge",
            "1 while routes may use the link (heard within the dead interval, not drained).",
            &|l| count(u64::from(l.routing == "up")),
        ),
        (
            "hopmq_link_rtt_seconds",
            "gauge",
            "Smoothed round-trip time of the channel to the neighbour.",
            &|l| l.rtt_us.map(|us| us as f64 / 1e6),
        ),
        (
            "hopmq_link_transmission_depth",
            "gauge",
            "Messages waiting for the neighbour, in flight included.",
            &|l| count(l.transmission_depth),
        ),
        (
            "hopmq_link_transmission_oldest_age_seconds",
            "gauge",
            "Age of the oldest message waiting for the neighbour.",
            &|l| Some(l.transmission_oldest_age_ms.unwrap_or(0) as f64 / 1e3),
        ),
        (
            "hopmq_link_messages_sent_total",
            "counter",
            "Messages sent to the neighbour (resends included).",
            &|l| count(l.messages_sent),
        ),
        (
            "hopmq_link_bytes_sent_total",
            "counter",
            "Body bytes sent to the neighbour.",
            &|l| count(l.bytes_sent),
        ),
        (
            "hopmq_link_messages_acked_total",
            "counter",
            "Messages the neighbour acknowledged.",
            &|l| count(l.messages_acked),
        ),
        (
            "hopmq_link_bytes_acked_total",
            "counter",
            "Body bytes the neighbour acknowledged.",
            &|l| count(l.bytes_acked),
        ),
        (
            "hopmq_link_messages_received_total",
            "counter",
            "Messages received from the neighbour and stored.",
            &|l| count(l.messages_received),
        ),
        (
            "hopmq_link_duplicates_dropped_total",
            "counter",
            "Resent messages recognised by id and not stored again.",
            &|l| count(l.duplicates_dropped),
        ),
    ];
    for (name, kind, help, value) in links {
        metric(name, kind, help, &per_link(value));
    }
    metric(
        "hopmq_store_segments",
        "gauge",
        "Journal segment files.",
        &one(journal.segments.len() as u64),
    );
    metric(
        "hopmq_store_bytes",
        "gauge",
        "Journal bytes on disk.",
        &one(journal.bytes_on_disk),
    );
    metric(
        "hopmq_store_commits_total",
        "counter",
        "Group commits.",
        &one(journal.commits),
    );
    metric(
        "hopmq_store_records_total",
        "counter",
        "Records committed.",
        &one(journal.records),
    );
    metric(
        "hopmq_store_last_batch_records",
        "gauge",
        "Records in the last group commit.",
        &one(journal.batch_records_last),
    );
    // fdatasync latency as a histogram: bucket i counts syncs under 2^i microseconds.
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
    out
}

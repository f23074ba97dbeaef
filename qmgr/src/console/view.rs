//! The JSON shapes of the console's API (`/api/...`), built from what the core reports: pure
//! functions from a [`Status`], the queues' counters, the sampled rates and browsed messages
//! to serializable views. No I/O and no clock: `server` asks, this module shapes.
//!
//! Invariants: every view is bounded (a message body is cut at [`BODY_SHOWN_BYTES_MAX`], a
//! browse lists at most [`BROWSE_LIMIT_MAX`] messages), and field names are the API's contract
//! with the console's script and with operators' scripts: only ever added to, never renamed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hopmq::protocol::{
    DEAD_LETTER_QUEUE, DEAD_LETTER_REASON_HEADER, Delivery, LinkStatus, RefusedTopology, Status,
};
use hopmq_routing::linkstate::Load;
use serde::Serialize;

use super::history::Rates;
use super::network::route_tree;
use crate::manager::QueueCounters;
use crate::store::{FSYNC_BUCKETS, JournalStats};

/// The most body bytes a browsed message shows; its full length is reported beside.
pub(crate) const BODY_SHOWN_BYTES_MAX: usize = 4096;
/// The most messages one browse lists (a request asking for more gets this many).
pub(crate) const BROWSE_LIMIT_MAX: u32 = 100;
/// Messages a browse lists when the request does not say.
pub(crate) const BROWSE_LIMIT_DEFAULT: u32 = 20;

/// One local queue on the queues page: the core's figures and the sampled rates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct QueueView {
    pub(crate) name: String,
    pub(crate) depth: u64,
    pub(crate) leased: u64,
    pub(crate) bytes: u64,
    pub(crate) oldest_age_ms: Option<u64>,
    pub(crate) max_depth: u64,
    /// Messages that entered it since the manager started (puts, arrivals, lease returns).
    pub(crate) entered_total: u64,
    /// Messages handed out by gets since the manager started.
    pub(crate) taken_total: u64,
    /// Messages in per second over the last sampling interval.
    pub(crate) put_rate: f64,
    /// Messages out per second over the last sampling interval.
    pub(crate) get_rate: f64,
    /// Whether it is the dead-letter queue.
    pub(crate) dead_letter: bool,
}

/// `/api/queues`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct QueuesView {
    pub(crate) manager: String,
    pub(crate) queues: Vec<QueueView>,
}

/// The queues of `status`, with their counters and rates.
pub(crate) fn queues(
    status: &Status,
    counters: &[QueueCounters],
    rates: &BTreeMap<String, Rates>,
) -> QueuesView {
    let queues = status
        .queues
        .iter()
        .map(|q| {
            let counter = counters.iter().find(|c| c.name == q.name);
            let rate = rates.get(&q.name).copied().unwrap_or_default();
            QueueView {
                name: q.name.clone(),
                depth: q.depth,
                leased: q.leased,
                bytes: q.bytes,
                oldest_age_ms: q.oldest_age_ms,
                max_depth: q.max_depth,
                entered_total: counter.map_or(0, |c| c.entered),
                taken_total: counter.map_or(0, |c| c.taken),
                put_rate: rate.put_per_sec,
                get_rate: rate.get_per_sec,
                dead_letter: q.name == DEAD_LETTER_QUEUE,
            }
        })
        .collect();
    QueuesView {
        manager: status.manager.clone(),
        queues,
    }
}

/// A message body as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct BodyView {
    /// `text` (valid UTF-8, shown as is) or `hex`.
    pub(crate) encoding: &'static str,
    /// The first [`BODY_SHOWN_BYTES_MAX`] bytes, as text or hex digits.
    pub(crate) shown: String,
    /// The body's whole length in bytes.
    pub(crate) length: usize,
    /// Whether `shown` is only the start.
    pub(crate) truncated: bool,
}

/// One hop of a message's trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct TraceView {
    pub(crate) manager: String,
    pub(crate) at_ms: u64,
}

/// One browsed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct MessageView {
    pub(crate) id: String,
    pub(crate) priority: u8,
    pub(crate) origin: String,
    pub(crate) persistent: bool,
    pub(crate) delivery_count: u32,
    pub(crate) expires_at_ms: Option<u64>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) reply_to: Option<String>,
    pub(crate) headers: BTreeMap<String, String>,
    /// Why it was dead-lettered (the `hopmq.dead_letter_reason` header), if it was.
    pub(crate) dead_letter_reason: Option<String>,
    pub(crate) trace: Vec<TraceView>,
    pub(crate) body: BodyView,
}

/// `/api/queues/{name}/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct MessagesView {
    pub(crate) queue: String,
    pub(crate) limit: u32,
    pub(crate) messages: Vec<MessageView>,
}

/// The browse limit in force for a request's `limit`.
pub(crate) fn browse_limit(asked: Option<u32>) -> u32 {
    asked
        .unwrap_or(BROWSE_LIMIT_DEFAULT)
        .clamp(1, BROWSE_LIMIT_MAX)
}

/// The browsed `deliveries` of `queue`, at most `limit`, bodies cut.
pub(crate) fn messages(queue: &str, limit: u32, deliveries: &[Delivery]) -> MessagesView {
    let messages = deliveries
        .iter()
        .take(limit as usize)
        .map(|d| MessageView {
            id: d.id.to_string(),
            priority: d.priority,
            origin: d.origin.clone(),
            persistent: d.persistent,
            delivery_count: d.delivery_count,
            expires_at_ms: d.expires_at_ms,
            correlation_id: d.correlation_id.clone(),
            reply_to: d.reply_to.clone(),
            headers: d.headers.clone(),
            dead_letter_reason: d.headers.get(DEAD_LETTER_REASON_HEADER).cloned(),
            trace: d
                .trace
                .iter()
                .map(|t| TraceView {
                    manager: t.manager.clone(),
                    at_ms: t.at_ms,
                })
                .collect(),
            body: body(&d.body),
        })
        .collect();
    MessagesView {
        queue: queue.to_owned(),
        limit,
        messages,
    }
}

/// A body as text if it is UTF-8 (cut on a character boundary), else as hex.
pub(crate) fn body(bytes: &[u8]) -> BodyView {
    let length = bytes.len();
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let mut end = text.len().min(BODY_SHOWN_BYTES_MAX);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            BodyView {
                encoding: "text",
                shown: text[..end].to_owned(),
                length,
                truncated: end < length,
            }
        }
        Err(_) => {
            let shown_bytes = &bytes[..length.min(BODY_SHOWN_BYTES_MAX)];
            let mut shown = String::with_capacity(shown_bytes.len() * 2);
            for byte in shown_bytes {
                let _ = write!(shown, "{byte:02x}");
            }
            BodyView {
                encoding: "hex",
                shown,
                length,
                truncated: shown_bytes.len() < length,
            }
        }
    }
}

/// One manager on the network map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ManagerView {
    pub(crate) name: String,
    /// Whether it is the manager serving this console.
    pub(crate) local: bool,
    /// `up` (reachable by the routes in force), `down` (unreachable), `drained` (every link
    /// drained) or `unknown` (no route entry for it).
    pub(crate) state: &'static str,
    pub(crate) next_hop: Option<String>,
    pub(crate) cost: Option<u64>,
    /// Its local queues and their total depth: this manager's live, another's as its last
    /// advertisement said (renewed every 5 s at most), unknown until one is heard.
    pub(crate) queues: Option<u64>,
    pub(crate) depth: Option<u64>,
}

/// One link on the network map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct NetworkLinkView {
    /// `A-B`, its ends in name order.
    pub(crate) id: String,
    pub(crate) between: (String, String),
    pub(crate) cost: u32,
    /// `up`, `down` or `drained`, from link-state.
    pub(crate) state: String,
    pub(crate) reported_by: Vec<String>,
    /// Whether a route in force from this manager uses it.
    pub(crate) in_route_tree: bool,
    /// Messages waiting for the neighbour: known for this manager's own links only.
    pub(crate) waiting: Option<u64>,
    /// Messages sent per second over the last sampling interval (own links only).
    pub(crate) send_rate: Option<f64>,
    pub(crate) rtt_us: Option<u64>,
}

/// `/api/network`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct NetworkView {
    pub(crate) manager: String,
    pub(crate) topology_version: String,
    pub(crate) managers: Vec<ManagerView>,
    pub(crate) links: Vec<NetworkLinkView>,
    /// The last topology edit refused, with its error.
    pub(crate) refused: Option<RefusedTopology>,
}

/// The network as `status` knows it, with the route tree from its manager.
/// `loads`: what the other managers last advertised they hold, by name.
pub(crate) fn network(
    status: &Status,
    link_rates: &BTreeMap<String, f64>,
    loads: &BTreeMap<String, Load>,
) -> NetworkView {
    let me = status.manager.as_str();
    let tree = route_tree(me, &status.network, &status.routes);
    let own = |(a, b): &(String, String)| -> Option<&LinkStatus> {
        let neighbour = if a == me {
            b
        } else if b == me {
            a
        } else {
            return None;
        };
        status.links.iter().find(|l| &l.neighbour == neighbour)
    };
    let links = status
        .network
        .iter()
        .map(|link| {
            let mine = own(&link.between);
            NetworkLinkView {
                id: format!("{}-{}", link.between.0, link.between.1),
                between: link.between.clone(),
                cost: link.cost,
                state: link.state.clone(),
                reported_by: link.reported_by.clone(),
                in_route_tree: tree.contains(&link.between),
                waiting: mine.map(|l| l.transmission_depth),
                send_rate: mine.and_then(|l| link_rates.get(&l.neighbour).copied()),
                rtt_us: mine.and_then(|l| l.rtt_us),
            }
        })
        .collect();
    NetworkView {
        manager: me.to_owned(),
        topology_version: status.topology.version.clone(),
        managers: managers(status, loads),
        links,
        refused: status.topology.refused.clone(),
    }
}

fn managers(status: &Status, loads: &BTreeMap<String, Load>) -> Vec<ManagerView> {
    let me = status.manager.as_str();
    let mut names = status.topology.managers.clone();
    if !names.iter().any(|n| n == me) {
        names.push(me.to_owned());
    }
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let local = name == me;
            let route = status.routes.iter().find(|r| r.destination == name);
            let ends: Vec<_> = status
                .network
                .iter()
                .filter(|l| l.between.0 == name || l.between.1 == name)
                .collect();
            let drained = !ends.is_empty() && ends.iter().all(|l| l.state == "drained");
            let state = match route {
                _ if local => "up",
                _ if drained => "drained",
                Some(route) if route.next_hop.is_some() => "up",
                Some(_) => "down",
                None => "unknown",
            };
            ManagerView {
                local,
                state,
                next_hop: route.and_then(|r| r.next_hop.clone()),
                cost: if local {
                    Some(0)
                } else {
                    route.and_then(|r| r.cost)
                },
                // This manager's own, live; the others' as they last advertised them.
                queues: if local {
                    Some(status.queues.len() as u64)
                } else {
                    loads.get(&name).map(|l| l.queues)
                },
                depth: if local {
                    Some(status.queues.iter().map(|q| q.depth).sum())
                } else {
                    loads.get(&name).map(|l| l.depth)
                },
                name,
            }
        })
        .collect()
}

/// The journal on the manager page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct StoreView {
    pub(crate) segments: u64,
    pub(crate) bytes: u64,
    pub(crate) commits: u64,
    pub(crate) records: u64,
    pub(crate) last_batch_records: u64,
    pub(crate) sync: String,
    pub(crate) fsyncs: u64,
    pub(crate) fsync_seconds_total: f64,
    pub(crate) fsync_seconds_max: f64,
    /// fdatasync latency: bucket i counts syncs under 2^i microseconds (the last: the rest).
    pub(crate) fsync_histogram: Vec<FsyncBucket>,
}

/// One bucket of the fsync latency histogram.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct FsyncBucket {
    /// Its upper bound in microseconds; `None` for the last, unbounded one.
    pub(crate) below_us: Option<u64>,
    pub(crate) count: u64,
}

/// `/api/manager`: what the manager page shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ManagerPage {
    pub(crate) manager: String,
    pub(crate) version: String,
    pub(crate) uptime_secs: u64,
    pub(crate) messages_put: u64,
    pub(crate) messages_delivered: u64,
    pub(crate) messages_forwarded: u64,
    pub(crate) store: StoreView,
    pub(crate) links: Vec<LinkStatus>,
    /// The settings in force, secrets left out.
    pub(crate) settings: serde_json::Value,
    /// Whether the API needs a bearer token.
    pub(crate) token_required: bool,
}

/// The manager page for `status`, the journal's figures and the settings' JSON.
pub(crate) fn manager_page(
    status: &Status,
    journal: &JournalStats,
    settings: serde_json::Value,
    token_required: bool,
) -> ManagerPage {
    let fsync_histogram = journal
        .fsync_micros_log2_buckets
        .iter()
        .enumerate()
        .map(|(i, &count)| FsyncBucket {
            below_us: (i + 1 < FSYNC_BUCKETS).then_some(1u64 << i),
            count,
        })
        .collect();
    ManagerPage {
        manager: status.manager.clone(),
        version: status.version.clone(),
        uptime_secs: status.uptime_secs,
        messages_put: status.messages_put,
        messages_delivered: status.messages_delivered,
        messages_forwarded: status.messages_forwarded,
        store: StoreView {
            segments: journal.segments.len() as u64,
            bytes: journal.bytes_on_disk,
            commits: journal.commits,
            records: journal.records,
            last_batch_records: journal.batch_records_last,
            sync: status.store.sync.clone(),
            fsyncs: journal.fsyncs,
            fsync_seconds_total: journal.fsync_nanos_total as f64 / 1e9,
            fsync_seconds_max: journal.fsync_nanos_max as f64 / 1e9,
            fsync_histogram,
        },
        links: status.links.clone(),
        settings,
        token_required,
    }
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;

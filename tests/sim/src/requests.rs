//! Request/reply in the workload (`--requests`): requesters, connections of their own on any
//! manager, send `Operation::Request`s to one service queue, `svc`, homed on a manager chosen
//! per run; servers, connections on that home, take the requests with leased gets and answer
//! each with `Operation::Reply` (the request's body behind [`REPLY_MARK`]), now and then
//! late, never (the lease runs out, and another server takes the request), with a nack or an
//! ack without a reply, or by dying with requests leased. Some misbehave on purpose: the
//! same reply sent twice at once, a reply followed by a nack of its lease, a server that
//! leaves right after replying. Requesters leave now and then while they wait (some right
//! after asking, some while their manager is writing, as their reply may be handed to them),
//! so their replies come to nobody.
//!
//! Invariants: every connection here belongs to one incarnation of its manager and goes with
//! it (a crash drops them all, and what they asked is told to the checker as abandoned);
//! every answer a connection reads is matched to what it asked, and an answer to nothing
//! asked is a violation (a request answered twice); in a step, every answer is read before
//! anything is sent, so the checker's order of events is the cores' (see
//! [`crate::checker`]'s conversations). Once faults stop, servers answer everything at once
//! and keep a get waiting, and each manager gets a requester that stays and sends one request
//! with a long timeout: those must be answered with their replies.

use std::collections::BTreeMap;

use hopmq::protocol::{Delivery, Operation, OutgoingMessage, Reply, Selector, ServerFrame};
use qmgr::manager::Command;

use crate::Sim;
use crate::checker::{REPLY_MARK, REQUEST_MARK};

/// The service queue's name.
const SERVICE_QUEUE: &str = "svc";
/// Requesters and servers per manager at most (those that stay once faults stop aside).
const CONNECTIONS_MAX: usize = 2;
/// Requests one requester has outstanding at most: more than one, so that a reply queue
/// holds replies for several requests and must tell them apart by correlation id.
const OUTSTANDING_MAX: usize = 2;
/// The timeout of the requests sent once faults stop: far longer than a reply takes then,
/// and within the run's liveness bound.
const QUIET_TIMEOUT_MS: u64 = 90_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Requester,
    Server,
}

/// What a connection asked, by request id.
#[derive(Debug)]
enum Asked {
    Request(String),
    Get,
    /// A reply to this request, persistent or not.
    Reply(String, bool),
    Settle,
    /// A get from another connection's reply queue: it must be refused.
    Snoop(String),
}

/// What a server does with a request it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Answer,
    /// A buggy or retrying server: the same reply sent twice at once (one must be refused).
    AnswerTwice,
    /// Answers, then nacks the same lease while the reply is being written (the nack must
    /// not bring the request back).
    AnswerThenNack,
    /// Answers, and its connection ends before the reply is written.
    AnswerAndDie,
    /// Nothing: its lease runs out and the request goes back.
    Ignore,
    Nack,
    /// Acks it without a reply: the request times out.
    Drop,
}

/// A request a server holds leased.
#[derive(Debug)]
struct Held {
    lease: u64,
    key: String,
    /// When it acts on it.
    at_ms: u64,
    plan: Plan,
}

#[derive(Debug)]
struct Connection {
    node: usize,
    /// The connection's id at its manager.
    connection: u64,
    role: Role,
    /// Made once faults stopped: it never goes.
    steady: bool,
    /// A requester that leaves at a moment its manager is writing while it waits: now and
    /// then that is while its reply is taken for it, which must then be dead-lettered, not
    /// lost.
    fragile: bool,
    frames: qmgr::manager::outbox::Outgoing,
    next_request: u64,
    asked: BTreeMap<u64, Asked>,
    held: Vec<Held>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Conversations {
    /// The service queue's home; `None` without `--requests`.
    home: Option<usize>,
    /// By the simulator's id for them.
    connections: BTreeMap<u64, Connection>,
    next_id: u64,
    /// Requests made so far (for their keys).
    count: u64,
    /// The reply queue of the last request a server was handed, as (its manager, its name).
    seen_reply_queue: Option<(usize, String)>,
}

impl Conversations {
    /// Request/reply in a run whose service queue is homed on manager `home`.
    pub(crate) fn new(home: usize) -> Self {
        Self {
            home: Some(home),
            ..Self::default()
        }
    }

    /// Whether the run has requests.
    pub(crate) fn active(&self) -> bool {
        self.home.is_some()
    }

    fn of(&self, node: usize, role: Role) -> Vec<u64> {
        self.connections
            .iter()
            .filter(|(_, c)| c.node == node && c.role == role && !c.steady)
            .map(|(&id, _)| id)
            .collect()
    }
}

impl Sim {
    /// One random request/reply action.
    pub(crate) fn random_conversation(&mut self) {
        let Some(home) = self.conversations.home else {
            return;
        };
        match self.rng.below(100) {
            0..=44 => self.random_request(),
            45..=79 => {
                let servers = self.conversations.of(home, Role::Server);
                let id = if servers.is_empty() {
                    self.open_conversation(home, Role::Server, false)
                } else {
                    Some(servers[self.rng.index(servers.len())])
                };
                if let Some(id) = id {
                    self.serve(id, false);
                }
            }
            80..=87 => {
                // A server dies, mostly one holding requests.
                let servers = self.conversations.of(home, Role::Server);
                let holding: Vec<u64> = servers
                    .iter()
                    .copied()
                    .filter(|id| !self.conversations.connections[id].held.is_empty())
                    .collect();
                let from = if holding.is_empty() { servers } else { holding };
                if !from.is_empty() {
                    let id = from[self.rng.index(from.len())];
                    self.close_conversation(id);
                }
            }
            88..=89 => self.snoop(),
            90..=93 => {
                // A requester goes while it waits.
                let node = self.rng.index(self.nodes.len());
                let requesters = self.conversations.of(node, Role::Requester);
                if !requesters.is_empty() {
                    let id = requesters[self.rng.index(requesters.len())];
                    self.close_conversation(id);
                }
            }
            _ => {
                if self.conversations.of(home, Role::Server).len() < CONNECTIONS_MAX {
                    self.open_conversation(home, Role::Server, false);
                }
            }
        }
    }

    /// A request from a random manager, on one of its requesters or a new one.
    fn random_request(&mut self) {
        let node = self.rng.index(self.nodes.len());
        let requesters = self.conversations.of(node, Role::Requester);
        let id = if requesters.len() < CONNECTIONS_MAX && self.rng.chance(300) {
            self.open_conversation(node, Role::Requester, false)
        } else if requesters.is_empty() {
            None
        } else {
            Some(requesters[self.rng.index(requesters.len())])
        };
        if let Some(id) = id {
            let timeout_ms = self.rng.between(300, 5_000);
            self.send_request(id, timeout_ms);
            // Now and then it leaves at once, before its request is even durable: the reply
            // comes to nobody.
            if self.rng.chance(30) {
                self.close_conversation(id);
            }
        }
    }

    /// A requester on the manager of a reply queue a server saw tries to take from it: reply
    /// queues are private to their connection, so the get must be refused.
    fn snoop(&mut self) {
        let Some((node, queue)) = self.conversations.seen_reply_queue.clone() else {
            return;
        };
        let requesters = self.conversations.of(node, Role::Requester);
        if requesters.is_empty() {
            return;
        }
        let id = requesters[self.rng.index(requesters.len())];
        let operation = Operation::Get {
            queue: queue.clone(),
            timeout_ms: 0,
            max: 1,
            selector: Selector::default(),
            lease_ms: None,
        };
        self.digest.add(&format!("snoop #{id} {queue}"));
        self.send(id, operation, Asked::Snoop(queue));
    }

    /// Requester `id` sends a request with a fresh body.
    fn send_request(&mut self, id: u64, timeout_ms: u64) {
        let Some(home) = self.conversations.home else {
            return;
        };
        let Some(connection) = self.conversations.connections.get(&id) else {
            return;
        };
        if connection.asked.len() >= OUTSTANDING_MAX {
            return;
        }
        let (node, steady) = (connection.node, connection.steady);
        self.conversations.count += 1;
        let manager = self.nodes[node].name.to_string();
        let key = format!("{REQUEST_MARK}{manager}-{}", self.conversations.count);
        // Half choose their correlation id; the others get the manager's.
        let correlation = self.rng.chance(500).then(|| format!("c-{key}"));
        let persistent = steady || !self.rng.chance(100);
        self.checker.request_sent(
            &key,
            (&manager, id),
            &format!("m{home}"),
            correlation.clone(),
            steady,
        );
        self.digest
            .add(&format!("request {node} #{id} {key} {timeout_ms}"));
        let operation = Operation::Request {
            address: format!("{SERVICE_QUEUE}@m{home}"),
            message: OutgoingMessage {
                body: key.clone().into_bytes(),
                persistent,
                correlation_id: correlation,
                ..OutgoingMessage::default()
            },
            timeout_ms,
        };
        self.send(id, operation, Asked::Request(key));
    }

    /// Server `id` asks for requests, unless it already waits for some.
    fn serve(&mut self, id: u64, quiet: bool) {
        let Some(connection) = self.conversations.connections.get(&id) else {
            return;
        };
        if connection.asked.values().any(|a| matches!(a, Asked::Get)) {
            return;
        }
        let (timeout_ms, max, lease_ms) = if quiet {
            (1_000, 8, 20_000)
        } else {
            let timeout_ms = self.rng.between(0, 1_000);
            (
                timeout_ms,
                self.rng.between(1, 3) as u32,
                self.rng.between(300, 4_000),
            )
        };
        let operation = Operation::Get {
            queue: SERVICE_QUEUE.to_owned(),
            timeout_ms,
            max,
            selector: Selector::default(),
            lease_ms: Some(lease_ms),
        };
        self.send(id, operation, Asked::Get);
    }

    /// A new requester or server on manager `node`, if it runs.
    fn open_conversation(&mut self, node: usize, role: Role, steady: bool) -> Option<u64> {
        self.nodes[node].core.as_ref()?;
        self.nodes[node].next_connection += 1;
        let connection = self.nodes[node].next_connection;
        let (frames, outgoing) = qmgr::manager::outbox::channel();
        self.conversations.next_id += 1;
        let id = self.conversations.next_id;
        self.conversations.connections.insert(
            id,
            Connection {
                node,
                connection,
                role,
                steady,
                fragile: role == Role::Requester && !steady && self.rng.chance(100),
                frames: outgoing,
                next_request: 0,
                asked: BTreeMap::new(),
                held: Vec::new(),
            },
        );
        self.digest
            .add(&format!("connect {node} #{id} {role:?} as {connection}"));
        self.handle(
            node,
            Command::Connected {
                connection,
                frames,
                uid: None,
            },
        );
        Some(id)
    }

    /// Connection `id` closes.
    fn close_conversation(&mut self, id: u64) {
        let Some(connection) = self.conversations.connections.remove(&id) else {
            return;
        };
        self.digest.add(&format!("disconnect #{id}"));
        let (node, closed) = (connection.node, connection.connection);
        self.abandon(connection);
        self.handle(node, Command::Disconnected { connection: closed });
    }

    /// Manager `node` crashed: its connections are gone with it.
    pub(crate) fn conversations_crashed(&mut self, node: usize) {
        let ids: Vec<u64> = self
            .conversations
            .connections
            .iter()
            .filter(|(_, c)| c.node == node)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            if let Some(connection) = self.conversations.connections.remove(&id) {
                self.abandon(connection);
            }
        }
    }

    /// What a connection that went had asked will never be answered.
    fn abandon(&mut self, connection: Connection) {
        for asked in connection.asked.into_values() {
            match asked {
                Asked::Request(key) => self.checker.request_abandoned(&key),
                // Its reply may have been stored or not: the checker counts what turns up.
                Asked::Reply(..) | Asked::Get | Asked::Settle | Asked::Snoop(_) => {}
            }
        }
    }

    /// Sends `operation` on connection `id`.
    fn send(&mut self, id: u64, operation: Operation, asked: Asked) {
        let Some(connection) = self.conversations.connections.get_mut(&id) else {
            return;
        };
        connection.next_request += 1;
        let request = connection.next_request;
        let (node, at) = (connection.node, connection.connection);
        connection.asked.insert(request, asked);
        self.handle(
            node,
            Command::Request {
                connection: at,
                id: request,
                operation,
            },
        );
    }

    /// Every step: the connections read their answers, then servers act on what they hold
    /// (all of it at once, and keep a get waiting, once faults stopped).
    pub(crate) fn converse(&mut self, faults: bool) {
        if self.conversations.home.is_none() {
            return;
        }
        let ids: Vec<u64> = self.conversations.connections.keys().copied().collect();
        for &id in &ids {
            self.read_conversation(id, faults);
        }
        for &id in &ids {
            let Some(connection) = self.conversations.connections.get(&id) else {
                continue;
            };
            let waits = connection
                .asked
                .values()
                .any(|a| matches!(a, Asked::Request(_)));
            let writing = self.nodes[connection.node].disk.pending() > 0;
            if connection.fragile && waits && writing && self.rng.chance(100) {
                self.close_conversation(id);
            }
        }
        for id in ids {
            self.act(id, faults);
            let server = self.conversations.connections.get(&id);
            if !faults && server.is_some_and(|c| c.role == Role::Server) {
                self.serve(id, true);
            }
        }
    }

    /// Faults stop: a server that stays on the service queue's home, and on every manager a
    /// requester that stays, sending one request that must be answered.
    pub(crate) fn conversations_quiet(&mut self) {
        let Some(home) = self.conversations.home else {
            return;
        };
        self.open_conversation(home, Role::Server, true);
        for node in 0..self.nodes.len() {
            if let Some(id) = self.open_conversation(node, Role::Requester, true) {
                self.send_request(id, QUIET_TIMEOUT_MS);
            }
        }
    }

    /// Server `id` acts on the requests it holds whose time came.
    fn act(&mut self, id: u64, faults: bool) {
        let now_ms = self.now_ms;
        let Some(connection) = self.conversations.connections.get_mut(&id) else {
            return;
        };
        let (due, kept): (Vec<Held>, Vec<Held>) = std::mem::take(&mut connection.held)
            .into_iter()
            .partition(|held| held.at_ms <= now_ms || !faults);
        connection.held = kept;
        let mut dies = false;
        for held in due {
            let plan = if faults { held.plan } else { Plan::Answer };
            let leases = vec![held.lease];
            match plan {
                Plan::Answer => self.send_reply(id, &held, faults),
                Plan::AnswerTwice => {
                    self.send_reply(id, &held, faults);
                    self.send_reply(id, &held, faults);
                }
                Plan::AnswerThenNack => {
                    self.send_reply(id, &held, faults);
                    self.send(id, Operation::Nack { leases }, Asked::Settle);
                }
                Plan::AnswerAndDie => {
                    self.send_reply(id, &held, faults);
                    dies = true;
                }
                Plan::Ignore => {}
                Plan::Nack => self.send(id, Operation::Nack { leases }, Asked::Settle),
                Plan::Drop => self.send(id, Operation::Ack { leases }, Asked::Settle),
            }
        }
        if dies {
            self.close_conversation(id);
        }
    }

    /// Server `id` replies to the request it holds as `held`.
    fn send_reply(&mut self, id: u64, held: &Held, faults: bool) {
        let persistent = !faults || !self.rng.chance(50);
        self.checker.reply_sent(&held.key);
        self.digest.add(&format!("reply #{id} {}", held.key));
        let operation = Operation::Reply {
            lease: held.lease,
            message: OutgoingMessage {
                body: format!("{REPLY_MARK}{}", held.key).into_bytes(),
                persistent,
                ..OutgoingMessage::default()
            },
        };
        self.send(id, operation, Asked::Reply(held.key.clone(), persistent));
    }

    /// Reads what connection `id` was sent.
    fn read_conversation(&mut self, id: u64, faults: bool) {
        loop {
            let Some(connection) = self.conversations.connections.get_mut(&id) else {
                return;
            };
            let Ok(item) = connection.frames.try_recv() else {
                return;
            };
            let frame = match crate::node::reply_frame(item) {
                Ok(Some(frame)) => frame,
                Ok(None) => continue,
                Err(violation) => {
                    self.checker.violation(violation);
                    continue;
                }
            };
            let ServerFrame::Reply {
                id: request,
                result,
            } = frame
            else {
                continue;
            };
            let Some(asked) = connection.asked.remove(&request) else {
                self.checker.violation(format!(
                    "connection #{id} was answered twice (or unasked) for its request {request}"
                ));
                continue;
            };
            self.answered(id, asked, result, faults);
        }
    }

    fn answered(
        &mut self,
        id: u64,
        asked: Asked,
        result: Result<Reply, hopmq::ApiError>,
        faults: bool,
    ) {
        match (asked, result) {
            (Asked::Request(key), Ok(Reply::Messages(messages))) => {
                self.digest
                    .add(&format!("answer #{id} {key} {}", messages.len()));
                self.checker.request_answered(&key, id, &messages);
            }
            (Asked::Request(key), Err(error)) => {
                self.digest.add(&format!("refused #{id} {key} {error}"));
                self.checker.request_refused(&key);
            }
            (Asked::Get, Ok(Reply::Messages(deliveries))) => {
                for delivery in deliveries {
                    self.handed(id, delivery, faults);
                }
            }
            (Asked::Reply(key, persistent), result) => {
                let accepted = matches!(result, Ok(Reply::Put(ref ids)) if ids.len() == 1);
                self.digest.add(&format!("replied #{id} {key} {accepted}"));
                if let Ok(other) = &result {
                    if !accepted {
                        let violation = format!("a reply to {key} was answered {other:?}");
                        self.checker.violation(violation);
                    }
                }
                self.checker.reply_answered(&key, accepted, persistent);
            }
            (Asked::Request(key), Ok(other)) => {
                let violation = format!("request {key} was answered {other:?}");
                self.checker.violation(violation);
            }
            (Asked::Snoop(queue), Err(error)) => {
                self.digest
                    .add(&format!("snoop #{id} {queue} refused: {error}"));
            }
            (Asked::Snoop(queue), Ok(Reply::Messages(taken))) if !taken.is_empty() => {
                let violation = format!("connection #{id} took from reply queue {queue}");
                self.checker.violation(violation);
            }
            (Asked::Get | Asked::Settle | Asked::Snoop(_), _) => {}
        }
    }

    /// Server `id` was handed `delivery`: it plans what to do with it.
    fn handed(&mut self, id: u64, delivery: Delivery, faults: bool) {
        let key = String::from_utf8_lossy(&delivery.body).into_owned();
        if !key.starts_with(REQUEST_MARK) {
            let violation = format!("a server was handed {key:?}, not a request");
            self.checker.violation(violation);
            return;
        }
        self.digest.add(&format!("served #{id} {key}"));
        self.checker.request_served(&key, &delivery);
        let reply_queue = delivery
            .reply_to
            .as_deref()
            .and_then(|to| to.split_once('@'));
        let node = reply_queue.and_then(|(_, m)| m.strip_prefix('m')?.parse::<usize>().ok());
        if let (Some((queue, _)), Some(node)) = (reply_queue, node) {
            self.conversations.seen_reply_queue = Some((node, queue.to_owned()));
        }
        let Some(lease) = delivery.lease else {
            return;
        };
        let plan = match self.rng.below(100) {
            _ if !faults => Plan::Answer,
            0..=76 => Plan::Answer,
            77..=79 => Plan::AnswerTwice,
            80..=82 => Plan::AnswerThenNack,
            83..=84 => Plan::AnswerAndDie,
            85..=91 => Plan::Ignore,
            92..=96 => Plan::Nack,
            _ => Plan::Drop,
        };
        let at_ms = self.now_ms + self.rng.between(0, 1_500);
        if let Some(connection) = self.conversations.connections.get_mut(&id) {
            connection.held.push(Held {
                lease,
                key,
                at_ms,
                plan,
            });
        }
    }
}

//! The simulated network between channel endpoints.
//!
//! Each connection carries one ordered stream each way, as a QUIC stream does: frames arrive
//! in order after a random delay, or not at all once the connection is cut; and, more
//! hostile than QUIC, now and then a frame comes twice or overtakes the one before it. A
//! quarter of the batches also come as an early copy (a datagram beside the stream), half of
//! those twice (the sender repeats a copy with its next write's), each after a delay of its
//! own, so before or after the stream's copy, or not at all. A cut (a partition, a flap, a
//! crashed peer) reaches each end as `ChannelClosed` after a delay (an idle timeout, or at
//! once for a close the other end sent), and the frames still in flight are lost. Redialling follows the driver's rule: the manager with the link dials its
//! neighbour, again and again with a backoff, while no connection of its own is up.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use qmgr::channel::connection::{CHANNEL_FRAMES_MAX, Channel, ChannelOut};
use qmgr::channel::frame::{Batch, ChannelFrame};
use qmgr::manager::{ChannelDirection, Command};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use crate::Sim;
use crate::rng::Rng;

/// One connection: `dialler` sends on it, `acceptor` answers.
#[derive(Debug)]
struct Connection {
    dialler: usize,
    acceptor: usize,
    /// The connection's id at the dialler and at the acceptor.
    ids: (u64, u64),
    /// What each core queued for the other: the dialler's frames, the acceptor's (a close
    /// queued is its goodbye frame, the end itself comes when the core drops the channel).
    from_dialler: mpsc::Receiver<ChannelOut>,
    from_acceptor: mpsc::Receiver<ChannelOut>,
    /// Frames in flight, with when they arrive.
    to_acceptor: VecDeque<(u64, ChannelFrame)>,
    to_dialler: VecDeque<(u64, ChannelFrame)>,
    /// Early copies of the dialler's batches in flight, with when they arrive, in no order.
    early: Vec<(u64, Batch)>,
    /// When both ends learn it is gone.
    close_at: Option<u64>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Network {
    connections: BTreeMap<u64, Connection>,
    /// Links cut by a partition, as (lower index, higher index).
    blocked: BTreeSet<(usize, usize)>,
    /// When a dialler may try again.
    next_dial_ms: BTreeMap<(usize, usize), u64>,
    next_id: u64,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Network {
    /// Cuts the link between `a` and `b`; false if it was cut already.
    pub(crate) fn block(&mut self, a: usize, b: usize) -> bool {
        self.blocked.insert(pair(a, b))
    }

    pub(crate) fn unblock(&mut self, a: usize, b: usize) {
        self.blocked.remove(&pair(a, b));
    }

    pub(crate) fn blocked(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.blocked.iter().copied()
    }

    pub(crate) fn heal_all(&mut self) {
        self.blocked.clear();
    }

    fn is_blocked(&self, a: usize, b: usize) -> bool {
        self.blocked.contains(&pair(a, b))
    }

    /// Every connection between `a` and `b` ends at `close_at`.
    pub(crate) fn close_between(&mut self, a: usize, b: usize, close_at: u64) {
        for connection in self.connections.values_mut() {
            if pair(connection.dialler, connection.acceptor) == pair(a, b) {
                connection.close_at =
                    Some(connection.close_at.map_or(close_at, |c| c.min(close_at)));
            }
        }
    }

    /// Connection `id` ends at `close_at`.
    pub(crate) fn close(&mut self, id: u64, close_at: u64) {
        if let Some(connection) = self.connections.get_mut(&id) {
            connection.close_at = Some(connection.close_at.map_or(close_at, |c| c.min(close_at)));
        }
    }

    /// Manager `index` died: what was on its way to it is lost, and its peers notice at
    /// `close_at`.
    pub(crate) fn crashed(&mut self, index: usize, close_at: u64) {
        for connection in self.connections.values_mut() {
            if connection.dialler == index || connection.acceptor == index {
                connection.close_at =
                    Some(connection.close_at.map_or(close_at, |c| c.min(close_at)));
                if connection.dialler == index {
                    connection.to_dialler.clear();
                } else {
                    connection.to_acceptor.clear();
                    connection.early.clear();
                }
            }
        }
    }

    pub(crate) fn random_connection(&mut self, rng: &mut Rng) -> Option<u64> {
        let ids: Vec<u64> = self.connections.keys().copied().collect();
        (!ids.is_empty()).then(|| ids[rng.index(ids.len())])
    }
}

impl Sim {
    /// Moves every connection's frames: what the cores queued goes on the wire, what is due
    /// arrives, and connections whose end came are closed at both ends.
    pub(crate) fn move_frames(&mut self) {
        let ids: Vec<u64> = self.network.connections.keys().copied().collect();
        for id in ids {
            self.pick_up(id);
            self.deliver(id);
        }
    }

    /// Takes the frames the cores queued on connection `id`.
    fn pick_up(&mut self, id: u64) {
        let now_ms = self.now_ms;
        let Some(connection) = self.network.connections.get_mut(&id) else {
            return;
        };
        let blocked = self
            .network
            .blocked
            .contains(&pair(connection.dialler, connection.acceptor));
        for (receiver, queue, mut early) in [
            (
                &mut connection.from_dialler,
                &mut connection.to_acceptor,
                Some(&mut connection.early),
            ),
            (
                &mut connection.from_acceptor,
                &mut connection.to_dialler,
                None,
            ),
        ] {
            loop {
                match receiver.try_recv().map(ChannelOut::into_frame) {
                    Ok(frame) => {
                        if blocked {
                            continue;
                        }
                        let after = queue.back().map_or(0, |(at, _)| *at);
                        let delay = match self.rng.below(100) {
                            0..=89 => self.rng.between(0, 2),
                            _ => self.rng.between(2, 60),
                        };
                        let at = (now_ms + delay).max(after);
                        if let (Some(early), ChannelFrame::Batch(batch)) = (&mut early, &frame) {
                            if self.rng.below(4) == 0 {
                                let at = now_ms + self.rng.between(0, 30);
                                early.push((at, batch.clone()));
                                // The sender sends a copy again with its next write's.
                                if self.rng.below(2) == 0 {
                                    let again = now_ms + self.rng.between(0, 40);
                                    early.push((again, batch.clone()));
                                }
                            }
                        }
                        // Now and then a frame comes twice, or overtakes the one before it:
                        // the channel protocol must drop the copy, or notice and reconnect.
                        match self.rng.below(1000) {
                            0..=4 => queue.push_back((at, frame.clone())),
                            5..=9 if !queue.is_empty() => {
                                queue.insert(queue.len() - 1, (at, frame));
                                continue;
                            }
                            _ => {}
                        }
                        queue.push_back((at, frame));
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        // That end closed it (its core dropped the channel): the other end
                        // hears at once, as from a QUIC close.
                        connection.close_at =
                            Some(connection.close_at.map_or(now_ms, |c| c.min(now_ms)));
                        break;
                    }
                }
            }
        }
    }

    /// Delivers what is due on connection `id`, then closes it if its end came.
    fn deliver(&mut self, id: u64) {
        loop {
            let now_ms = self.now_ms;
            let Some(connection) = self.network.connections.get_mut(&id) else {
                return;
            };
            let (dialler, acceptor) = (connection.dialler, connection.acceptor);
            let blocked = self.network.blocked.contains(&pair(dialler, acceptor));
            let close_at = connection.close_at;
            // A frame arrives if it is due, its link is not cut, and it was sent before the
            // connection's end.
            let arrives = |queue: &VecDeque<(u64, ChannelFrame)>| {
                !blocked
                    && queue
                        .front()
                        .is_some_and(|(at, _)| *at <= now_ms && close_at.is_none_or(|c| *at < c))
            };
            let closing = close_at.is_some_and(|at| at <= now_ms);
            // An early copy due: delivered, or lost on a cut link or after the end.
            if let Some(due) = connection.early.iter().position(|(at, _)| *at <= now_ms) {
                let (at, batch) = connection.early.swap_remove(due);
                if !blocked && close_at.is_none_or(|c| at < c) {
                    let connection = connection.ids.1;
                    self.digest
                        .add(&format!("early {connection} {}", batch.first_seq));
                    self.handle(acceptor, Command::EarlyBatch { connection, batch });
                }
                continue;
            }
            let next = if arrives(&connection.to_acceptor) {
                connection
                    .to_acceptor
                    .pop_front()
                    .map(|(_, frame)| (acceptor, connection.ids.1, frame))
            } else if arrives(&connection.to_dialler) {
                connection
                    .to_dialler
                    .pop_front()
                    .map(|(_, frame)| (dialler, connection.ids.0, frame))
            } else {
                None
            };
            match next {
                Some((to, connection, frame)) => {
                    self.handle(to, Command::ChannelFrame { connection, frame });
                }
                None if closing => {
                    self.end(id);
                    return;
                }
                None => return,
            }
        }
    }

    /// Connection `id` is gone: both ends are told.
    fn end(&mut self, id: u64) {
        let Some(connection) = self.network.connections.remove(&id) else {
            return;
        };
        self.digest.add(&format!("closed {id}"));
        for (index, connection) in [
            (connection.dialler, connection.ids.0),
            (connection.acceptor, connection.ids.1),
        ] {
            self.handle(
                index,
                Command::ChannelClosed {
                    connection,
                    reason: "simulated connection end".into(),
                },
            );
        }
    }

    /// Every manager dials each neighbour it has no connection of its own to.
    pub(crate) fn dial(&mut self) {
        for dialler in 0..self.nodes.len() {
            if self.nodes[dialler].core.is_none() {
                continue;
            }
            for acceptor in self.neighbours(dialler) {
                let up = self.network.connections.values().any(|c| {
                    c.dialler == dialler && c.acceptor == acceptor && c.close_at.is_none()
                });
                let not_before = self
                    .network
                    .next_dial_ms
                    .get(&(dialler, acceptor))
                    .copied()
                    .unwrap_or(0);
                if up || not_before > self.now_ms {
                    continue;
                }
                let backoff = self.rng.between(100, 1_000);
                self.network
                    .next_dial_ms
                    .insert((dialler, acceptor), self.now_ms + backoff);
                // The acceptor admits only a manager its own file links to it.
                let reachable = self.nodes[acceptor].core.is_some()
                    && self.nodes[acceptor].shape.linked(dialler, acceptor)
                    && !self.network.is_blocked(dialler, acceptor);
                if reachable {
                    self.connect(dialler, acceptor);
                }
            }
        }
    }

    fn connect(&mut self, dialler: usize, acceptor: usize) {
        self.network.next_id += 1;
        let id = self.network.next_id;
        let ids = (2 * id, 2 * id + 1);
        let (dialler_frames, from_dialler) = mpsc::channel(CHANNEL_FRAMES_MAX);
        let (acceptor_frames, from_acceptor) = mpsc::channel(CHANNEL_FRAMES_MAX);
        self.network.connections.insert(
            id,
            Connection {
                dialler,
                acceptor,
                ids,
                from_dialler,
                from_acceptor,
                to_acceptor: VecDeque::new(),
                to_dialler: VecDeque::new(),
                early: Vec::new(),
                close_at: None,
            },
        );
        self.digest
            .add(&format!("connect {id}: {dialler} -> {acceptor}"));
        let (dialler_name, acceptor_name) = (
            self.nodes[dialler].name.clone(),
            self.nodes[acceptor].name.clone(),
        );
        self.handle(
            acceptor,
            Command::ChannelOpened {
                neighbour: dialler_name,
                direction: ChannelDirection::Inbound,
                channel: Channel::new(ids.1, acceptor_frames),
            },
        );
        self.handle(
            dialler,
            Command::ChannelOpened {
                neighbour: acceptor_name,
                direction: ChannelDirection::Outbound,
                channel: Channel::new(ids.0, dialler_frames),
            },
        );
    }
}

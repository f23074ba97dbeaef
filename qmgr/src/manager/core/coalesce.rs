//! Commands handled together: the run loop passes everything queued when it wakes, and a run
//! of plain puts in it (single calls or batches, from any connections) is staged into shared
//! journal groups by [`Core::put_coalesced`], so a client with many single puts in flight pays
//! one write, one commit and one wake-up per group rather than per call. A run of destructive
//! gets likewise writes its removals in one group (`Continuation::Gets`).
//!
//! Invariants: commands take effect in the order they came. The puts of a run are committed
//! before the next command of another kind is handled, each answered as if alone. A get's
//! staged removal is appended before anything else is (`Core::append` writes the staged ones
//! first), so the delivery reports it carries ride its removal's write and no other; each get
//! is answered once that write is durable, and handed back if it fails.

use super::*;
use hopmq::protocol::Operation;

impl Core {
    /// Handles `commands` in order, as [`Core::on_command`] would one by one, but with each
    /// run of plain puts written together.
    pub fn on_commands(&mut self, commands: impl IntoIterator<Item = Command>, now: Now) {
        self.event_now = now;
        let mut asks = Vec::new();
        let mut gets = Vec::new();
        for command in commands {
            match command {
                Command::Request {
                    connection,
                    id,
                    operation: Operation::Put { address, message },
                } if self.serves_puts(connection) => {
                    self.get_run(&mut gets, now);
                    asks.push(PutAsk {
                        connection,
                        request: id,
                        messages: vec![(address, message)],
                    });
                }
                Command::Request {
                    connection,
                    id,
                    operation: Operation::PutBatch { messages },
                } if self.serves_puts(connection) => {
                    self.get_run(&mut gets, now);
                    asks.push(PutAsk {
                        connection,
                        request: id,
                        messages,
                    });
                }
                Command::Request {
                    connection,
                    id,
                    operation: operation @ Operation::Get { lease_ms: None, .. },
                } if self.serves_puts(connection) => {
                    self.put_run(&mut asks, now);
                    gets.push((connection, id, operation));
                }
                command => {
                    self.put_run(&mut asks, now);
                    self.get_run(&mut gets, now);
                    self.on_command(command, now);
                }
            }
        }
        self.put_run(&mut asks, now);
        self.get_run(&mut gets, now);
    }

    /// Handles a run of destructive gets as one event, their removals staged and written
    /// together (an append of anything else writes the staged ones first).
    fn get_run(&mut self, gets: &mut Vec<(u64, u64, Operation)>, now: Now) {
        if gets.is_empty() {
            return;
        }
        self.event_now = now;
        self.staged_gets = Some(Vec::new());
        for (connection, id, operation) in gets.drain(..) {
            self.on_request(connection, id, operation, now);
        }
        self.flush_staged_gets();
        self.staged_gets = None;
        self.end_event();
    }

    /// Writes a run of puts, as one event.
    fn put_run(&mut self, asks: &mut Vec<PutAsk>, now: Now) {
        if asks.is_empty() {
            return;
        }
        self.event_now = now;
        self.put_coalesced(std::mem::take(asks), now);
        self.end_event();
    }

    /// Whether a put from `connection` may join a run: else [`Core::on_command`] refuses it
    /// (shutting down) or drops it (a connection the core closed).
    fn serves_puts(&self, connection: u64) -> bool {
        self.clients.is_connected(connection) && !self.shutting_down
    }
}

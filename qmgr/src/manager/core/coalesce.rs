//! Commands handled together: the run loop passes everything queued when it wakes, and a run
//! of plain puts in it (single calls or batches, from any connections) is staged into shared
//! journal groups by [`Core::put_coalesced`], so a client with many single puts in flight pays
//! one write, one commit and one wake-up per group rather than per call.
//!
//! Invariant: commands take effect in the order they came. The puts of a run are committed
//! before the next command of another kind is handled, each answered as if alone.

use super::*;
use hopmq::protocol::Operation;

impl Core {
    /// Handles `commands` in order, as [`Core::on_command`] would one by one, but with each
    /// run of plain puts written together.
    pub fn on_commands(&mut self, commands: impl IntoIterator<Item = Command>, now: Now) {
        self.event_now = now;
        let mut asks = Vec::new();
        for command in commands {
            match command {
                Command::Request {
                    connection,
                    id,
                    operation: Operation::Put { address, message },
                } if self.serves_puts(connection) => asks.push(PutAsk {
                    connection,
                    request: id,
                    messages: vec![(address, message)],
                }),
                Command::Request {
                    connection,
                    id,
                    operation: Operation::PutBatch { messages },
                } if self.serves_puts(connection) => asks.push(PutAsk {
                    connection,
                    request: id,
                    messages,
                }),
                command => {
                    self.put_run(&mut asks, now);
                    self.on_command(command, now);
                }
            }
        }
        self.put_run(&mut asks, now);
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

//! The channel protocol between two neighbouring managers, as plain state machines apart from
//! I/O (STYLE.md "Protocol apart from I/O"): the wire frames and their codec ([`frame`]), the
//! sending side that drains a transmission queue ([`sender`]) and the receiving side that
//! stores what arrives ([`receiver`]), the liveness of a neighbour as routing sees it
//! ([`adjacency`]), and the QUIC driver that carries the frames between
//! managers ([`quic`]).
//!
//! Nothing but [`quic`] touches a socket, a file or the clock: time is an argument, and what must be
//! made durable is handed back as an effect for the I/O layer (the quinn driver and the journal)
//! to carry out. The promise these machines keep together is "exactly once per hop":
//! the receiver makes a batch and its channel state durable in one journal write before it acks;
//! the sender deletes only acked messages; resent messages are discarded by sequence number, and
//! after a rollback of the receiver's channel state (restore from backup, wipe) by message id
//! within a bounded window.

pub mod adjacency;
pub mod connection;
pub mod frame;
pub mod quic;
pub(crate) mod receiver;
pub(crate) mod sender;

#[cfg(test)]
mod simulation;

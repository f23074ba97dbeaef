//! The errors a manager reports to an application, as they cross the wire.

use serde::{Deserialize, Serialize};

/// Why a manager refused or failed an operation. Sent over the wire, so variants are only ever
/// appended (a client older than a variant cannot decode it: `QueueElsewhere` and `NotLocal`
/// answer only reads that older managers answered by creating a local queue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    /// The client and the manager share no protocol version.
    #[error("protocol version mismatch: client speaks {client}, manager speaks {server}")]
    VersionMismatch {
        /// The client's version.
        client: u32,
        /// The manager's version.
        server: u32,
    },
    /// The address is not `QUEUE` or `QUEUE@MANAGER` with valid names.
    #[error("bad address `{address}`: {reason}")]
    BadAddress {
        /// As given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The address names a queue no manager of the topology is home to, or an unknown manager.
    #[error("cannot resolve address `{address}`: {reason}")]
    NoRoute {
        /// As given.
        address: String,
        /// Why it cannot be resolved.
        reason: String,
    },
    /// The queue does not exist on this manager.
    #[error("no queue `{queue}` on this manager")]
    UnknownQueue {
        /// Its name.
        queue: String,
    },
    /// The queue holds its maximum number of messages.
    #[error("queue `{queue}` is full: it holds its limit of {max_depth} messages")]
    QueueFull {
        /// Its name.
        queue: String,
        /// Its limit.
        max_depth: u64,
    },
    /// The message body is over the size limit.
    #[error("message of {bytes} bytes exceeds the limit of {limit} bytes (max_message_bytes)")]
    MessageTooLarge {
        /// The body's size.
        bytes: u64,
        /// The limit in force.
        limit: u64,
    },
    /// The request holds more messages than one request may.
    #[error("{count} messages in one request; the limit is {limit}")]
    BatchTooLarge {
        /// How many were sent.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// No lease with that id is held by this connection (settled, expired, or never given).
    #[error("no lease {lease} is held by this connection")]
    UnknownLease {
        /// The lease id.
        lease: u64,
    },
    /// No subscription with that id exists on this connection.
    #[error("no subscription {subscription} on this connection")]
    UnknownSubscription {
        /// The subscription id.
        subscription: u64,
    },
    /// A queue must be empty to be deleted.
    #[error("queue `{queue}` still holds {depth} messages")]
    QueueNotEmpty {
        /// Its name.
        queue: String,
        /// What it holds.
        depth: u64,
    },
    /// The disk (or the journal's quota) is full; the operation was not carried out. Retry
    /// once space returns.
    #[error("{detail}")]
    DiskFull {
        /// What the store said.
        detail: String,
    },
    /// The store failed; nothing was stored.
    #[error("storage error: {detail}")]
    Storage {
        /// What the store said.
        detail: String,
    },
    /// The manager is stopping; the operation was not carried out.
    #[error("the manager is shutting down")]
    ShuttingDown,
    /// The request is malformed (a zero `max`, an invalid queue name...).
    #[error("bad request: {reason}")]
    BadRequest {
        /// What is wrong.
        reason: String,
    },
    /// The manager serves this many local connections already; the handshake is refused.
    #[error("the manager has {limit} client connections already (its `max_connections`)")]
    TooManyConnections {
        /// The manager's limit.
        limit: u64,
    },
    /// A get, browse or watch named a queue that the topology homes on another manager:
    /// messages put to it end there, never here, so this manager has none to give.
    #[error("`{queue}` lives on {home}; get it there")]
    QueueElsewhere {
        /// The queue.
        queue: String,
        /// Its home in the topology.
        home: String,
    },
    /// A get, browse or watch named `QUEUE@MANAGER` for another manager: reads are local, so
    /// they go to that manager.
    #[error(
        "gets are local: `{queue}@{manager}` is a queue of {manager}; get `{queue}` from {manager}'s manager"
    )]
    NotLocal {
        /// The queue.
        queue: String,
        /// The manager named.
        manager: String,
    },
    /// A put that waited for arrival: stored durably here, but not all of it was confirmed by
    /// its destination in time. Nothing is lost: the messages are still on their way.
    #[error(
        "stored durably here, but {pending} message(s) were not confirmed by their destination within {timeout_ms} ms; they are still on their way and arrive once"
    )]
    NotArrived {
        /// Messages of the put not confirmed yet.
        pending: u64,
        /// How long the put waited.
        timeout_ms: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// postcard numbers variants by position: appending must leave every older encoding as
    /// it was, so clients built before a new variant still read the old ones.
    #[test]
    fn variants_keep_their_wire_numbers() {
        let encode = |error: &ApiError| postcard::to_allocvec(error).expect("encodes");
        assert_eq!(encode(&ApiError::ShuttingDown), [12]);
        assert_eq!(encode(&ApiError::TooManyConnections { limit: 1 }), [14, 1]);
        let elsewhere = ApiError::QueueElsewhere {
            queue: "orders".into(),
            home: "delta".into(),
        };
        assert_eq!(encode(&elsewhere)[0], 15);
        let not_local = ApiError::NotLocal {
            queue: "orders".into(),
            manager: "delta".into(),
        };
        assert_eq!(encode(&not_local)[0], 16);
        for error in [elsewhere, not_local] {
            let back: ApiError = postcard::from_bytes(&encode(&error)).expect("decodes");
            assert_eq!(back, error);
        }
    }

    #[test]
    fn read_refusals_say_where_to_read() {
        let elsewhere = ApiError::QueueElsewhere {
            queue: "orders".into(),
            home: "delta".into(),
        };
        assert_eq!(
            elsewhere.to_string(),
            "`orders` lives on delta; get it there"
        );
        let not_local = ApiError::NotLocal {
            queue: "orders".into(),
            manager: "delta".into(),
        };
        let text = not_local.to_string();
        assert!(text.starts_with("gets are local: "), "{text}");
        assert!(text.contains("delta's manager"), "{text}");
    }
}

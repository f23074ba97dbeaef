//! Messages as applications build and receive them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::{Delivery, OutgoingMessage};
use crate::report::{REPORT_HEADER, REPORTS_HEADER, Report, Reports};

/// A message's unique id, assigned by the manager where it was put.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct MessageId(pub u128);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::str::FromStr for MessageId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(s, 16).map(Self)
    }
}

/// One hop of a message's journey: the manager and when the message arrived there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// The manager.
    pub manager: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// A message: built by an application for `put`, returned by `get`, `poll` and `browse`.
///
/// ```
/// use std::time::Duration;
/// let message = hopmq::Message::new("order 42")
///     .header("customer", "c-17")
///     .priority(7)
///     .ttl(Duration::from_secs(60))
///     .correlation_id("req-1")
///     .reply_to("replies@alpha");
/// assert_eq!(message.body, b"order 42");
/// assert!(message.persistent);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The payload.
    pub body: Vec<u8>,
    /// Application headers.
    pub headers: BTreeMap<String, String>,
    /// 0 (lowest) to 9 (highest); default 4.
    pub priority: u8,
    /// Time to live from the put; `None` never expires.
    pub ttl: Option<Duration>,
    /// Ties a reply to its request.
    pub correlation_id: Option<String>,
    /// Where replies should go.
    pub reply_to: Option<String>,
    /// Default true: stored on disk before `put` returns. False: memory only.
    pub persistent: bool,
    /// Assigned by the manager at put; zero on a message not yet put.
    pub id: MessageId,
    /// When it expires, in milliseconds since the Unix epoch (set on received messages).
    pub expires_at_ms: Option<u64>,
    /// The manager where it was first put (set on received messages).
    pub origin: String,
    /// How many times it has been handed out, this time included.
    pub delivery_count: u32,
    /// The managers it passed through.
    pub trace: Vec<Trace>,
    /// The lease to ack or nack, for a leased get.
    pub lease: Option<u64>,
}

/// The priority of a message that does not set one.
pub const PRIORITY_DEFAULT: u8 = 4;
/// The highest priority.
pub const PRIORITY_MAX: u8 = 9;

impl Message {
    /// A persistent message with this body and default priority.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        Self {
            body: body.into(),
            headers: BTreeMap::new(),
            priority: PRIORITY_DEFAULT,
            ttl: None,
            correlation_id: None,
            reply_to: None,
            persistent: true,
            id: MessageId::default(),
            expires_at_ms: None,
            origin: String::new(),
            delivery_count: 0,
            trace: Vec::new(),
            lease: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Sets the priority (0 to 9; higher is delivered first).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the time to live.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the reply-to address.
    pub fn reply_to(mut self, address: impl Into<String>) -> Self {
        self.reply_to = Some(address.into());
        self
    }

    /// Asks the managers for reports of what becomes of the message, sent to its `reply_to`
    /// (which a put with reports must have); [`Reports::NONE`] asks for none.
    pub fn reports(mut self, reports: Reports) -> Self {
        if reports.is_empty() {
            self.headers.remove(REPORTS_HEADER);
        } else {
            self.headers
                .insert(REPORTS_HEADER.to_owned(), reports.to_string());
        }
        self
    }

    /// The kind of report this message is (its `hopmq.report` header); `None` for any other
    /// message.
    pub fn report(&self) -> Option<Report> {
        self.headers.get(REPORT_HEADER)?.parse().ok()
    }

    /// Marks the message non-persistent: faster, but lost if a manager stops.
    pub fn non_persistent(mut self) -> Self {
        self.persistent = false;
        self
    }

    /// The body as text, if it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// The topic a publication was published to (its `hopmq.topic` header); `None` for a
    /// queue message.
    pub fn topic(&self) -> Option<&str> {
        self.headers
            .get(crate::protocol::TOPIC_HEADER)
            .map(String::as_str)
    }

    /// What goes on the wire for a put.
    pub fn to_outgoing(&self) -> OutgoingMessage {
        self.clone().into_outgoing()
    }

    /// What goes on the wire for a put, without copying the body.
    pub fn into_outgoing(self) -> OutgoingMessage {
        OutgoingMessage {
            body: self.body,
            headers: self.headers,
            priority: self.priority,
            ttl_ms: self
                .ttl
                .map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            correlation_id: self.correlation_id,
            reply_to: self.reply_to,
            persistent: self.persistent,
        }
    }
}

impl From<Delivery> for Message {
    fn from(d: Delivery) -> Self {
        Self {
            body: d.body,
            headers: d.headers,
            priority: d.priority,
            ttl: None,
            correlation_id: d.correlation_id,
            reply_to: d.reply_to,
            persistent: d.persistent,
            id: d.id,
            expires_at_ms: d.expires_at_ms,
            origin: d.origin,
            delivery_count: d.delivery_count,
            trace: d.trace,
            lease: d.lease,
        }
    }
}

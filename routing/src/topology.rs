//! The topology model: managers, links and queue homes, as declared in `topology.toml`.
//!
//! Invariants, established by [`crate::parse`] and never broken afterwards: every link joins two
//! distinct declared managers, no two links join the same pair, every cost is in
//! `1..=COST_MAX`, every queue's home is a declared manager, and no two managers share an
//! address. Collections are ordered by name, so iteration order never depends on the order of
//! declaration in the file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::names::{ManagerName, QueueName};

/// The largest cost a link may declare; sums over any path then stay far below `u64::MAX`.
pub const COST_MAX: u32 = 1_000_000;
/// The most managers one topology may declare.
pub const MANAGERS_MAX: usize = 10_000;
/// The most links one topology may declare.
pub const LINKS_MAX: usize = 200_000;
/// The most queues one topology may declare.
pub const QUEUES_MAX: usize = 100_000;
/// The largest topology file hopmq reads, in bytes.
pub const TOPOLOGY_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// A whole network: the same value on every manager that read the same file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topology {
    pub(crate) managers: BTreeMap<ManagerName, Manager>,
    pub(crate) links: BTreeMap<LinkKey, Link>,
    pub(crate) queues: BTreeMap<QueueName, Queue>,
}

impl Topology {
    /// A network of one manager and no links: what `qmgr run` uses without a topology file.
    pub fn standalone(name: ManagerName) -> Self {
        let manager = Manager {
            name: name.clone(),
            address: None,
        };
        Self {
            managers: BTreeMap::from([(name, manager)]),
            ..Self::default()
        }
    }

    /// Managers, by name.
    pub fn managers(&self) -> impl ExactSizeIterator<Item = &Manager> {
        self.managers.values()
    }

    /// Links, ordered by their pair of names.
    pub fn links(&self) -> impl ExactSizeIterator<Item = &Link> {
        self.links.values()
    }

    /// Declared queues, by name.
    pub fn queues(&self) -> impl ExactSizeIterator<Item = &Queue> {
        self.queues.values()
    }

    /// The manager called `name`, if declared.
    pub fn manager(&self, name: &str) -> Option<&Manager> {
        self.managers.get(name)
    }

    /// The link between two managers, in either order, if declared.
    pub fn link(&self, a: &ManagerName, b: &ManagerName) -> Option<&Link> {
        self.links.get(&LinkKey::new(a.clone(), b.clone())?)
    }

    /// The declared queue called `name`, if any.
    pub fn queue(&self, name: &str) -> Option<&Queue> {
        self.queues.get(name)
    }

    /// The managers linked to `name`, by name.
    pub fn neighbours<'a>(
        &'a self,
        name: &'a ManagerName,
    ) -> impl Iterator<Item = &'a ManagerName> {
        self.links.keys().filter_map(move |key| key.other(name))
    }
}

/// One queue manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manager {
    /// Its name.
    pub name: ManagerName,
    /// Where its QUIC endpoint listens; `None` only for a standalone manager.
    pub address: Option<PeerAddress>,
}

/// The unordered pair of managers a link joins, stored with the smaller name first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkKey {
    low: ManagerName,
    high: ManagerName,
}

impl LinkKey {
    /// The pair `{a, b}`; `None` for a self-link.
    pub fn new(a: ManagerName, b: ManagerName) -> Option<Self> {
        match a.cmp(&b) {
            std::cmp::Ordering::Less => Some(Self { low: a, high: b }),
            std::cmp::Ordering::Greater => Some(Self { low: b, high: a }),
            std::cmp::Ordering::Equal => None,
        }
    }

    /// Both ends, the smaller name first.
    pub fn ends(&self) -> (&ManagerName, &ManagerName) {
        (&self.low, &self.high)
    }

    /// The other end, if `name` is one end.
    pub fn other(&self, name: &ManagerName) -> Option<&ManagerName> {
        if *name == self.low {
            Some(&self.high)
        } else if *name == self.high {
            Some(&self.low)
        } else {
            None
        }
    }
}

impl fmt::Display for LinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

/// A declared, weighted connection between two managers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The two ends.
    pub key: LinkKey,
    /// Its cost, in `1..=COST_MAX`.
    pub cost: u32,
}

/// A queue's declaration: its home and optional limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// Its name.
    pub name: QueueName,
    /// The manager that hosts it.
    pub home: ManagerName,
    /// The most messages it may hold; `None` for the manager's default.
    pub max_depth: Option<u64>,
    /// The largest message it accepts, in bytes; `None` for the manager's default.
    pub max_message_bytes: Option<u64>,
}

/// Where a manager listens: an IP socket address, or a host name and port resolved when a
/// neighbour connects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerAddress {
    /// `127.0.0.1:7401`, `[::1]:7401`.
    Socket(SocketAddr),
    /// `node1.example.net:7401`.
    Host {
        /// A DNS name.
        host: String,
        /// The UDP port.
        port: u16,
    },
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Socket(addr) => addr.fmt(f),
            Self::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Why a manager's address is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `:PORT` part.
    #[error("address `{0}` has no port; expected HOST:PORT, e.g. 127.0.0.1:7401")]
    NoPort(String),
    /// The port is not a number in 1..=65535.
    #[error("address `{0}` has an invalid port; expected a number from 1 to 65535")]
    BadPort(String),
    /// The host is neither an IP address nor a DNS name.
    #[error("address `{0}` has an invalid host; expected an IP address or a DNS name")]
    BadHost(String),
}

impl FromStr for PeerAddress {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(AddressError::BadPort(s.to_owned()));
            }
            return Ok(Self::Socket(addr));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| AddressError::NoPort(s.to_owned()))?;
        let port = match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(AddressError::BadPort(s.to_owned())),
        };
        if !is_dns_name(host) {
            return Err(AddressError::BadHost(s.to_owned()));
        }
        Ok(Self::Host {
            host: host.to_owned(),
            port,
        })
    }
}

/// RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
fn is_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ManagerName {
        ManagerName::new(s).unwrap()
    }

    #[test]
    fn link_keys_are_unordered() {
        let ab = LinkKey::new(name("a"), name("b")).unwrap();
        assert_eq!(ab, LinkKey::new(name("b"), name("a")).unwrap());
        assert_eq!(ab.other(&name("a")), Some(&name("b")));
        assert_eq!(ab.other(&name("c")), None);
        assert!(LinkKey::new(name("a"), name("a")).is_none());
    }

    #[test]
    fn parses_peer_addresses() {
        assert!(matches!(
            "127.0.0.1:7401".parse(),
            Ok(PeerAddress::Socket(_))
        ));
        assert!(matches!("[::1]:7401".parse(), Ok(PeerAddress::Socket(_))));
        assert_eq!(
            "node-1.example.net:9".parse(),
            Ok(PeerAddress::Host {
                host: "node-1.example.net".into(),
                port: 9
            })
        );
        assert!(matches!(
            "127.0.0.1".parse::<PeerAddress>(),
            Err(AddressError::NoPort(_))
        ));
        assert!(matches!(
            "127.0.0.1:0".parse::<PeerAddress>(),
            Err(AddressError::BadPort(_))
        ));
        assert!(matches!(
            "h:70000".parse::<PeerAddress>(),
            Err(AddressError::BadPort(_))
        ));
        assert!(matches!(
            "999.1.1.1:80".parse::<PeerAddress>(),
            Err(AddressError::BadHost(_))
        ));
        assert!(matches!(
            "-bad-:80".parse::<PeerAddress>(),
            Err(AddressError::BadHost(_))
        ));
        assert!(matches!(
            "a b:80".parse::<PeerAddress>(),
            Err(AddressError::BadHost(_))
        ));
    }
}

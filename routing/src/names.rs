//! Validated names and addresses: `ManagerName`, `QueueName` and `Address`.
//!
//! Invariant: a value of these types always satisfies the naming rule
//! `[A-Za-z0-9_.-]{1,64}`, so code that holds one never re-checks it. Names are compared and
//! ordered byte-wise, which is what "ties broken by name" means everywhere in hopmq.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest name a manager or a queue may have, in bytes.
pub const NAME_BYTES_MAX: usize = 64;

/// Why a string is not a valid name or address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The string is empty.
    #[error("a {kind} name cannot be empty")]
    Empty {
        /// What was being named ("manager" or "queue").
        kind: &'static str,
    },
    /// The string is longer than [`NAME_BYTES_MAX`].
    #[error("{kind} name `{name}…` is {length} bytes long; the limit is {NAME_BYTES_MAX}")]
    TooLong {
        /// What was being named.
        kind: &'static str,
        /// The first bytes of the name.
        name: String,
        /// Its length in bytes.
        length: usize,
    },
    /// The string holds a character outside `[A-Za-z0-9_.-]`.
    #[error("{kind} name `{name}` contains {character:?}; names use only A-Z a-z 0-9 _ . -")]
    BadCharacter {
        /// What was being named.
        kind: &'static str,
        /// The whole name.
        name: String,
        /// The first character that is not allowed.
        character: char,
    },
    /// An address has more than one `@`.
    #[error("address `{0}` has more than one `@`; expected QUEUE or QUEUE@MANAGER")]
    BadAddress(String),
}

fn validate(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if let Some(character) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(NameError::BadCharacter {
            kind,
            name: name.to_owned(),
            character,
        });
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(NameError::TooLong {
            kind,
            name: name[..NAME_BYTES_MAX].to_owned(),
            length: name.len(),
        });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $type:ident, $kind:literal) => {
        $(#[$doc])*
        ///
        /// Shared, not copied, when cloned: names travel with every message through the
        /// manager's queues and routes.
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $type(Arc<str>);

        impl $type {
            /// Checks `name` against the naming rule.
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                validate($kind, &name)?;
                Ok(Self(Arc::from(name)))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $type {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $type {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $type {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = String::deserialize(deserializer)?;
                Self::new(name).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// The name of a queue manager, as declared in the topology.
    ManagerName,
    "manager"
);
name_type!(
    /// The name of a queue, unique within its home manager.
    QueueName,
    "queue"
);

/// Where a message is going: `QUEUE` (its home is looked up in the topology) or
/// `QUEUE@MANAGER` (explicit).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    /// The destination queue.
    pub queue: QueueName,
    /// The manager named explicitly, if any.
    pub manager: Option<ManagerName>,
}

impl Address {
    /// An address resolved through the topology's queue homes.
    pub fn queue(queue: QueueName) -> Self {
        Self {
            queue,
            manager: None,
        }
    }

    /// An address naming its manager explicitly.
    pub fn at(queue: QueueName, manager: ManagerName) -> Self {
        Self {
            queue,
            manager: Some(manager),
        }
    }
}

impl FromStr for Address {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('@');
        let queue = QueueName::new(parts.next().unwrap_or_default())?;
        let manager = parts.next().map(ManagerName::new).transpose()?;
        if parts.next().is_some() {
            return Err(NameError::BadAddress(s.to_owned()));
        }
        Ok(Self { queue, manager })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.manager {
            Some(manager) => write!(f, "{}@{}", self.queue, manager),
            None => write!(f, "{}", self.queue),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_naming_rule() {
        for name in ["a", "alpha", "Node-1.eu_west", &"x".repeat(NAME_BYTES_MAX)] {
            assert_eq!(ManagerName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(
            ManagerName::new(""),
            Err(NameError::Empty { kind: "manager" })
        );
        assert!(matches!(
            QueueName::new("a b"),
            Err(NameError::BadCharacter { character: ' ', .. })
        ));
        assert!(matches!(
            QueueName::new("é"),
            Err(NameError::BadCharacter { .. })
        ));
        assert!(matches!(
            QueueName::new("x".repeat(NAME_BYTES_MAX + 1)),
            Err(NameError::TooLong { length: 65, .. })
        ));
    }

    #[test]
    fn parses_addresses() {
        let plain: Address = "orders".parse().unwrap();
        assert_eq!(plain, Address::queue(QueueName::new("orders").unwrap()));
        let explicit: Address = "orders@charlie".parse().unwrap();
        assert_eq!(explicit.manager.unwrap().as_str(), "charlie");
        assert!("orders@".parse::<Address>().is_err());
        assert!("@charlie".parse::<Address>().is_err());
        assert!(matches!(
            "a@b@c".parse::<Address>(),
            Err(NameError::BadAddress(_))
        ));
        assert_eq!(
            "orders@charlie".parse::<Address>().unwrap().to_string(),
            "orders@charlie"
        );
    }
}

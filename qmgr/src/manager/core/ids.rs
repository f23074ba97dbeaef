//! Message ids, unique across a manager's incarnations and managers: the incarnation's
//! entropy mixed with the manager's name in the high half, a counter in the low half.

use hopmq::{ManagerName, MessageId};

/// Unique message ids: the incarnation's entropy in the high half, a counter in the low half.
pub(super) struct IdGenerator {
    high: u64,
    counter: u64,
}

impl IdGenerator {
    pub(super) fn new(name: &ManagerName, entropy: u64) -> Self {
        // Two managers started with the same entropy still differ by name.
        Self {
            high: entropy ^ u64::from(crc32c::crc32c(name.as_str().as_bytes())) << 32,
            counter: 0,
        }
    }

    pub(super) fn next(&mut self) -> MessageId {
        self.counter += 1;
        MessageId(u128::from(self.high) << 64 | u128::from(self.counter))
    }
}

//! Queue semantics as plain state machines: ordering, expiry and selection within one queue
//! ([`local`]), and leases with redelivery and dead-lettering ([`lease`]). No I/O and no clock:
//! the manager core passes the time in and turns their decisions into journal records.

pub(crate) mod lease;
pub(crate) mod local;

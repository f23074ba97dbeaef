//! Deliberately broken variants of the core, for proving that the simulator's checker can
//! fail (`scripts/sim --mutation NAME`).
//!
//! Compiled in only with the `mutations` feature: without it [`active`] is `false` at compile
//! time and every hook folds away, so no production build carries them. With it, none is
//! active until a simulation chooses one for its whole process.

/// One way of breaking a promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// A put is acknowledged before its record is durable.
    AckBeforeDurable,
    /// The channel receiver keeps resent messages instead of dropping them. Since custody
    /// the destination drops those copies by their stamp, so the whole network still keeps
    /// its promise: the simulator shows that second line of defence holds.
    SkipDedup,
    /// A leased delivery is written as a removal at once, so a crash loses the unacknowledged
    /// message instead of returning it.
    UnrecordedLease,
    /// The destination stores every stamped copy that reaches it, so a message copied around
    /// a failed relay can be delivered twice.
    SkipCustodyDedup,
    /// Destinations never confirm what they stored, so origins keep their messages for ever
    /// (and send them again, and again).
    SkipConfirmations,
    /// Destinations never hold a message for an earlier one of its origin and queue, so a
    /// message sent around a failed relay is overtaken by later ones.
    SkipResequencing,
    /// A delivery report is written in a write of its own ahead of its event's, so a crash
    /// can keep the report and lose the event (which then happens again, and reports again).
    ReportsAhead,
    /// A delivery report is written in a write of its own after its event's, so a crash can
    /// keep the event and lose its report.
    ReportsBehind,
    /// Publications leave their publisher unstamped, so nobody keeps custody of them: a relay
    /// lost with its disk loses what it held.
    SkipPublicationCustody,
    /// Destinations never hold a publication for an earlier one of its publisher, so one sent
    /// around a failed relay is overtaken by later ones.
    SkipPublicationResequencing,
}

impl Mutation {
    /// Every mutation, with the name `scripts/sim --mutation` takes.
    pub const ALL: [(&'static str, Mutation); 10] = [
        ("ack-before-durable", Mutation::AckBeforeDurable),
        ("skip-dedup", Mutation::SkipDedup),
        ("unrecorded-lease", Mutation::UnrecordedLease),
        ("skip-custody-dedup", Mutation::SkipCustodyDedup),
        ("skip-confirmations", Mutation::SkipConfirmations),
        ("skip-resequencing", Mutation::SkipResequencing),
        ("reports-ahead", Mutation::ReportsAhead),
        ("reports-behind", Mutation::ReportsBehind),
        ("skip-publication-custody", Mutation::SkipPublicationCustody),
        (
            "skip-publication-resequencing",
            Mutation::SkipPublicationResequencing,
        ),
    ];

    /// Mutations a second mechanism masks: the checker must *not* see them break a promise.
    pub const MASKED: [Mutation; 1] = [Mutation::SkipDedup];

    /// Mutations that break delivery reports only: the simulator must run reports to see them.
    pub const REPORTS: [Mutation; 2] = [Mutation::ReportsAhead, Mutation::ReportsBehind];

    /// Mutations that break publications only: the simulator must run publish/subscribe to
    /// see them.
    pub const PUBSUB: [Mutation; 2] = [
        Mutation::SkipPublicationCustody,
        Mutation::SkipPublicationResequencing,
    ];

    /// The mutation called `name`.
    pub fn named(name: &str) -> Option<Mutation> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|&(_, m)| m)
    }
}

#[cfg(feature = "mutations")]
static ACTIVE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Makes `mutation` (or none) the active one for the whole process.
#[cfg(feature = "mutations")]
pub fn set(mutation: Option<Mutation>) {
    let code = match mutation {
        None => 0,
        Some(Mutation::AckBeforeDurable) => 1,
        Some(Mutation::SkipDedup) => 2,
        Some(Mutation::UnrecordedLease) => 3,
        Some(Mutation::SkipCustodyDedup) => 4,
        Some(Mutation::SkipConfirmations) => 5,
        Some(Mutation::SkipResequencing) => 6,
        Some(Mutation::ReportsAhead) => 7,
        Some(Mutation::ReportsBehind) => 8,
        Some(Mutation::SkipPublicationCustody) => 9,
        Some(Mutation::SkipPublicationResequencing) => 10,
    };
    ACTIVE.store(code, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `mutation` is the active one.
#[inline]
pub fn active(mutation: Mutation) -> bool {
    #[cfg(feature = "mutations")]
    {
        let code = match mutation {
            Mutation::AckBeforeDurable => 1,
            Mutation::SkipDedup => 2,
            Mutation::UnrecordedLease => 3,
            Mutation::SkipCustodyDedup => 4,
            Mutation::SkipConfirmations => 5,
            Mutation::SkipResequencing => 6,
            Mutation::ReportsAhead => 7,
            Mutation::ReportsBehind => 8,
            Mutation::SkipPublicationCustody => 9,
            Mutation::SkipPublicationResequencing => 10,
        };
        ACTIVE.load(std::sync::atomic::Ordering::Relaxed) == code
    }
    #[cfg(not(feature = "mutations"))]
    {
        let _ = mutation;
        false
    }
}

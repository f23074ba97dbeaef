//! Delivery reports: a put may ask the managers to tell its `reply_to` what became of the
//! message. A report is an ordinary persistent message with an empty body, the original
//! message's id (32 hex digits) as its correlation id, and headers saying what happened, where
//! and, for an exception, why.
//!
//! ```
//! use hopmq::{Message, Report, Reports};
//! let message = Message::new("order 42")
//!     .reply_to("reports@alpha")
//!     .reports(Reports::of(&[Report::Arrival, Report::Exception]));
//! assert_eq!(message.headers[hopmq::report::REPORTS_HEADER], "arrival,exception");
//! ```

use std::fmt;

/// The header of a put asking for reports: the kinds, comma-separated (`arrival,delivery`).
/// A put that has it must have a `reply_to`.
pub const REPORTS_HEADER: &str = "hopmq.reports";

/// A report's header naming its kind: `arrival`, `delivery` or `exception`.
pub const REPORT_HEADER: &str = "hopmq.report";

/// A report's header naming the manager where it happened.
pub const REPORT_MANAGER_HEADER: &str = "hopmq.report_manager";

/// A report's header naming the queue the message arrived in, was got from or was
/// dead-lettered from.
pub const REPORT_QUEUE_HEADER: &str = "hopmq.report_queue";

/// An exception report's header saying why the message was dead-lettered.
pub const REPORT_REASON_HEADER: &str = "hopmq.report_reason";

/// What a report tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Report {
    /// The message was stored in its destination queue.
    Arrival,
    /// An application took the message from its destination queue (a get, or the ack of a
    /// leased get, or a reply to it as a request).
    Delivery,
    /// The message was dead-lettered, at whichever manager.
    Exception,
}

impl Report {
    /// Every kind, in the order they are written.
    pub const ALL: [Report; 3] = [Report::Arrival, Report::Delivery, Report::Exception];

    /// Its name in headers and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Report::Arrival => "arrival",
            Report::Delivery => "delivery",
            Report::Exception => "exception",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Report::Arrival => 1,
            Report::Delivery => 2,
            Report::Exception => 4,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Report {
    type Err = BadReports;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Report::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s.trim())
            .ok_or_else(|| BadReports(s.to_owned()))
    }
}

/// A set of report kinds; one byte, so that a manager can keep it beside every queued message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Reports(u8);

impl Reports {
    /// No reports.
    pub const NONE: Reports = Reports(0);

    /// These kinds.
    pub fn of(kinds: &[Report]) -> Self {
        Reports(kinds.iter().fold(0, |bits, kind| bits | kind.bit()))
    }

    /// True if `kind` is asked for.
    pub fn has(self, kind: Report) -> bool {
        self.0 & kind.bit() != 0
    }

    /// True if none is asked for.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Without `kind`.
    pub fn without(self, kind: Report) -> Self {
        Reports(self.0 & !kind.bit())
    }
}

impl fmt::Display for Reports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for kind in Report::ALL.into_iter().filter(|kind| self.has(*kind)) {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(kind.as_str())?;
            first = false;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reports {
    type Err = BadReports;
    /// Comma-separated kinds, as in [`REPORTS_HEADER`]; empty parts are ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .filter(|part| !part.trim().is_empty())
            .try_fold(Reports::NONE, |reports, part| {
                let kind: Report = part.parse()?;
                Ok(Reports(reports.0 | kind.bit()))
            })
    }
}

/// A report kind that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown report `{0}`: the kinds are arrival, delivery and exception")]
pub struct BadReports(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_print_in_a_fixed_order() {
        let reports: Reports = "exception, arrival".parse().unwrap();
        assert!(reports.has(Report::Arrival) && reports.has(Report::Exception));
        assert!(!reports.has(Report::Delivery));
        assert_eq!(reports.to_string(), "arrival,exception");
        assert_eq!(reports.without(Report::Arrival).to_string(), "exception");
        assert!("".parse::<Reports>().unwrap().is_empty());
        let error = "arrival,read".parse::<Reports>().unwrap_err();
        assert!(
            error.to_string().contains("unknown report `read`"),
            "{error}"
        );
    }
}

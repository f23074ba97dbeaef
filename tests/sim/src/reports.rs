//! Delivery reports in the workload (`--reports`): some of the clients' queue puts ask for a
//! random mix of arrival, delivery and exception reports to the report queue of a random
//! manager (`reports@mN`, local or remote), and each manager's client drains its report queue
//! as it drains its other queues. The rest of the workload gives the reports their events:
//! destructive and leased gets, acks, nacks, leases left to expire or lost with a crash,
//! messages dead-lettered after too many deliveries or by the small queue `q0` overflowing.
//!
//! Invariants: reports are only ever taken destructively (a nacked report would come back
//! and count twice), and every report a client is handed, from its report queue or from a
//! dead-letter queue (a report that could not be placed), goes to the checker; a message in
//! a report queue that is not a report, or a report anywhere else, is a violation. With the
//! flag off nothing here draws from the seed's randomness, so earlier seeds replay as they
//! did.

use std::collections::BTreeMap;

use hopmq::protocol::Delivery;
use hopmq::report::{REPORT_HEADER, REPORTS_HEADER};
use hopmq::{Report, Reports};

use crate::Sim;
use crate::checker::REPORT_QUEUE;

/// Puts that ask for reports, per thousand.
const ASKING_PER_MILLE: u64 = 400;

impl Sim {
    /// The headers and `reply_to` of message `key` (just told to the checker as put): now
    /// and then, reports to a random manager's report queue.
    pub(crate) fn ask_reports(&mut self, key: &str) -> (BTreeMap<String, String>, Option<String>) {
        let mut headers = BTreeMap::new();
        if !self.reports || !self.rng.chance(ASKING_PER_MILLE) {
            return (headers, None);
        }
        // A non-empty mix of the three kinds.
        let bits = self.rng.between(1, 7);
        let kinds: Vec<Report> = Report::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, kind)| kind)
            .collect();
        let kinds = Reports::of(&kinds);
        let to = self.rng.index(self.nodes.len());
        let manager = self.nodes[to].name.to_string();
        self.checker.reports_asked(key, kinds, &manager);
        headers.insert(REPORTS_HEADER.to_owned(), kinds.to_string());
        (headers, Some(format!("{REPORT_QUEUE}@{manager}")))
    }

    /// Deals with `delivery`, got from `queue`, if it is a report or was got from a report
    /// queue: returns whether it did.
    pub(crate) fn report_delivery(&mut self, queue: &str, delivery: &Delivery) -> bool {
        let report = delivery.headers.contains_key(REPORT_HEADER);
        if queue == REPORT_QUEUE && !report {
            let body = String::from_utf8_lossy(&delivery.body);
            let violation = format!("{body:?}, not a report, was in a report queue");
            self.checker.violation(violation);
            return true;
        }
        if !report {
            return false;
        }
        if queue != REPORT_QUEUE && queue != qmgr::manager::DEAD_LETTER_QUEUE {
            let violation = format!("a report was in queue {queue}: {:?}", delivery.headers);
            self.checker.violation(violation);
        }
        self.digest.add(&format!(
            "report {:?} {:?}",
            delivery.correlation_id,
            delivery.headers.get(REPORT_HEADER)
        ));
        self.checker.report_received(delivery);
        true
    }
}

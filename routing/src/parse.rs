//! Turns the text of `topology.toml` into a [`Topology`], or into every error it holds.
//!
//! Three passes: every unknown key (a walk of the parsed document, since serde stops at the
//! first), serde with spans (syntax, wrong types: the first such error stops it), then the
//! semantic checks, which collect every error so an operator fixes a file in one round. Warnings come from [`crate::analysis`] once the file is valid.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::analysis::{self, Finding};
use crate::diagnostic::{Diagnostic, SourceMap, TopologyError};
use crate::names::{ManagerName, QueueName};
use crate::network::Network;
use crate::topology::{
    COST_MAX, LINKS_MAX, Link, LinkKey, MANAGERS_MAX, Manager, PeerAddress, QUEUES_MAX, Queue,
    TOPOLOGY_BYTES_MAX, Topology,
};

/// The largest per-queue message limit a topology may declare.
pub const QUEUE_MESSAGE_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// A valid topology and the warnings found in it.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The network.
    pub topology: Topology,
    /// Findings that do not stop the topology from being used.
    pub warnings: Vec<Diagnostic>,
}

/// Reads and checks a topology file.
pub fn load(path: &Path) -> Result<Checked, TopologyError> {
    let io = |error| TopologyError::Io {
        path: path.to_owned(),
        error,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let bytes = file.metadata().map_err(io)?.len();
    if bytes > TOPOLOGY_BYTES_MAX {
        return Err(TopologyError::TooLarge {
            path: path.to_owned(),
            bytes,
            limit: TOPOLOGY_BYTES_MAX,
        });
    }
    let mut text = String::new();
    // The extra byte turns a file that grew since `metadata` into a TooLarge, not a cut read.
    file.take(TOPOLOGY_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > TOPOLOGY_BYTES_MAX {
        return Err(TopologyError::TooLarge {
            path: path.to_owned(),
            bytes: text.len() as u64,
            limit: TOPOLOGY_BYTES_MAX,
        });
    }
    parse(&text, &path.display().to_string())
}

/// Checks the text of a topology file; `file` is the name used in diagnostics.
pub fn parse(text: &str, file: &str) -> Result<Checked, TopologyError> {
    let map = SourceMap::new(file, text);
    let unknown = unknown_keys(text, &map);
    if !unknown.is_empty() {
        return Err(TopologyError::Invalid { errors: unknown });
    }
    let raw: RawTopology = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let mut message = e.message().trim_end().to_owned();
        if message == "duplicate key" {
            // toml names no key; the span holds it.
            let key = text.get(span.clone()).unwrap_or_default();
            message = format!("duplicate key `{key}`: a name is declared once");
        }
        TopologyError::Invalid {
            errors: vec![map.error(span.start, message)],
        }
    })?;
    let mut check = Check {
        map: &map,
        errors: Vec::new(),
    };
    let (topology, spans) = check.topology(raw);
    if !check.errors.is_empty() {
        check.errors.sort_by_key(|d| (d.line, d.column));
        return Err(TopologyError::Invalid {
            errors: check.errors,
        });
    }
    let warnings = analysis::findings(&topology, &Network::new(&topology))
        .into_iter()
        .map(|finding| warning(&map, &spans, finding))
        .collect();
    Ok(Checked { topology, warnings })
}

/// The keys of each kind of table, as the `Raw*` types below declare them.
const TOP_KEYS: &[&str] = &["managers", "links", "queues"];
const MANAGER_KEYS: &[&str] = &["address"];
const LINK_KEYS: &[&str] = &["between", "cost"];
const QUEUE_KEYS: &[&str] = &["home", "max_depth", "max_message_bytes"];

/// Every key of `text` the format does not know, in file order, worded as serde words the
/// first one. Nothing when the text does not parse: serde reports the syntax error.
fn unknown_keys(text: &str, map: &SourceMap<'_>) -> Vec<Diagnostic> {
    use toml::de::{DeTable, DeValue};
    let Ok(document) = DeTable::parse(text) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    let mut check = |table: &DeTable<'_>, allowed: &[&str]| {
        for key in table.keys() {
            let name: &str = key.get_ref();
            if !allowed.contains(&name) {
                let expected = match allowed {
                    [one] => format!("expected `{one}`"),
                    _ => format!(
                        "expected one of {}",
                        allowed
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                errors.push(map.error(
                    key.span().start,
                    format!("unknown field `{name}`, {expected}"),
                ));
            }
        }
    };
    let document = document.get_ref();
    check(document, TOP_KEYS);
    let tables = |key: &str| -> Vec<&DeTable<'_>> {
        match document.get(key).map(|v| v.get_ref()) {
            Some(DeValue::Table(named)) => named
                .values()
                .filter_map(|v| match v.get_ref() {
                    DeValue::Table(t) => Some(t),
                    _ => None,
                })
                .collect(),
            Some(DeValue::Array(items)) => items
                .iter()
                .filter_map(|v| match v.get_ref() {
                    DeValue::Table(t) => Some(t),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    for table in tables("managers") {
        check(table, MANAGER_KEYS);
    }
    for table in tables("links") {
        check(table, LINK_KEYS);
    }
    for table in tables("queues") {
        check(table, QUEUE_KEYS);
    }
    errors.sort_by_key(|d| (d.line, d.column));
    errors
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    #[serde(default)]
    managers: BTreeMap<Spanned<String>, RawManager>,
    #[serde(default)]
    links: Vec<RawLink>,
    #[serde(default)]
    queues: BTreeMap<Spanned<String>, RawQueue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManager {
    address: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    between: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    cost: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    home: Spanned<String>,
    #[serde(default)]
    max_depth: Option<Spanned<i64>>,
    #[serde(default)]
    max_message_bytes: Option<Spanned<i64>>,
}

/// Where each declaration starts, for pinning warnings to it.
#[derive(Default)]
struct Spans {
    managers: BTreeMap<ManagerName, usize>,
    links: BTreeMap<LinkKey, usize>,
}

struct Check<'a> {
    map: &'a SourceMap<'a>,
    errors: Vec<Diagnostic>,
}

impl Check<'_> {
    fn error(&mut self, offset: usize, message: impl Into<String>) {
        self.errors.push(self.map.error(offset, message));
    }

    fn topology(&mut self, raw: RawTopology) -> (Topology, Spans) {
        let mut topology = Topology::default();
        let mut spans = Spans::default();
        if raw.managers.is_empty() {
            self.error(
                0,
                "a topology declares at least one manager (`[managers.NAME]`)",
            );
        }
        if raw.managers.len() > MANAGERS_MAX {
            self.error(
                0,
                format!(
                    "{} managers declared; the limit is {MANAGERS_MAX}",
                    raw.managers.len()
                ),
            );
        }
        if raw.links.len() > LINKS_MAX {
            self.error(
                0,
                format!(
                    "{} links declared; the limit is {LINKS_MAX}",
                    raw.links.len()
                ),
            );
        }
        if raw.queues.len() > QUEUES_MAX {
            self.error(
                0,
                format!(
                    "{} queues declared; the limit is {QUEUES_MAX}",
                    raw.queues.len()
                ),
            );
        }
        self.managers(raw.managers, &mut topology, &mut spans);
        self.links(raw.links, &mut topology, &mut spans);
        self.queues(raw.queues, &mut topology);
        (topology, spans)
    }

    fn managers(
        &mut self,
        raw: BTreeMap<Spanned<String>, RawManager>,
        topology: &mut Topology,
        spans: &mut Spans,
    ) {
        let mut addresses: HashMap<PeerAddress, ManagerName> = HashMap::new();
        // Declaration order, so "already used by" names the earlier manager.
        let mut raw: Vec<_> = raw.into_iter().collect();
        raw.sort_by_key(|(name, _)| name.span().start);
        for (name, manager) in raw {
            let offset = name.span().start;
            let name = match ManagerName::new(name.into_inner()) {
                Ok(name) => name,
                Err(e) => {
                    self.error(offset, e.to_string());
                    continue;
                }
            };
            let address = match manager.address.get_ref().parse::<PeerAddress>() {
                Ok(address) => address,
                Err(e) => {
                    self.error(manager.address.span().start, e.to_string());
                    continue;
                }
            };
            match addresses.entry(address.clone()) {
                Entry::Occupied(first) => self.error(
                    manager.address.span().start,
                    format!(
                        "manager `{name}` uses address {address}, already used by manager `{}`",
                        first.get()
                    ),
                ),
                Entry::Vacant(slot) => {
                    slot.insert(name.clone());
                }
            }
            spans.managers.insert(name.clone(), offset);
            topology.managers.insert(
                name.clone(),
                Manager {
                    name,
                    address: Some(address),
                },
            );
        }
    }

    fn links(&mut self, raw: Vec<RawLink>, topology: &mut Topology, spans: &mut Spans) {
        for link in raw {
            let between_offset = link.between.span().start;
            let ends = link.between.into_inner();
            if ends.len() != 2 {
                self.error(
                    between_offset,
                    format!(
                        "a link is between exactly two managers; {} named",
                        ends.len()
                    ),
                );
                continue;
            }
            let mut names = Vec::with_capacity(2);
            for end in ends {
                let offset = end.span().start;
                match ManagerName::new(end.into_inner()) {
                    Ok(name) if topology.managers.contains_key(&name) => names.push(name),
                    Ok(name) => self.error(offset, format!("link to undeclared manager `{name}`")),
                    Err(e) => self.error(offset, e.to_string()),
                }
            }
            let cost = match link.cost {
                None => Some(1),
                Some(cost) => match u32::try_from(*cost.get_ref()) {
                    Ok(value @ 1..=COST_MAX) => Some(value),
                    _ => {
                        self.error(
                            cost.span().start,
                            format!(
                                "link cost {} is out of range; a cost is a whole number from 1 to {COST_MAX}",
                                cost.get_ref()
                            ),
                        );
                        None
                    }
                },
            };
            let [a, b]: [ManagerName; 2] = match names.try_into() {
                Ok(pair) => pair,
                Err(_) => continue,
            };
            let Some(key) = LinkKey::new(a.clone(), b) else {
                self.error(between_offset, format!("link from manager `{a}` to itself"));
                continue;
            };
            if let Some(&first) = spans.links.get(&key) {
                let first_line = self.map.error(first, "").line;
                self.error(
                    between_offset,
                    format!("duplicate link {key}; it is already declared on line {first_line}"),
                );
                continue;
            }
            spans.links.insert(key.clone(), between_offset);
            if let Some(cost) = cost {
                topology.links.insert(key.clone(), Link { key, cost });
            }
        }
    }

    fn queues(&mut self, raw: BTreeMap<Spanned<String>, RawQueue>, topology: &mut Topology) {
        for (name, queue) in raw {
            let offset = name.span().start;
            let name = match QueueName::new(name.into_inner()) {
                Ok(name) => name,
                Err(e) => {
                    self.error(offset, e.to_string());
                    continue;
                }
            };
            let home_offset = queue.home.span().start;
            let home = match ManagerName::new(queue.home.into_inner()) {
                Ok(home) if topology.managers.contains_key(&home) => home,
                Ok(home) => {
                    self.error(
                        home_offset,
                        format!("queue `{name}` is homed on undeclared manager `{home}`"),
                    );
                    continue;
                }
                Err(e) => {
                    self.error(home_offset, e.to_string());
                    continue;
                }
            };
            let max_depth = self.positive(queue.max_depth, "max_depth", u64::MAX);
            let max_message_bytes = self.positive(
                queue.max_message_bytes,
                "max_message_bytes",
                QUEUE_MESSAGE_BYTES_MAX,
            );
            topology.queues.insert(
                name.clone(),
                Queue {
                    name,
                    home,
                    max_depth,
                    max_message_bytes,
                },
            );
        }
    }

    fn positive(&mut self, value: Option<Spanned<i64>>, key: &str, max: u64) -> Option<u64> {
        let value = value?;
        match u64::try_from(*value.get_ref()) {
            Ok(n) if (1..=max).contains(&n) => Some(n),
            _ => {
                self.error(
                    value.span().start,
                    format!(
                        "{key} {} is out of range; expected 1 to {max}",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }
}

fn warning(map: &SourceMap<'_>, spans: &Spans, finding: Finding) -> Diagnostic {
    let at_manager = |name: &ManagerName| spans.managers.get(name).copied().unwrap_or(0);
    match finding {
        Finding::Split { component, others } => map.warning(
            at_manager(&component[0]),
            format!(
                "network is split: {} cannot reach the other {others} manager(s)",
                list(&component)
            ),
        ),
        Finding::CutManager { manager, cut_off } => map.warning(
            at_manager(&manager),
            format!(
                "manager `{manager}` is a single point of failure: losing it cuts off {}",
                list(&cut_off)
            ),
        ),
        Finding::CutLink { link } => map.warning(
            spans.links.get(&link).copied().unwrap_or(0),
            format!("link {link} is a single point of failure: losing it splits the network"),
        ),
    }
}

/// `a, b, c` for short lists, `a, b, c and 7 more` for long ones.
fn list(names: &[ManagerName]) -> String {
    const SHOWN_MAX: usize = 5;
    let shown: Vec<_> = names
        .iter()
        .take(SHOWN_MAX)
        .map(|n| format!("`{n}`"))
        .collect();
    match names.len().checked_sub(SHOWN_MAX) {
        Some(more) if more > 0 => format!("{} and {more} more", shown.join(", ")),
        _ => shown.join(", "),
    }
}

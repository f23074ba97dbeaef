//! The simulated network's shape, and the edits an operator makes to it.
//!
//! A shape is what `topology.toml` declares, kept as indices so it can be edited: a ring of
//! links that every edit keeps (so the network stays connected and every message stays
//! deliverable), chords that edits add and remove, costs that edits change, and one queue per
//! manager whose home edits may move (`q0` small, so it overflows to the dead-letter queue). Each version is rendered and parsed by the real parser.

use std::collections::BTreeMap;
use std::fmt::Write;

use hopmq_routing::Topology;

use crate::rng::Rng;

/// The depth limit of `q0`, the one small queue.
const SMALL_QUEUE_DEPTH: u64 = 40;

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    managers: usize,
    /// Links as (lower index, higher index) with their cost.
    links: BTreeMap<(usize, usize), u32>,
    /// Queue `i`'s home. Links an edit removes stay removed: what was given to their
    /// channels goes around them (custody), so nothing waits for their return.
    homes: Vec<usize>,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Shape {
    /// A ring (a line for two) with a few chords and random costs; queue `qI` homed on `mI`.
    pub(crate) fn random(rng: &mut Rng, managers: usize) -> Self {
        let mut shape = Shape {
            managers,
            links: BTreeMap::new(),
            homes: (0..managers).collect(),
        };
        for i in 0..managers {
            let j = (i + 1) % managers;
            if i != j {
                let cost = rng.between(1, 3) as u32;
                shape.links.insert(pair(i, j), cost);
            }
        }
        for _ in 0..managers / 2 {
            shape.add_chord(rng);
        }
        shape
    }

    fn in_ring(&self, (a, b): (usize, usize)) -> bool {
        b == a + 1 || (a == 0 && b == self.managers - 1)
    }

    fn add_chord(&mut self, rng: &mut Rng) -> bool {
        let (a, b) = (rng.index(self.managers), rng.index(self.managers));
        if a == b || self.links.contains_key(&pair(a, b)) {
            return false;
        }
        let cost = rng.between(1, 3) as u32;
        self.links.insert(pair(a, b), cost);
        true
    }

    /// One random edit; returns what it did, for the trace (nothing if it found none to make).
    pub(crate) fn edit(&mut self, rng: &mut Rng) -> Option<String> {
        match rng.below(10) {
            0..=3 => self.add_chord(rng).then(|| "add a link".to_owned()),
            4..=6 => {
                let chords: Vec<(usize, usize)> = self
                    .links
                    .keys()
                    .copied()
                    .filter(|&l| !self.in_ring(l))
                    .collect();
                let chord = *chords.get(rng.index(chords.len()))?;
                self.links.remove(&chord);
                Some(format!("remove link {chord:?}"))
            }
            7..=8 => {
                let links: Vec<(usize, usize)> = self.links.keys().copied().collect();
                let link = links[rng.index(links.len())];
                let cost = rng.between(1, 5) as u32;
                self.links.insert(link, cost);
                Some(format!("link {link:?} costs {cost}"))
            }
            _ => {
                let queue = rng.index(self.homes.len());
                let home = rng.index(self.managers);
                self.homes[queue] = home;
                Some(format!("q{queue} moves to m{home}"))
            }
        }
    }

    /// The home of queue `name` (`qI`), if it is one of the shape's.
    pub(crate) fn home(&self, name: &str) -> Option<usize> {
        let index: usize = name.strip_prefix('q')?.parse().ok()?;
        self.homes.get(index).copied()
    }

    /// Whether managers `a` and `b` are linked.
    pub(crate) fn linked(&self, a: usize, b: usize) -> bool {
        self.links.contains_key(&pair(a, b))
    }

    /// Links, as index pairs.
    pub(crate) fn links(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.links.keys().copied()
    }

    /// Managers linked to `index`.
    pub(crate) fn neighbours(&self, index: usize) -> Vec<usize> {
        self.links
            .keys()
            .filter_map(|&(a, b)| match index {
                i if i == a => Some(b),
                i if i == b => Some(a),
                _ => None,
            })
            .collect()
    }

    /// The queues and their homes.
    pub(crate) fn queues(&self) -> impl Iterator<Item = (String, usize)> + '_ {
        self.homes
            .iter()
            .enumerate()
            .map(|(queue, &home)| (format!("q{queue}"), home))
    }

    /// The topology file of this shape, parsed as a manager would.
    pub(crate) fn topology(&self) -> Topology {
        let mut text = String::new();
        for i in 0..self.managers {
            let _ = writeln!(
                text,
                "[managers.m{i}]\naddress = \"127.0.0.1:{}\"",
                7000 + i
            );
        }
        for (&(a, b), cost) in &self.links {
            let _ = writeln!(
                text,
                "[[links]]\nbetween = [\"m{a}\", \"m{b}\"]\ncost = {cost}"
            );
        }
        for (queue, home) in self.queues() {
            let _ = writeln!(text, "[queues.{queue}]\nhome = \"m{home}\"");
            if queue == "q0" {
                // Small, so that arrivals overflow it to the dead-letter queue now and then.
                let _ = writeln!(text, "max_depth = {SMALL_QUEUE_DEPTH}");
            }
        }
        match hopmq_routing::parse(&text, "topology.toml") {
            Ok(checked) => checked.topology,
            Err(error) => unreachable!("the simulator's topology is valid: {error}"),
        }
    }
}

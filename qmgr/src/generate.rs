//! Random connected meshes, for experiments and benchmarks: a random spanning tree (so every
//! manager reaches every other) plus random extra links, from a seed so a mesh can be made
//! again exactly.

use std::collections::BTreeSet;
use std::fmt::Write;

/// The shape of a mesh to generate.
#[derive(Debug, Clone, Copy)]
pub struct MeshSpec {
    pub managers: usize,
    pub links: usize,
    pub seed: u64,
    pub base_port: u16,
    pub cost_max: u32,
}

/// splitmix64: tiny, fast, and the same sequence on every platform for a seed. The one
/// source of seeded randomness of the house (meshes, channel epochs, the simulator).
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must not be 0.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The text of a `topology.toml` with `spec.managers` managers and `spec.links` links (fewer if
/// the graph cannot hold that many). Managers listen on consecutive loopback ports.
pub fn mesh(spec: MeshSpec) -> anyhow::Result<String> {
    let n = spec.managers;
    anyhow::ensure!(n >= 1, "a mesh needs at least one manager");
    anyhow::ensure!(
        n <= usize::from(u16::MAX - spec.base_port),
        "{n} managers do not fit in the ports above {}",
        spec.base_port
    );
    let most_links = n * (n - 1) / 2;
    let wanted = spec.links.clamp(n - 1, most_links);
    let mut rng = SplitMix(spec.seed);
    let mut pairs = BTreeSet::new();
    let mut links = Vec::with_capacity(wanted);
    for i in 1..n {
        let parent = rng.below(i);
        pairs.insert((parent, i));
        links.push((parent, i));
    }
    while links.len() < wanted {
        let (a, b) = (rng.below(n), rng.below(n));
        if a != b && pairs.insert((a.min(b), a.max(b))) {
            links.push((a.min(b), a.max(b)));
        }
    }
    let width = n.to_string().len().max(2);
    let name = |i: usize| format!("m{i:0width$}");
    let mut out = format!(
        "# A random connected mesh: {n} managers, {} links, seed {}.\n",
        links.len(),
        spec.seed
    );
    for i in 0..n {
        let port = usize::from(spec.base_port) + i;
        write!(
            out,
            "\n[managers.{}]\naddress = \"127.0.0.1:{port}\"\n",
            name(i)
        )?;
    }
    for (a, b) in links {
        let cost = 1 + rng.below(spec.cost_max.max(1) as usize);
        write!(
            out,
            "\n[[links]]\nbetween = [\"{}\", \"{}\"]\ncost = {cost}\n",
            name(a),
            name(b)
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meshes_are_valid_connected_and_reproducible() {
        let spec = MeshSpec {
            managers: 50,
            links: 120,
            seed: 7,
            base_port: 7400,
            cost_max: 5,
        };
        let text = mesh(spec).unwrap();
        assert_eq!(text, mesh(spec).unwrap());
        let checked = hopmq_routing::parse(&text, "mesh.toml").unwrap();
        assert_eq!(checked.topology.managers().len(), 50);
        assert_eq!(checked.topology.links().len(), 120);
        assert!(!checked.warnings.iter().any(|w| w.message.contains("split")));
    }

    #[test]
    fn link_counts_are_clamped_to_what_the_graph_holds() {
        let spec = MeshSpec {
            managers: 4,
            links: 100,
            seed: 1,
            base_port: 7400,
            cost_max: 1,
        };
        let checked = hopmq_routing::parse(&mesh(spec).unwrap(), "m.toml").unwrap();
        assert_eq!(checked.topology.links().len(), 6);
    }
}

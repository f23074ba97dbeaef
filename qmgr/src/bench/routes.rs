//! Route computation speed on generated meshes: what a manager pays on start-up, on every
//! topology edit and on every link-state change.

use qmgr::outln;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use hopmq_routing::{DownLinks, Network};

use qmgr::generate::{MeshSpec, mesh};

#[derive(Debug, clap::Args)]
pub(crate) struct RoutesBench {
    /// Managers in the large mesh (one manager's table).
    #[arg(long, default_value_t = 1000)]
    managers: usize,
    /// Links in the large mesh.
    #[arg(long, default_value_t = 5000)]
    links: usize,
    /// Managers in the all-pairs mesh.
    #[arg(long, default_value_t = 200)]
    all_pairs_managers: usize,
    /// Links in the all-pairs mesh.
    #[arg(long, default_value_t = 1000)]
    all_pairs_links: usize,
    /// Timed runs of each measurement.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Mesh seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl RoutesBench {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        anyhow::ensure!(self.runs > 0, "--runs must be at least 1");
        let network = self.network(self.managers, self.links)?;
        let names: Vec<_> = network.graph().node_weights().cloned().collect();
        let down = DownLinks::new();
        let mut samples = Vec::with_capacity(self.runs);
        for run in 0..self.runs {
            let source = &names[run * 7919 % names.len()];
            let start = Instant::now();
            black_box(network.routes_from(source.as_str(), &down));
            samples.push(start.elapsed());
        }
        outln!(
            "one manager's table, {} managers / {} links: {}",
            self.managers,
            network.graph().edge_count(),
            super::summary(&mut samples)
        )?;

        let network = self.network(self.all_pairs_managers, self.all_pairs_links)?;
        let mut samples = Vec::with_capacity(self.runs);
        for _ in 0..self.runs {
            let start = Instant::now();
            black_box(network.all_routes(&down));
            samples.push(start.elapsed());
        }
        outln!(
            "all-pairs tables, {} managers / {} links: {}",
            self.all_pairs_managers,
            network.graph().edge_count(),
            super::summary(&mut samples)
        )?;
        Ok(ExitCode::SUCCESS)
    }

    fn network(&self, managers: usize, links: usize) -> anyhow::Result<Network> {
        let spec = MeshSpec {
            managers,
            links,
            seed: self.seed,
            base_port: 10_000,
            cost_max: 10,
        };
        let topology = hopmq_routing::parse(&mesh(spec)?, "generated")?.topology;
        Ok(Network::new(&topology))
    }
}

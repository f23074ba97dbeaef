//! `qmgr certs ...`: make the development certificates that managers' links authenticate
//! with. Offline: reads a topology file, writes a folder, never talks to a manager.

use crate::outln;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use hopmq_routing::TopologyError;

use crate::certs::{self, CA_CERT_FILE, CA_KEY_FILE, VALIDITY_DAYS};

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make a development CA and a certificate and key for every manager in a topology.
    ///
    /// Writes DIR/ca.pem and DIR/ca.key, then DIR/<manager>.pem and DIR/<manager>.key for each
    /// manager: the manager's name is the certificate's DNS subject alternative name and common
    /// name. Keys are owner-only (0600) and DIR is created owner-only (0700). Certificates are
    /// valid for ten years: this is a development CA, for experiments and tests, not for
    /// production. Running it again reuses the CA and keeps existing files, so adding a manager
    /// to the topology and re-running issues only the new one.
    Init {
        /// The topology file naming the managers.
        #[arg(long)]
        topology: PathBuf,
        /// The folder to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Make every manager's certificate and key again, even those that exist (the CA is
        /// always kept).
        #[arg(long)]
        force: bool,
    },
}

impl CertsCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::Init {
                topology,
                out,
                force,
            } => init(&topology, &out, force),
        }
    }
}

fn init(topology_file: &Path, out: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let topology = match hopmq_routing::load(topology_file) {
        Ok(checked) => checked.topology,
        Err(TopologyError::Invalid { errors }) => {
            for error in &errors {
                eprint!("{}", error.render());
            }
            eprintln!(
                "{}: refused: {} error(s); no certificates made",
                topology_file.display(),
                errors.len()
            );
            return Ok(ExitCode::FAILURE);
        }
        Err(other) => return Err(other.into()),
    };
    let now = time::OffsetDateTime::now_utc();
    let report = certs::init(&topology, out, force, now)
        .with_context(|| format!("cannot make certificates in {}", out.display()))?;
    let ca_note = match report.ca {
        certs::Fate::Created => format!(" (development CA, valid for {VALIDITY_DAYS} days)"),
        _ => String::new(),
    };
    outln!("{}: {CA_CERT_FILE}, {CA_KEY_FILE}{ca_note}", report.ca)?;
    for (manager, fate) in &report.managers {
        outln!("{fate}: {manager}.pem, {manager}.key")?;
    }
    outln!("in {}", out.display())?;
    Ok(ExitCode::SUCCESS)
}

//! The web console during a bench: off, served but unwatched, or watched on every manager.
//!
//! A watched console is a task per manager that reads what the console's pages read, as often
//! as an open page does ([`POLL`]): every page's reads at once, more than any one open page
//! makes. A browser draws the page elsewhere, on the operator's machine; only these reads
//! cost the manager anything. Every read must answer `200 OK`, or the bench fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// How often an open page reads (the console's `POLL_MS`).
pub(super) const POLL: Duration = Duration::from_secs(2);
/// What the pages read: the map, the queues (with their history) and the manager's page.
const PATHS: [&str; 4] = [
    "/api/network",
    "/api/queues",
    "/api/history",
    "/api/manager",
];
/// The longest a read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a manager's console gets to answer before the bench starts.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The console during a bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ConsoleUse {
    /// No console (`http_listen` unset).
    Off,
    /// Every manager serves the console; nobody looks.
    Idle,
    /// Every manager serves the console, and a page is open on each.
    Watched,
}

impl ConsoleUse {
    pub(super) fn served(self) -> bool {
        self != Self::Off
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Off => "console off",
            Self::Idle => "console served, unwatched",
            Self::Watched => "console watched on every manager",
        }
    }
}

/// The watching tasks; they stop when this is dropped.
pub(super) struct Viewers {
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    reads: Arc<AtomicU64>,
}

impl Drop for Viewers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Viewers {
    /// Waits until every console answers, then opens a page on each (`ports`).
    pub(super) async fn open(ports: &[u16]) -> anyhow::Result<Self> {
        for &port in ports {
            wait_ready(port).await?;
        }
        let reads = Arc::new(AtomicU64::new(0));
        let tasks = ports
            .iter()
            .map(|&port| tokio::spawn(watch(port, Arc::clone(&reads))))
            .collect();
        Ok(Self { tasks, reads })
    }

    /// Stops watching: the reads made, or the first that failed.
    pub(super) async fn close(mut self) -> anyhow::Result<u64> {
        for task in std::mem::take(&mut self.tasks) {
            if task.is_finished() {
                task.await.context("a console viewer panicked")??;
            } else {
                task.abort();
            }
        }
        Ok(self.reads.load(Ordering::Relaxed))
    }
}

async fn watch(port: u16, reads: Arc<AtomicU64>) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for path in PATHS {
            let status = get(port, path).await?;
            if status != 200 {
                bail!("the console on port {port} answered {path} with {status}");
            }
            reads.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn wait_ready(port: u16) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if matches!(get(port, "/").await, Ok(200)) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the console on port {port} did not answer within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET path` on 127.0.0.1:`port`, one connection per read as a browser's polling often
/// makes; the response's status.
async fn get(port: u16, path: &str) -> anyhow::Result<u16> {
    let read = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .with_context(|| format!("GET {path} on port {port} took over {READ_TIMEOUT:?}"))?
        .with_context(|| format!("GET {path} on port {port}"))?;
    let head = String::from_utf8_lossy(&response[..response.len().min(32)]).into_owned();
    head.split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .with_context(|| format!("GET {path} on port {port}: no HTTP status in {head:?}"))
}

/// A free TCP port of 127.0.0.1 (free when asked: the manager binds it moments later).
pub(super) fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free TCP port")?;
    Ok(listener.local_addr()?.port())
}

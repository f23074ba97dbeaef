//! A pool of workers sharing one queue with leased gets: each job is acked when done, or
//! nacked to hand it back (here: every job's first delivery whose number is divisible by 5,
//! to show a redelivery). A job whose worker dies before the ack returns to the queue when
//! its lease ends, so none is lost; one delivered `max_deliveries` times goes to `DLQ`.
//!
//! ```sh
//! cargo run -p hopmq --example worker_pool -- [JOBS] [WORKERS]     # default 20 jobs, 4 workers
//! ```

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hopmq::{Client, ClientError, Message};

/// The queue this example fills and drains.
const QUEUE: &str = "examples.jobs";
/// How long a worker may hold a job before the manager gives it to another.
const LEASE: Duration = Duration::from_secs(30);
/// How long an idle worker waits for a job before it stops.
const IDLE: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let jobs: u32 = args.next().map_or(Ok(20), |a| a.parse())?;
    let workers: u32 = args.next().map_or(Ok(4), |a| a.parse())?;
    let client = Client::connect().await?;

    for job in 0..jobs {
        client
            .put(
                QUEUE,
                Message::new(format!("job {job}")).header("job", job.to_string()),
            )
            .await?;
    }
    println!("put {jobs} jobs to {QUEUE}");

    // One client is enough: it multiplexes the workers' calls over one connection, and a
    // lease is acked on the connection that took it.
    let done = Arc::new(Mutex::new(BTreeSet::new()));
    let mut pool = tokio::task::JoinSet::new();
    for worker in 0..workers {
        pool.spawn(work(worker, client.clone(), Arc::clone(&done)));
    }
    while let Some(result) = pool.join_next().await {
        result??;
    }
    let done = done.lock().map_err(|_| "a worker panicked")?;
    println!("{} of {jobs} jobs done", done.len());
    if done.len() != jobs as usize {
        return Err(format!("{} jobs were not done", jobs as usize - done.len()).into());
    }
    Ok(())
}

/// Takes jobs until the queue stays empty for [`IDLE`].
async fn work(
    worker: u32,
    client: Client,
    done: Arc<Mutex<BTreeSet<u32>>>,
) -> Result<(), ClientError> {
    while let Some(message) = client.get_leased(QUEUE, IDLE, LEASE).await? {
        let Some(lease) = message.lease else { continue };
        let job: u32 = message
            .headers
            .get("job")
            .and_then(|job| job.parse().ok())
            .unwrap_or_default();
        if job % 5 == 0 && message.delivery_count == 1 {
            // Not now: back to the queue at once, for this or another worker.
            println!("worker {worker}: job {job}, delivery 1: nack");
            client.nack(vec![lease]).await?;
            continue;
        }
        // ... the work itself ...
        client.ack(vec![lease]).await?;
        println!(
            "worker {worker}: job {job}, delivery {}: done",
            message.delivery_count
        );
        if let Ok(mut done) = done.lock() {
            done.insert(job);
        }
    }
    Ok(())
}

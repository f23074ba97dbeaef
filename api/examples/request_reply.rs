//! Request/reply: a server answers requests from a queue with `reply` (the reply and the
//! request's ack in one write, so each request is answered once even if the server dies), and
//! a client sends several requests at once and collects their replies as they come (deferred
//! synchronous: each `request` is a future to hold and await later).
//!
//! ```sh
//! cargo run -p hopmq --example request_reply -- [REQUESTS]     # default 5
//! ```

use std::time::Duration;

use hopmq::{Client, Message};

/// The queue the server answers.
const QUEUE: &str = "examples.prices";
/// How long the server holds a request before the manager gives it to another server.
const LEASE: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests: u32 = std::env::args().nth(1).map_or(Ok(5), |a| a.parse())?;
    let client = Client::connect().await?;

    // The server: its own connection, as it would be in another process.
    let server = Client::connect().await?;
    let serving = tokio::spawn(async move {
        for _ in 0..requests {
            let Some(request) = server
                .get_leased(QUEUE, Duration::from_secs(10), LEASE)
                .await?
            else {
                break;
            };
            let item = request.text().unwrap_or_default().to_owned();
            let price = 100 + item.len();
            server
                .reply(&request, Message::new(format!("{item} costs {price}")))
                .await?;
        }
        Ok::<_, hopmq::ClientError>(())
    });

    // Every request in flight at once; their replies collected in order.
    let pending: Vec<_> = (0..requests)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                let question = Message::new(format!("item {n}"));
                client
                    .request(QUEUE, question, Duration::from_secs(10))
                    .await
            })
        })
        .collect();
    for call in pending {
        let reply = call.await??;
        println!("reply: {}", reply.text().unwrap_or_default());
    }
    serving.await??;
    Ok(())
}

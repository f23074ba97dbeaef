//! Being told of new messages: `notify` calls a handler with a copy of every message put into a
//! queue from now on (the messages stay in the queue for its consumers).
//!
//! ```sh
//! cargo run -p hopmq --example notify -- [COUNT]     # puts COUNT messages (default 3) itself
//! ```

use std::time::Duration;

use hopmq::{Client, Message};
use tokio::sync::mpsc;

const QUEUE: &str = "examples.events";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = std::env::args().nth(1).map_or(Ok(3), |a| a.parse())?;
    let client = Client::connect().await?;

    // The handler runs on its own task, one message at a time; it hands each one over here.
    let (seen, mut notified) = mpsc::unbounded_channel();
    let handle = client
        .notify(QUEUE, move |message| {
            let _ = seen.send(message.text().unwrap_or("<not UTF-8>").to_owned());
        })
        .await?;

    for n in 0..count {
        client
            .put(QUEUE, Message::new(format!("event {n}")))
            .await?;
    }
    for _ in 0..count {
        match tokio::time::timeout(Duration::from_secs(10), notified.recv()).await {
            Ok(Some(text)) => println!("notified: {text}"),
            _ => return Err("no notification within 10 s".into()),
        }
    }
    handle.cancel().await?;

    // The notifications were copies: the messages are still there. Take them.
    let mut left = 0;
    while client.poll(QUEUE).await?.is_some() {
        left += 1;
    }
    println!("{left} messages were still in {QUEUE}; taken");
    Ok(())
}

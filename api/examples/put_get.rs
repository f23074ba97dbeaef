//! Put a message on the local manager, then get it back: the first program a user writes.
//!
//! Start a manager (`qmgr run`) in this folder, or point at one with `HOPMQ_SOCKET`, then:
//!
//! ```sh
//! cargo run -p hopmq --example put_get -- [QUEUE]      # default queue: examples.hello
//! ```

use std::time::Duration;

use hopmq::{Client, Message};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples.hello".into());
    // $HOPMQ_SOCKET, else ./qmgr-data/qmgr.sock (hopmq::client::SOCKET_PATH_DEFAULT).
    let client = Client::connect().await?;

    // Returns once the message is on the manager's disk.
    let message = Message::new("hello, hopmq").header("greeting", "yes");
    let id = client.put(&queue, message).await?;
    println!("put {id} to {queue} at manager {}", client.manager());

    // Waits up to five seconds for a message; `None` if none came.
    match client.get(&queue, Duration::from_secs(5)).await? {
        Some(message) => println!(
            "got {}: {} (headers {:?})",
            message.id,
            message.text().unwrap_or("<not UTF-8>"),
            message.headers
        ),
        None => println!("nothing in {queue} within 5 s"),
    }
    Ok(())
}

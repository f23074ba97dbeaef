//! The prefetching [`Consumer`]: a task keeps gets in flight on the client's connection and
//! fills a bounded buffer, whose free room is all it ever asks the manager for.

use std::collections::VecDeque;

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::connection::Sent;
use super::{CONSUMER_GETS_IN_FLIGHT, CONSUMER_WAIT, Client, ClientError, millis, unexpected};
use crate::message::Message;
use crate::protocol::{BATCH_MESSAGES_MAX, Operation, Reply, Selector};

/// A prefetching, destructive consumer of one queue, from [`Client::consumer`].
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    queue: String,
    prefetch: u32,
    /// Fed by the prefetch task; `None` until the first `next` and after an error ended it.
    fetched: Option<Fetched>,
}

#[derive(Debug)]
struct Fetched {
    messages: mpsc::Receiver<Result<Message, ClientError>>,
    task: AbortHandle,
}

impl Drop for Fetched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Consumer {
    /// A consumer of `queue` on `client`; it starts fetching at the first [`next`](Self::next).
    pub(super) fn new(client: Client, queue: &str, prefetch: u32) -> Self {
        Self {
            client,
            queue: queue.to_string(),
            prefetch: prefetch.clamp(1, BATCH_MESSAGES_MAX),
            fetched: None,
        }
    }

    /// The next message, waiting as long as it takes. An error (a lost connection) stops the
    /// prefetching; the next call starts it again, reconnecting if need be.
    pub async fn next(&mut self) -> Result<Message, ClientError> {
        loop {
            let fetched = match &mut self.fetched {
                Some(fetched) => fetched,
                None => self.fetched.insert(self.start()),
            };
            match fetched.messages.recv().await {
                Some(Ok(message)) => return Ok(message),
                Some(Err(error)) => {
                    self.fetched = None;
                    return Err(error);
                }
                // The task ended without a word (it panicked): start over.
                None => self.fetched = None,
            }
        }
    }

    /// The queue consumed.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    fn start(&self) -> Fetched {
        // The channel's capacity is the prefetch limit: the task only asks for as many messages
        // as it holds free slots for, so fetched-but-untaken messages never exceed `prefetch`.
        let (sender, messages) = mpsc::channel(self.prefetch as usize);
        let task = tokio::spawn(prefetch(self.client.clone(), self.queue.clone(), sender));
        Fetched {
            messages,
            task: task.abort_handle(),
        }
    }
}

/// Room reserved in a consumer's buffer for what one get may bring.
type Permits = Vec<mpsc::OwnedPermit<Result<Message, ClientError>>>;

async fn prefetch(
    client: Client,
    queue: String,
    sender: mpsc::Sender<Result<Message, ClientError>>,
) {
    // Two gets in flight, each with room reserved for half the window: while one waits for
    // its removal to be made durable, the other is already being served. Replies on one
    // connection come back in request order, and the oldest get is always delivered first, so
    // the consumer still sees the queue's order.
    let share = (sender.max_capacity() / CONSUMER_GETS_IN_FLIGHT).max(1);
    let mut in_flight: VecDeque<(Permits, Sent)> = VecDeque::new();
    loop {
        while in_flight.len() < CONSUMER_GETS_IN_FLIGHT {
            let mut permits = Vec::with_capacity(share);
            if in_flight.is_empty() {
                let Ok(first) = sender.clone().reserve_owned().await else {
                    return;
                };
                permits.push(first);
            }
            while permits.len() < share {
                match sender.clone().try_reserve_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            if permits.is_empty() {
                break;
            }
            let operation = Operation::Get {
                queue: queue.clone(),
                timeout_ms: millis(CONSUMER_WAIT),
                max: u32::try_from(permits.len()).unwrap_or(BATCH_MESSAGES_MAX),
                selector: Selector::default(),
                lease_ms: None,
            };
            // Sent here, in order, rather than from spawned tasks: the manager serves gets in
            // the order they arrive, and the oldest is the one awaited first.
            let sent = match client.connection().await {
                Ok(connection) => connection.send(operation, None).await,
                Err(error) => Err(error),
            };
            match sent {
                Ok(sent) => in_flight.push_back((permits, sent)),
                Err(error) => {
                    deliver_error(in_flight, permits, error).await;
                    return;
                }
            }
        }
        let Some((permits, sent)) = in_flight.pop_front() else {
            continue;
        };
        let result = match sent.wait().await {
            Ok(Reply::Messages(deliveries)) => Ok(deliveries
                .into_iter()
                .map(Message::from)
                .collect::<Vec<_>>()),
            Ok(reply) => Err(unexpected("consumer get", &reply)),
            Err(error) => Err(error),
        };
        match result {
            Ok(messages) => {
                // The manager returns at most `max` messages; `zip` keeps the bound if not.
                for (permit, message) in permits.into_iter().zip(messages) {
                    permit.send(Ok(message));
                }
            }
            Err(error) => {
                deliver_error(in_flight, permits, error).await;
                return;
            }
        }
    }
}

/// Ends a consumer's prefetching with `error`, after handing over what the gets still in
/// flight before it bring (they were taken from the queue: dropping them would lose them).
async fn deliver_error(in_flight: VecDeque<(Permits, Sent)>, permits: Permits, error: ClientError) {
    let mut error_permit = permits.into_iter().next();
    for (permits, sent) in in_flight {
        if let Ok(Reply::Messages(deliveries)) = sent.wait().await {
            for (permit, delivery) in permits.into_iter().zip(deliveries) {
                permit.send(Ok(Message::from(delivery)));
            }
        }
    }
    if let Some(permit) = error_permit.take() {
        permit.send(Err(error));
    }
}

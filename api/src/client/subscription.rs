//! Being told of new messages: a [`Subscription`] yields a copy of each message put into a
//! queue, and a [`NotifyHandle`] runs a handler on each of them on its own task.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::connection::{Connection, Event};
use super::{ClientError, done};
use crate::message::Message;
use crate::protocol::Operation;

/// Stops a [`Client::notify`](super::Client::notify) handler when dropped or cancelled.
#[derive(Debug)]
pub struct NotifyHandle {
    cancel: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ClientError>>>,
}

impl NotifyHandle {
    /// Runs `handler` on each message of `subscription` until cancelled.
    pub(super) fn start<F>(subscription: Subscription, handler: F) -> Self
    where
        F: FnMut(Message) + Send + 'static,
    {
        let (cancel, cancelled) = oneshot::channel();
        let task = tokio::spawn(run_handler(subscription, handler, cancelled));
        Self {
            cancel: Some(cancel),
            task: Some(task),
        }
    }

    /// Stops the handler and waits until the manager has ended the subscription. Errors only
    /// if the unsubscribe itself failed; a connection that dropped already ended it.
    pub async fn cancel(mut self) -> Result<(), ClientError> {
        drop(self.cancel.take());
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }

    /// Whether the handler has stopped (cancelled, or its connection dropped).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for NotifyHandle {
    fn drop(&mut self) {
        // Dropping `cancel` tells the task to unsubscribe and stop; it needs no one to wait.
        drop(self.cancel.take());
    }
}

async fn run_handler<F>(
    mut subscription: Subscription,
    mut handler: F,
    mut cancelled: oneshot::Receiver<()>,
) -> Result<(), ClientError>
where
    F: FnMut(Message) + Send + 'static,
{
    loop {
        tokio::select! {
            biased;
            _ = &mut cancelled => return subscription.cancel().await,
            message = subscription.next() => match message {
                Some(message) => handler(message),
                None => return Ok(()),
            },
        }
    }
}

/// Copies of the messages put into a queue, from
/// [`Client::subscribe`](super::Client::subscribe); also a
/// [`Stream`](futures_core::Stream). Ends (`None`) when the connection drops. Dropping it
/// unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    /// `None` once unsubscribed.
    id: Option<u64>,
    events: mpsc::Receiver<Event>,
    /// The subscription lives on this connection only, not on the client's latest one.
    connection: Arc<Connection>,
}

impl Subscription {
    /// Subscription `id`, accepted on `connection`, whose events arrive on `events`.
    pub(super) fn new(id: u64, events: mpsc::Receiver<Event>, connection: Arc<Connection>) -> Self {
        Self {
            id: Some(id),
            events,
            connection,
        }
    }

    /// The next message put into the queue; `None` once the subscription has ended.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            match self.events.recv().await? {
                Event::Message(delivery) => return Some(Message::from(delivery)),
                // Only topic subscriptions are told of losses; see `TopicSubscription`.
                Event::Missed(_) => {}
            }
        }
    }

    async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The subscription's id on its connection.
    pub fn id(&self) -> Option<u64> {
        self.id
    }

    /// Unsubscribes and waits for the manager to confirm. A dropped connection already ended
    /// the subscription, so that is not an error.
    pub async fn cancel(mut self) -> Result<(), ClientError> {
        let Some(id) = self.id.take() else {
            return Ok(());
        };
        self.events.close();
        let operation = Operation::Unsubscribe { subscription: id };
        match self.connection.call(operation, None).await {
            Ok(reply) => done("unsubscribe", reply),
            Err(ClientError::ConnectionLost) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl futures_core::Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        loop {
            match self.events.poll_recv(cx) {
                Poll::Ready(Some(Event::Missed(_))) => {}
                Poll::Ready(Some(Event::Message(delivery))) => {
                    return Poll::Ready(Some(Message::from(delivery)));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// What a [`TopicSubscription`] yields: a publication, or how many it lost.
#[derive(Debug, Clone)]
pub enum Publication {
    /// A publication matching the filter (its topic is [`Message::topic`]); boxed, as a
    /// message is much larger than a count.
    Message(Box<Message>),
    /// This many publications were not sent because this client fell behind (its manager
    /// never lets a slow subscriber hold a publisher up, nor grow its memory): a gap, said.
    Missed(u64),
}

/// The publications matching a filter while this connection lasts, from
/// [`Client::subscribe_topic`](super::Client::subscribe_topic). Ends (`None`) when the
/// connection drops; dropping it unsubscribes.
#[derive(Debug)]
pub struct TopicSubscription {
    inner: Subscription,
}

impl TopicSubscription {
    pub(super) fn new(inner: Subscription) -> Self {
        Self { inner }
    }

    /// The next publication, or a report of those lost before it; `None` once ended.
    pub async fn next(&mut self) -> Option<Publication> {
        Some(match self.inner.next_event().await? {
            Event::Message(delivery) => Publication::Message(Box::new(Message::from(delivery))),
            Event::Missed(count) => Publication::Missed(count),
        })
    }

    /// The subscription's id on its connection.
    pub fn id(&self) -> Option<u64> {
        self.inner.id()
    }

    /// Unsubscribes and waits for the manager to confirm.
    pub async fn cancel(self) -> Result<(), ClientError> {
        self.inner.cancel().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        if !self.connection.is_open() {
            return;
        }
        // Drop cannot await: hand the unsubscribe to the runtime that runs the connection.
        let connection = Arc::clone(&self.connection);
        connection.runtime.clone().spawn(async move {
            let _ = connection
                .call(Operation::Unsubscribe { subscription: id }, None)
                .await;
        });
    }
}

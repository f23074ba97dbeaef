//! Publish/subscribe's calls: publish to a topic, subscribe to a filter for as long as the
//! connection lasts (transient), and make, delete and list durable subscriptions, whose
//! queues are read with the ordinary gets.

use tokio::sync::mpsc;

use super::subscription::{Subscription, TopicSubscription};
use super::{Client, ClientError, SUBSCRIPTION_EVENTS_MAX, done, unexpected};
use crate::message::{Message, MessageId};
use crate::protocol::{Operation, Reply, SubscriptionListing};

impl Client {
    /// Publishes `message` to `topic` (dot-separated tokens, `prices.eu.btc`): a copy goes to
    /// every subscription whose filter matches, on this manager and on every other one with a
    /// matching subscription. Returns once every copy is durable here (for a persistent
    /// message), never waiting for subscribers.
    ///
    /// ```no_run
    /// # async fn demo(client: hopmq::Client) -> Result<(), hopmq::ClientError> {
    /// client.publish("prices.eu.btc", hopmq::Message::new("61250.5")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish(&self, topic: &str, message: Message) -> Result<MessageId, ClientError> {
        let mut ids = self
            .publish_batch(vec![(topic.to_owned(), message)])
            .await?;
        ids.pop()
            .ok_or_else(|| unexpected("publish", &Reply::Put(Vec::new())))
    }

    /// Publishes several messages atomically: every copy of every one is stored, or none.
    pub async fn publish_batch(
        &self,
        publications: Vec<(String, Message)>,
    ) -> Result<Vec<MessageId>, ClientError> {
        self.publish_with(publications, false).await
    }

    /// Publishes `message` to `topic` as [`publish`](Self::publish) does, and keeps it as the
    /// topic's retained publication at this manager (replacing the one before): every
    /// subscription made later, on any manager, whose filter matches `topic` receives it once,
    /// with the header `hopmq.retained: true`.
    pub async fn publish_retained(
        &self,
        topic: &str,
        message: Message,
    ) -> Result<MessageId, ClientError> {
        let mut ids = self
            .publish_with(vec![(topic.to_owned(), message)], true)
            .await?;
        ids.pop()
            .ok_or_else(|| unexpected("publish", &Reply::Put(Vec::new())))
    }

    /// Publishes a batch, retained or not.
    pub async fn publish_with(
        &self,
        publications: Vec<(String, Message)>,
        retain: bool,
    ) -> Result<Vec<MessageId>, ClientError> {
        let count = publications.len();
        let operation = Operation::Publish {
            publications: publications
                .into_iter()
                .map(|(topic, message)| (topic, message.into_outgoing()))
                .collect(),
            retain,
        };
        match self.call(operation).await? {
            Reply::Put(ids) if ids.len() == count => Ok(ids),
            reply => Err(unexpected("publish", &reply)),
        }
    }

    /// The publications matching `filter` (`*` one token, `>` every remaining one) from now on,
    /// for as long as this connection lasts: a transient subscription, in the manager's memory
    /// only. A subscriber that falls behind is sent [`Publication::Missed`] reports instead
    /// of what it could not take in time.
    ///
    /// [`Publication::Missed`]: super::Publication::Missed
    ///
    /// ```no_run
    /// # async fn demo(client: hopmq::Client) -> Result<(), hopmq::ClientError> {
    /// use hopmq::Publication;
    /// let mut prices = client.subscribe_topic("prices.eu.>").await?;
    /// while let Some(event) = prices.next().await {
    ///     match event {
    ///         Publication::Message(m) => println!("{:?}: {:?}", m.topic(), m.text()),
    ///         Publication::Missed(n) => eprintln!("fell behind: {n} publications lost"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_topic(&self, filter: &str) -> Result<TopicSubscription, ClientError> {
        let connection = self.connection().await?;
        let (events, receiver) = mpsc::channel(SUBSCRIPTION_EVENTS_MAX);
        let operation = Operation::SubscribeTopic {
            filter: filter.to_owned(),
        };
        match connection.call(operation, Some(events)).await? {
            Reply::Subscribed(id) => Ok(TopicSubscription::new(Subscription::new(
                id, receiver, connection,
            ))),
            reply => Err(unexpected("subscribe_topic", &reply)),
        }
    }

    /// Makes a durable subscription: local queue `name` receives every publication matching
    /// `filter`, kept across disconnects and restarts, read with [`get`](Self::get),
    /// [`get_leased`](Self::get_leased) or [`consumer`](Self::consumer) like any queue.
    /// Idempotent with the same filter; `max_depth` bounds it (past it, publications go to the
    /// dead-letter queue).
    pub async fn create_subscription(
        &self,
        name: &str,
        filter: &str,
        max_depth: Option<u64>,
    ) -> Result<(), ClientError> {
        let operation = Operation::CreateSubscription {
            name: name.to_owned(),
            filter: filter.to_owned(),
            max_depth,
        };
        done("create_subscription", self.call(operation).await?)
    }

    /// Deletes durable subscription `name`, and its queue with what it holds.
    pub async fn delete_subscription(&self, name: &str) -> Result<(), ClientError> {
        let operation = Operation::DeleteSubscription {
            name: name.to_owned(),
        };
        done("delete_subscription", self.call(operation).await?)
    }

    /// This manager's subscriptions, and the filters it knows the other managers use.
    pub async fn list_subscriptions(&self) -> Result<SubscriptionListing, ClientError> {
        match self.call(Operation::ListSubscriptions).await? {
            Reply::Subscriptions(listing) => Ok(listing),
            reply => Err(unexpected("list_subscriptions", &reply)),
        }
    }
}

//! Publish/subscribe's blocking twins (see [`crate::Client`]'s calls of the same names).

use std::sync::Arc;
use std::time::Duration;

use super::{Client, OwnedRuntime};
use crate::client::{self, ClientError, Publication};
use crate::message::{Message, MessageId};
use crate::protocol::SubscriptionListing;

impl Client {
    /// See [`crate::Client::publish`].
    pub fn publish(&self, topic: &str, message: Message) -> Result<MessageId, ClientError> {
        self.runtime.block_on(self.inner.publish(topic, message))
    }

    /// See [`crate::Client::publish_batch`].
    pub fn publish_batch(
        &self,
        publications: Vec<(String, Message)>,
    ) -> Result<Vec<MessageId>, ClientError> {
        self.runtime
            .block_on(self.inner.publish_batch(publications))
    }

    /// See [`crate::Client::publish_retained`].
    pub fn publish_retained(
        &self,
        topic: &str,
        message: Message,
    ) -> Result<MessageId, ClientError> {
        self.runtime
            .block_on(self.inner.publish_retained(topic, message))
    }

    /// See [`crate::Client::publish_with`].
    pub fn publish_with(
        &self,
        publications: Vec<(String, Message)>,
        retain: bool,
    ) -> Result<Vec<MessageId>, ClientError> {
        self.runtime
            .block_on(self.inner.publish_with(publications, retain))
    }

    /// See [`crate::Client::subscribe_topic`].
    pub fn subscribe_topic(&self, filter: &str) -> Result<TopicSubscription, ClientError> {
        let inner = self.runtime.block_on(self.inner.subscribe_topic(filter))?;
        Ok(TopicSubscription {
            inner,
            runtime: Arc::clone(&self.runtime),
        })
    }

    /// See [`crate::Client::create_subscription`].
    pub fn create_subscription(
        &self,
        name: &str,
        filter: &str,
        max_depth: Option<u64>,
    ) -> Result<(), ClientError> {
        self.runtime
            .block_on(self.inner.create_subscription(name, filter, max_depth))
    }

    /// See [`crate::Client::delete_subscription`].
    pub fn delete_subscription(&self, name: &str) -> Result<(), ClientError> {
        self.runtime.block_on(self.inner.delete_subscription(name))
    }

    /// See [`crate::Client::list_subscriptions`].
    pub fn list_subscriptions(&self) -> Result<SubscriptionListing, ClientError> {
        self.runtime.block_on(self.inner.list_subscriptions())
    }
}

/// See [`crate::TopicSubscription`]; also an [`Iterator`] that ends with the subscription.
#[derive(Debug)]
pub struct TopicSubscription {
    // Declared first so it drops (and unsubscribes) while the runtime is still alive.
    inner: client::TopicSubscription,
    runtime: Arc<OwnedRuntime>,
}

impl TopicSubscription {
    /// The next publication or loss report, waiting as long as it takes; `None` once ended.
    pub fn recv(&mut self) -> Option<Publication> {
        self.runtime.block_on(self.inner.next())
    }

    /// Like [`recv`](Self::recv), giving up after `timeout` (`Ok(None)`). `Err` once the
    /// subscription has ended.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Publication>, ClientError> {
        match self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, self.inner.next()).await })
        {
            Ok(Some(publication)) => Ok(Some(publication)),
            Ok(None) => Err(ClientError::ConnectionLost),
            Err(_elapsed) => Ok(None),
        }
    }

    /// Unsubscribes and waits for the manager to confirm.
    pub fn cancel(self) -> Result<(), ClientError> {
        self.runtime.block_on(self.inner.cancel())
    }
}

impl Iterator for TopicSubscription {
    type Item = Publication;

    fn next(&mut self) -> Option<Publication> {
        self.recv()
    }
}

//! Conversations: a request that waits for its reply, and a reply that settles the request it
//! answers. The manager does both halves, so neither depends on the client staying put
//! between two calls.

use std::time::Duration;

use super::{Client, ClientError, millis, unexpected};
use crate::message::{Message, MessageId};
use crate::protocol::{Operation, Reply};

impl Client {
    /// Sends `message` to `address` as a request and returns its reply, or
    /// [`ClientError::NoReply`] if none came within `timeout`.
    ///
    /// The manager sets the request's `reply_to` to this client's private reply queue (made
    /// on its first request, removed when the client goes away) and its correlation id (a
    /// fresh one unless the message has one), and returns the message put back to that queue
    /// with that correlation id. A reply that comes after `timeout`, or after the client went
    /// away, is dead-lettered with why; it is never given to another client. Many requests
    /// may be outstanding at once: hold their futures and collect them later. Bound the wait
    /// with `timeout` rather than by dropping the future: a reply to a dropped call is lost.
    ///
    /// ```no_run
    /// # async fn demo(client: hopmq::Client) -> Result<(), hopmq::ClientError> {
    /// use std::time::Duration;
    /// let question = hopmq::Message::new("price of 42?");
    /// let answer = client.request("pricing@charlie", question, Duration::from_secs(5)).await?;
    /// println!("{:?}", answer.text());
    /// # Ok(()) }
    /// ```
    pub async fn request(
        &self,
        address: &str,
        message: Message,
        timeout: Duration,
    ) -> Result<Message, ClientError> {
        if timeout.is_zero() {
            return Err(ClientError::InvalidArgument(
                "a request needs a timeout for its reply".into(),
            ));
        }
        let operation = Operation::Request {
            address: address.to_string(),
            message: message.into_outgoing(),
            timeout_ms: millis(timeout),
        };
        match self.call(operation).await? {
            Reply::Messages(mut deliveries) if deliveries.len() <= 1 => match deliveries.pop() {
                Some(delivery) => Ok(Message::from(delivery)),
                None => Err(ClientError::NoReply(timeout)),
            },
            reply => Err(unexpected("request", &reply)),
        }
    }

    /// Replies to `request`, a message this client holds leased (from
    /// [`get_leased`](Self::get_leased)): `message` goes to the request's `reply_to` with its
    /// correlation id (its id, if it has none), and the request is acknowledged, in one
    /// atomic write. A server that dies before the write leaves the request to be leased
    /// again; after it, the reply is on its way: one reply per request either way.
    ///
    /// ```no_run
    /// # async fn demo(client: hopmq::Client) -> Result<(), hopmq::ClientError> {
    /// use std::time::Duration;
    /// let (wait, lease) = (Duration::from_secs(5), Duration::from_secs(30));
    /// while let Some(request) = client.get_leased("pricing", wait, lease).await? {
    ///     client.reply(&request, hopmq::Message::new("61250.5")).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn reply(
        &self,
        request: &Message,
        message: Message,
    ) -> Result<MessageId, ClientError> {
        let Some(lease) = request.lease else {
            return Err(ClientError::InvalidArgument(
                "reply needs a leased request (from get_leased); put the reply to its \
                 reply_to instead"
                    .into(),
            ));
        };
        let operation = Operation::Reply {
            lease,
            message: message.into_outgoing(),
        };
        match self.call(operation).await? {
            Reply::Put(ids) if ids.len() == 1 => Ok(ids[0]),
            reply => Err(unexpected("reply", &reply)),
        }
    }
}

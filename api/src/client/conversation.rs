//! Conversations: a request that waits for its reply, and a reply that settles the request it
//! answers. The manager does both halves, so neither depends on the client staying put
//! between two calls.

use std::time::Duration;

use super::{Client, ClientError, messages, millis, unexpected};
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

    /// Publishes `message` to `topic` as one request to every subscriber (scatter) and
    /// returns the replies that come within `timeout`, at most `max_replies` (gather): the
    /// multicast request of the textbooks. Returns as soon as `max_replies` came, else at
    /// `timeout` with those that did (perhaps none).
    ///
    /// As with [`request`](Self::request), the manager sets the request's `reply_to` and its
    /// correlation id; a reply that comes after `timeout` or past `max_replies` is
    /// dead-lettered with why. Servers answer with [`reply`](Self::reply).
    ///
    /// ```no_run
    /// # async fn demo(client: hopmq::Client) -> Result<(), hopmq::ClientError> {
    /// use std::time::Duration;
    /// let question = hopmq::Message::new("who holds order 42?");
    /// let answers = client
    ///     .request_many("stock.query", question, Duration::from_secs(2), 10)
    ///     .await?;
    /// println!("{} warehouses answered", answers.len());
    /// # Ok(()) }
    /// ```
    pub async fn request_many(
        &self,
        topic: &str,
        message: Message,
        timeout: Duration,
        max_replies: u32,
    ) -> Result<Vec<Message>, ClientError> {
        if timeout.is_zero() || max_replies == 0 {
            return Err(ClientError::InvalidArgument(
                "a multicast request needs a timeout and room for one reply at least".into(),
            ));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let operation = Operation::RequestMany {
            topic: topic.to_string(),
            message: message.into_outgoing(),
            timeout_ms: millis(timeout),
            max_replies,
        };
        let mut replies = messages("request_many", self.call(operation).await?)?;
        // The replies name the correlation id the manager chose; none came if there is none.
        let Some(correlation_id) = replies.first().and_then(|r| r.correlation_id.clone()) else {
            return Ok(replies);
        };
        while (replies.len() as u64) < u64::from(max_replies) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let wanted = u64::from(max_replies) - replies.len() as u64;
            let operation = Operation::Replies {
                correlation_id: correlation_id.clone(),
                timeout_ms: millis(left),
                max: u32::try_from(wanted)
                    .unwrap_or(u32::MAX)
                    .min(crate::protocol::BATCH_MESSAGES_MAX),
            };
            let more = messages("request_many", self.call(operation).await?)?;
            if more.is_empty() {
                break;
            }
            replies.extend(more);
        }
        Ok(replies)
    }

    /// Replies to `request`. If this client holds it leased (from
    /// [`get_leased`](Self::get_leased)), `message` goes to the request's `reply_to` with its
    /// correlation id (its id, if it has none), and the request is acknowledged, in one
    /// atomic write. A server that dies before the write leaves the request to be leased
    /// again; after it, the reply is on its way: one reply per request either way. A request
    /// taken otherwise (a get, a publication to a subscription) is answered by a put of
    /// `message` to its `reply_to` with that correlation id.
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
            let Some(reply_to) = &request.reply_to else {
                return Err(ClientError::InvalidArgument(
                    "the request has no reply_to: there is nowhere to reply".into(),
                ));
            };
            let correlation = match &request.correlation_id {
                Some(correlation) => correlation.clone(),
                None => request.id.to_string(),
            };
            return self
                .put(reply_to, message.correlation_id(correlation))
                .await;
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

//! The operator's calls: list, remove and move the messages of a queue (what `qmgr purge`,
//! `delete-message`, `move` and `dlq` use). See [`crate::protocol::Selection`] for what each
//! acts on and how a crash in the middle leaves things.

use super::{Client, ClientError, unexpected};
use crate::message::MessageId;
use crate::protocol::{
    DEAD_LETTER_QUEUE, Listing, MoveOutcome, MoveRequest, MoveTarget, Operation, Reply, Selection,
};

impl Client {
    /// Summaries (no bodies) of up to `max` of the selected messages of local `queue`, and how
    /// many were selected in all, per dead-letter reason.
    ///
    /// ```no_run
    /// # async fn demo(client: hopmq::Client) -> Result<(), hopmq::ClientError> {
    /// use hopmq::protocol::Selection;
    /// let listing = client.list_messages("DLQ", Selection::All, 100).await?;
    /// for (reason, count) in &listing.reasons {
    ///     println!("{count} dead letters: {reason}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_messages(
        &self,
        queue: &str,
        selection: Selection,
        max: u32,
    ) -> Result<Listing, ClientError> {
        let operation = Operation::ListMessages {
            queue: queue.to_owned(),
            selection,
            max,
        };
        match self.call(operation).await? {
            Reply::Listing(listing) => Ok(listing),
            reply => Err(unexpected("list_messages", &reply)),
        }
    }

    /// Removes the selected messages of local `queue` for good; messages leased to a consumer
    /// stay (and are counted).
    pub async fn remove_messages(
        &self,
        queue: &str,
        selection: Selection,
    ) -> Result<MoveOutcome, ClientError> {
        let operation = Operation::RemoveMessages {
            queue: queue.to_owned(),
            selection,
        };
        outcome("remove_messages", self.call(operation).await?)
    }

    /// Removes every message of local `queue` but those leased to a consumer.
    pub async fn purge(&self, queue: &str) -> Result<MoveOutcome, ClientError> {
        self.remove_messages(queue, Selection::All).await
    }

    /// Removes the message `id` from local `queue`.
    pub async fn delete_message(
        &self,
        queue: &str,
        id: MessageId,
    ) -> Result<MoveOutcome, ClientError> {
        self.remove_messages(queue, Selection::Ids(vec![id])).await
    }

    /// Moves the selected messages of a local queue: each batch's copies and the removal of
    /// their originals are one atomic journal write, so a message is never in both places nor
    /// in neither.
    ///
    /// ```no_run
    /// # async fn demo(client: hopmq::Client) -> Result<(), hopmq::ClientError> {
    /// use hopmq::protocol::{MoveRequest, MoveTarget, Selection};
    /// let outcome = client
    ///     .move_messages(MoveRequest {
    ///         from: "orders".into(),
    ///         selection: Selection::All,
    ///         to: MoveTarget::Address("orders@delta".into()),
    ///         replay: false,
    ///     })
    ///     .await?;
    /// println!("moved {}", outcome.done);
    /// # Ok(()) }
    /// ```
    pub async fn move_messages(&self, request: MoveRequest) -> Result<MoveOutcome, ClientError> {
        outcome(
            "move_messages",
            self.call(Operation::MoveMessages(request)).await?,
        )
    }

    /// Replays the selected dead letters: each goes to the address it was put to (or to `to`)
    /// as a fresh delivery, without its dead-letter headers.
    pub async fn replay_dead_letters(
        &self,
        selection: Selection,
        to: Option<&str>,
    ) -> Result<MoveOutcome, ClientError> {
        let request = MoveRequest {
            from: DEAD_LETTER_QUEUE.to_owned(),
            selection,
            to: to.map_or(MoveTarget::Original, |to| {
                MoveTarget::Address(to.to_owned())
            }),
            replay: true,
        };
        self.move_messages(request).await
    }
}

fn outcome(operation: &'static str, reply: Reply) -> Result<MoveOutcome, ClientError> {
    match reply {
        Reply::Moved(outcome) => Ok(outcome),
        reply => Err(unexpected(operation, &reply)),
    }
}

//! The operator's commands on the messages of a queue: `purge`, `delete-message`, `move` and
//! `dlq list|replay|move`. Each is one request to the manager, answered once everything it did
//! is durable; each prints what it did and exits 1 if it left any selected message behind
//! (leased to a consumer, not found, refused by its target), saying why.

use std::process::ExitCode;

use anyhow::bail;
use hopmq::protocol::{
    DEAD_LETTER_QUEUE, DEAD_LETTER_QUEUE_HEADER, DEAD_LETTER_REASON_HEADER, Listing, MoveOutcome,
    MoveRequest, MoveTarget, Selection,
};
use hopmq::{Client, MessageId};

use super::connection::Connection;
use super::units;
use crate::outln;

/// Remove every message of a local queue (messages leased to consumers stay).
#[derive(Debug, clap::Args)]
pub struct PurgeArgs {
    /// A local queue (`DLQ` for the dead-letter queue).
    queue: String,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

impl PurgeArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        run(&self.connection, async |client| {
            let outcome = client.purge(&self.queue).await?;
            report(
                &outcome,
                false,
                self.json,
                &format!("purged from {}", self.queue),
            )
        })
    }
}

/// Remove messages of a local queue by id.
#[derive(Debug, clap::Args)]
pub struct DeleteMessageArgs {
    /// A local queue.
    queue: String,
    /// The ids of the messages (as `put`, `get --json` and `dlq list` print them).
    #[arg(required = true, value_name = "ID")]
    ids: Vec<MessageId>,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

impl DeleteMessageArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        run(&self.connection, async |client| {
            let outcome = client
                .remove_messages(&self.queue, Selection::Ids(self.ids.clone()))
                .await?;
            report(
                &outcome,
                true,
                self.json,
                &format!("deleted from {}", self.queue),
            )
        })
    }
}

/// Which messages: by id, by dead-letter reason, or all.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Select {
    /// Only the message with this id; repeatable.
    #[arg(long = "id", value_name = "ID")]
    ids: Vec<MessageId>,
    /// Only messages whose dead-letter reason contains TEXT (e.g. `max_deliveries`).
    #[arg(long, value_name = "TEXT", conflicts_with = "ids")]
    reason: Option<String>,
}

impl Select {
    /// The selection; `None` when neither `--id` nor `--reason` was given.
    fn selection(&self) -> Option<Selection> {
        if !self.ids.is_empty() {
            Some(Selection::Ids(self.ids.clone()))
        } else {
            self.reason.clone().map(Selection::Reason)
        }
    }
}

/// Move the messages of a local queue to another address (`QUEUE` or `QUEUE@MANAGER`), as
/// puts to it would go; all of them unless --id or --reason selects some.
#[derive(Debug, clap::Args)]
pub struct MoveArgs {
    /// The local queue they are in.
    queue: String,
    /// Where they go: `QUEUE` here, or `QUEUE@MANAGER` (forwarded as a put would be).
    to: String,
    #[command(flatten)]
    select: Select,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

impl MoveArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let by_id = !self.select.ids.is_empty();
        let request = MoveRequest {
            from: self.queue.clone(),
            selection: self.select.selection().unwrap_or(Selection::All),
            to: MoveTarget::Address(self.to.clone()),
            replay: false,
        };
        run(&self.connection, async |client| {
            let outcome = client.move_messages(request).await?;
            let done = format!("moved from {} to {}", self.queue, self.to);
            report(&outcome, by_id, self.json, &done)
        })
    }
}

/// The dead-letter queue (`DLQ`): list, replay, move.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List the dead letters (no bodies), with a count per reason.
    List(DlqListArgs),
    /// Send dead letters back to the address they were put to (or to --to), as fresh
    /// deliveries without their dead-letter headers.
    Replay(DlqReplayArgs),
    /// Move dead letters to another address, keeping their dead-letter headers (to park them).
    Move(DlqMoveArgs),
}

impl DlqCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::List(args) => args.run(),
            Self::Replay(args) => args.run(),
            Self::Move(args) => args.run(),
        }
    }
}

/// List dead letters.
#[derive(Debug, clap::Args)]
pub struct DlqListArgs {
    #[command(flatten)]
    select: Select,
    /// Show at most this many (every one is counted).
    #[arg(long, default_value_t = 100)]
    max: u32,
    /// One JSON object: the messages (no bodies), how many in all, per reason.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

impl DlqListArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let selection = self.select.selection().unwrap_or(Selection::All);
        run(&self.connection, async |client| {
            let listing = client
                .list_messages(DEAD_LETTER_QUEUE, selection, self.max)
                .await?;
            if self.json {
                outln!("{}", listing_json(&listing))?;
            } else {
                print_listing(&listing)?;
            }
            Ok(ExitCode::SUCCESS)
        })
    }
}

/// Which dead letters: by id, by reason, or all (one of them is required).
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false, id = "which")]
pub(crate) struct Which {
    /// The dead letter with this id; repeatable.
    #[arg(long = "id", value_name = "ID", group = "which")]
    ids: Vec<MessageId>,
    /// Dead letters whose reason contains TEXT (e.g. `max_deliveries`, `hop limit`).
    #[arg(long, value_name = "TEXT", group = "which")]
    reason: Option<String>,
    /// Every dead letter.
    #[arg(long, group = "which")]
    all: bool,
}

impl Which {
    fn selection(&self) -> Selection {
        if !self.ids.is_empty() {
            Selection::Ids(self.ids.clone())
        } else if let Some(reason) = &self.reason {
            Selection::Reason(reason.clone())
        } else {
            Selection::All
        }
    }
}

/// Replay dead letters.
#[derive(Debug, clap::Args)]
pub struct DlqReplayArgs {
    #[command(flatten)]
    which: Which,
    /// Send them here instead of to the address each was put to.
    #[arg(long, value_name = "ADDRESS")]
    to: Option<String>,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

impl DlqReplayArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        run(&self.connection, async |client| {
            let by_id = !self.which.ids.is_empty();
            let outcome = client
                .replay_dead_letters(self.which.selection(), self.to.as_deref())
                .await?;
            let done = match &self.to {
                Some(to) => format!("replayed to {to}"),
                None => "replayed to their addresses".to_owned(),
            };
            report(&outcome, by_id, self.json, &done)
        })
    }
}

/// Move dead letters elsewhere, keeping their reasons.
#[derive(Debug, clap::Args)]
pub struct DlqMoveArgs {
    #[command(flatten)]
    which: Which,
    /// Where they go: `QUEUE` or `QUEUE@MANAGER`.
    #[arg(long, value_name = "ADDRESS")]
    to: String,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

impl DlqMoveArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let request = MoveRequest {
            from: DEAD_LETTER_QUEUE.to_owned(),
            selection: self.which.selection(),
            to: MoveTarget::Address(self.to.clone()),
            replay: false,
        };
        let by_id = !self.which.ids.is_empty();
        run(&self.connection, async |client| {
            let outcome = client.move_messages(request).await?;
            report(&outcome, by_id, self.json, &format!("moved to {}", self.to))
        })
    }
}

/// Runs `command` with a client of the manager `connection` names.
fn run(
    connection: &Connection,
    command: impl AsyncFnOnce(Client) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    Connection::runtime()?.block_on(async {
        let client = connection.client().await?;
        let manager = client.manager();
        command(client).await.map_err(|error| {
            // A manager that cannot read an operation closes the connection on it.
            match error.downcast_ref::<hopmq::ClientError>() {
                Some(hopmq::ClientError::ConnectionLost) => anyhow::anyhow!(
                    "{error}: if manager `{manager}` is still running, it is an older build \
                     that does not know this command (its log says `malformed frame`)"
                ),
                _ => error,
            }
        })
    })
}

/// Prints what a removal or move did (`done`: "moved to X", ...); exit 1 if any selected
/// message was left behind (a leased one only if it was named by id), or it stopped early.
fn report(outcome: &MoveOutcome, by_id: bool, json: bool, done: &str) -> anyhow::Result<ExitCode> {
    if json {
        outln!("{}", outcome_json(outcome))?;
    } else {
        outln!(
            "{}: {done}",
            units::count(outcome.done, "message", "messages")
        )?;
        if outcome.leased > 0 {
            outln!(
                "{} leased to a consumer: left alone (settled by its ack, or back in the queue \
                 if its lease ends)",
                units::count(outcome.leased, "message is", "messages are")
            )?;
        }
        for left in &outcome.left {
            let ids: Vec<String> = left.ids.iter().map(ToString::to_string).collect();
            outln!(
                "{} left where {}: {} ({}{})",
                units::count(left.messages, "message", "messages"),
                if left.messages == 1 {
                    "it was"
                } else {
                    "they were"
                },
                left.reason,
                ids.join(", "),
                if left.messages > left.ids.len() as u64 {
                    ", ..."
                } else {
                    ""
                }
            )?;
        }
        for id in &outcome.missing {
            outln!("no message {id} in the queue")?;
        }
    }
    if let Some(why) = &outcome.stopped {
        bail!(
            "stopped before the end: {why} (what was done stays done; run it again for the rest)"
        );
    }
    // Leased messages are a consumer's: a purge or a move of a whole queue leaves them as
    // RabbitMQ's purge does; one asked for by id is a failure.
    let named_leased = outcome.leased > 0 && by_id;
    let complete = !named_leased && outcome.left.is_empty() && outcome.missing.is_empty();
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn outcome_json(outcome: &MoveOutcome) -> serde_json::Value {
    serde_json::json!({
        "done": outcome.done,
        "examined": outcome.examined,
        "leased": outcome.leased,
        "left": outcome.left.iter().map(|left| serde_json::json!({
            "reason": left.reason,
            "messages": left.messages,
            "ids": left.ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "missing": outcome.missing.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "stopped": outcome.stopped,
    })
}

fn listing_json(listing: &Listing) -> serde_json::Value {
    serde_json::json!({
        "selected": listing.selected,
        "reasons": listing.reasons.iter().map(|(reason, count)| serde_json::json!({"reason": reason, "messages": count})).collect::<Vec<_>>(),
        "messages": listing.messages.iter().map(|m| serde_json::json!({
            "id": m.id.to_string(),
            "destination": m.destination,
            "origin": m.origin,
            "put_at": m.put_at_ms,
            "bytes": m.bytes,
            "priority": m.priority,
            "headers": m.headers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "expires_at": m.expires_at_ms,
        })).collect::<Vec<_>>(),
    })
}

fn print_listing(listing: &Listing) -> anyhow::Result<()> {
    outln!(
        "{}",
        units::count(listing.selected, "dead letter", "dead letters")
    )?;
    for (reason, count) in &listing.reasons {
        let reason = if reason.is_empty() {
            "(no reason: put there)"
        } else {
            reason
        };
        outln!("{count:>8}  {reason}")?;
    }
    if listing.messages.is_empty() {
        return Ok(());
    }
    outln!()?;
    outln!(
        "{:<32}  {:>8}  {:>9}  {:<16}  {:<20}  reason",
        "id",
        "age",
        "size",
        "from queue",
        "address"
    )?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    for message in &listing.messages {
        let header = |key: &str| {
            message
                .headers
                .iter()
                .find(|(k, _)| k == key)
                .map_or("", |(_, v)| v.as_str())
        };
        outln!(
            "{:<32}  {:>8}  {:>9}  {:<16}  {:<20}  {}",
            message.id.to_string(),
            units::duration_cell(now_ms.saturating_sub(message.put_at_ms)),
            units::bytes_cell(message.bytes),
            header(DEAD_LETTER_QUEUE_HEADER),
            message.destination,
            header(DEAD_LETTER_REASON_HEADER)
        )?;
    }
    if listing.selected > listing.messages.len() as u64 {
        outln!(
            "... {} more (--max)",
            listing.selected - listing.messages.len() as u64
        )?;
    }
    Ok(())
}

//! Publish/subscribe's commands: `publish`, `subscribe` (transient, for as long as it runs)
//! and `subscription create|delete|list` (durable ones, read with `get` like any queue).

use std::process::ExitCode;

use anyhow::{Context, bail};
use hopmq::Publication;

use super::client::{BodyArgs, Connection, MessageOptions, Output, send_lines};
use super::units;
use crate::outln;

/// Publish messages to a topic: the body from the argument, from `--file`, or one message per
/// line of stdin.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Dot-separated tokens, e.g. `prices.eu.btc`.
    topic: String,
    #[command(flatten)]
    body: BodyArgs,
    #[command(flatten)]
    options: MessageOptions,
    /// Keep it as the topic's retained publication here: subscriptions made later, on any
    /// manager, receive it once.
    #[arg(long)]
    retain: bool,
    #[command(flatten)]
    connection: Connection,
}

impl PublishArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        Connection::runtime()?.block_on(async {
            let client = self.connection.client().await?;
            if let Some(body) = self.body.single()? {
                let message = self.options.message(body);
                let topic = self.topic.clone();
                let mut ids = client
                    .publish_with(vec![(topic, message)], self.retain)
                    .await?;
                let id = ids
                    .pop()
                    .context("the manager answered a publish without its id")?;
                outln!("{id}")?;
                return Ok(ExitCode::SUCCESS);
            }
            let total = send_lines(&self.topic, &self.options, "published", async |batch| {
                Ok(client.publish_with(batch, self.retain).await?.len())
            })
            .await?;
            let published = units::count(total, "message", "messages");
            eprintln!("published {published} to {}", self.topic);
            Ok(ExitCode::SUCCESS)
        })
    }
}

/// Print each publication matching a filter while this command runs (a transient
/// subscription: nothing is kept for it once it stops).
#[derive(Debug, clap::Args)]
pub struct SubscribeArgs {
    /// A topic filter: `*` stands for one token, a final `>` for one or more.
    filter: String,
    /// Stop after this many publications.
    #[arg(long)]
    count: Option<u64>,
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    connection: Connection,
}

impl SubscribeArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        Connection::runtime()?.block_on(async {
            let client = self.connection.client().await?;
            let mut subscription = client.subscribe_topic(&self.filter).await?;
            // Scripts wait for this line before publishing, so nothing is missed.
            eprintln!("subscribed to {}", self.filter);
            let mut seen = 0;
            while self.count.is_none_or(|count| seen < count) {
                match subscription.next().await {
                    Some(Publication::Message(message)) => {
                        self.output.print(&message)?;
                        seen += 1;
                    }
                    Some(Publication::Missed(count)) => {
                        let lost = units::count(count, "publication", "publications");
                        eprintln!("missed {lost}: this subscriber fell behind");
                    }
                    None => bail!("the manager closed the connection"),
                }
            }
            Ok(ExitCode::SUCCESS)
        })
    }
}

/// Durable subscriptions: local queues fed by a topic filter.
#[derive(Debug, clap::Subcommand)]
pub enum SubscriptionCommand {
    /// Make a durable subscription: queue NAME receives every publication matching FILTER,
    /// kept while nobody reads it and across restarts; read it with `qmgr get NAME`.
    Create {
        /// Its name, also its queue's.
        name: String,
        /// A topic filter: `*` stands for one token, a final `>` for one or more.
        filter: String,
        /// The most publications it holds; past it they go to the dead-letter queue.
        #[arg(long)]
        max_depth: Option<u64>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Delete a durable subscription, and its queue with what it holds.
    Delete {
        /// Its name.
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// This manager's subscriptions, and the filters the other managers subscribe with.
    List {
        /// One JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: Connection,
    },
}

impl SubscriptionCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::Create {
                name,
                filter,
                max_depth,
                connection,
            } => Connection::runtime()?.block_on(async {
                let client = connection.client().await?;
                client
                    .create_subscription(&name, &filter, max_depth)
                    .await?;
                eprintln!("subscription {name} receives {filter}");
                Ok(ExitCode::SUCCESS)
            }),
            Self::Delete { name, connection } => Connection::runtime()?.block_on(async {
                connection
                    .client()
                    .await?
                    .delete_subscription(&name)
                    .await?;
                eprintln!("subscription {name} deleted");
                Ok(ExitCode::SUCCESS)
            }),
            Self::List { json, connection } => Connection::runtime()?.block_on(async {
                let listing = connection.client().await?.list_subscriptions().await?;
                if json {
                    outln!("{}", serde_json::to_string(&listing)?)?;
                } else {
                    print_listing(&listing)?;
                }
                Ok(ExitCode::SUCCESS)
            }),
        }
    }
}

fn print_listing(listing: &hopmq::protocol::SubscriptionListing) -> anyhow::Result<()> {
    if listing.durable.is_empty() && listing.transient.is_empty() {
        outln!("no subscriptions on this manager")?;
    }
    for s in &listing.durable {
        outln!(
            "durable    {:<24} {:<32} depth {}/{}",
            s.name,
            s.filter,
            s.depth,
            s.max_depth
        )?;
    }
    for s in &listing.transient {
        outln!(
            "transient  {:<24} {:<32} delivered {} missed {}",
            "-",
            s.filter,
            s.delivered,
            s.missed
        )?;
    }
    for interest in &listing.interest {
        outln!(
            "interest   {:<24} {}",
            interest.manager,
            interest.filters.join(" ")
        )?;
    }
    Ok(())
}

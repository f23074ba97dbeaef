//! The command line: one `clap` tree, each subcommand in the module that owns it.

pub(crate) mod certs;
pub(crate) mod client;
pub(crate) mod connection;
pub(crate) mod conversation;
pub mod docs;
pub(crate) mod lease;
pub(crate) mod network;
pub(crate) mod operator;
pub mod output;
pub(crate) mod pubsub;
pub(crate) mod run;
pub(crate) mod status;
pub(crate) mod topology;
pub(crate) mod units;

use std::process::ExitCode;

use clap::Subcommand;

/// Every subcommand but `bench`, which the binary adds (the benchmarks do not ship in the
/// library).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a queue manager (the daemon).
    Run(run::RunArgs),
    /// Put messages to an address (QUEUE or QUEUE@MANAGER).
    Put(client::PutArgs),
    /// Take messages from a local queue, waiting up to --timeout for each; with --lease, each
    /// is acked only once handled (--exec CMD, or --then ack|nack).
    Get(client::GetArgs),
    /// Take messages from a local queue without waiting.
    Poll(client::PollArgs),
    /// Print each message put into a local queue from now on (notify).
    Watch(client::WatchArgs),
    /// Print the messages waiting in a local queue without taking them.
    Browse(client::BrowseArgs),
    /// Publish messages to a topic: every matching subscription, on any manager, gets a copy.
    Publish(pubsub::PublishArgs),
    /// Print each publication matching a filter while this runs (a transient subscription).
    Subscribe(pubsub::SubscribeArgs),
    /// Durable subscriptions: create, delete, list.
    #[command(subcommand)]
    Subscription(pubsub::SubscriptionCommand),
    /// Send a request to an address and print its reply.
    Request(conversation::RequestArgs),
    /// Serve a queue of requests: run a command per request (body on stdin) and reply with
    /// its stdout.
    Reply(conversation::ReplyArgs),
    /// Show the path a message to an address would take now, hop by hop, or where and why it
    /// would stop.
    Trace(conversation::TraceArgs),
    /// Show the manager's queues, depths and store.
    Status(status::StatusArgs),
    /// Create a local queue.
    Declare(client::DeclareArgs),
    /// Delete an empty local queue.
    Delete(client::DeleteArgs),
    /// Remove every message of a local queue (those leased to consumers stay).
    Purge(operator::PurgeArgs),
    /// Remove messages of a local queue by id.
    DeleteMessage(operator::DeleteMessageArgs),
    /// Move the messages of a local queue to another address, atomically per message.
    Move(operator::MoveArgs),
    /// The dead-letter queue: list dead letters, replay them, move them.
    #[command(subcommand)]
    Dlq(operator::DlqCommand),
    /// Show the live route table and the state of every link, as the manager sees them.
    Routes(network::RoutesArgs),
    /// Take a link out of service (`down`, a drain) or return it (`up`).
    #[command(subcommand)]
    Link(network::LinkCommand),
    /// Make the manager read its topology file again and apply it if it is valid.
    Reload(network::ReloadArgs),
    /// Check, explore and compare topology files.
    #[command(subcommand)]
    Topology(topology::TopologyCommand),
    /// Make the development certificates that links between managers authenticate with.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
}

impl Command {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Run(args) => args.run(),
            Command::Put(args) => args.run(),
            Command::Get(args) => args.run(),
            Command::Poll(args) => args.run(),
            Command::Watch(args) => args.run(),
            Command::Browse(args) => args.run(),
            Command::Publish(args) => args.run(),
            Command::Subscribe(args) => args.run(),
            Command::Subscription(command) => command.run(),
            Command::Request(args) => args.run(),
            Command::Reply(args) => args.run(),
            Command::Trace(args) => args.run(),
            Command::Status(args) => args.run(),
            Command::Declare(args) => args.run(),
            Command::Delete(args) => args.run(),
            Command::Purge(args) => args.run(),
            Command::DeleteMessage(args) => args.run(),
            Command::Move(args) => args.run(),
            Command::Dlq(command) => command.run(),
            Command::Routes(args) => args.run(),
            Command::Link(command) => command.run(),
            Command::Reload(args) => args.run(),
            Command::Topology(command) => command.run(),
            Command::Certs(command) => command.run(),
        }
    }
}

//! The client commands: `put`, `get`, `poll`, `watch`, `browse`, `status`, `declare`,
//! `delete`. Each is a thin use of the `hopmq` client library, as any application would be.
//!
//! Output for scripts: with `--json`, one JSON object per message per line. Without it, `get`,
//! `poll`, `watch` and `browse` print bodies only, one per line. A get that times out prints
//! nothing and exits 0.

use super::output::{self, OutputError};
use super::units;
use crate::outln;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use hopmq::{GetOptions, Message};

/// The most messages `put` sends in one atomic batch when reading stdin.
const STDIN_BATCH_MAX: usize = 256;

pub(crate) use super::connection::Connection;

/// Parses `500ms`, `30s`, `5m`, `1h` or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 30s or 5m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}` has an unknown unit; use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not a header; expected key=value"))
}

/// Put messages: the body from the argument, from `--file`, or one message per line of stdin.
#[derive(Debug, clap::Args)]
pub struct PutArgs {
    /// `QUEUE` or `QUEUE@MANAGER`.
    address: String,
    #[command(flatten)]
    body: BodyArgs,
    #[command(flatten)]
    options: MessageOptions,
    /// When to return: `stored` (durable on this manager, the default) or `arrived` (durably
    /// in its destination manager, confirmed back).
    #[arg(long, value_enum, default_value_t = Wait::Stored)]
    wait: Wait,
    /// With `--wait arrived`: how long to wait for the confirmation, e.g. 30s. Past it the
    /// command fails (exit 1) and the message is still on its way.
    #[arg(long, value_parser = parse_duration, default_value = "30s", requires = "wait")]
    timeout: Duration,
    /// Ask for reports to the message's --reply-to, comma-separated: `arrival` (stored in its
    /// destination queue), `delivery` (taken by an application there), `exception`
    /// (dead-lettered anywhere). Each report's correlation id is the message's id.
    #[arg(long, value_name = "KINDS", requires = "reply_to")]
    report: Option<hopmq::Reports>,
    #[command(flatten)]
    connection: Connection,
}

/// Where a message's body comes from: the argument, `--file`, or each line of stdin.
#[derive(Debug, clap::Args)]
pub(crate) struct BodyArgs {
    /// The body; without it (and without --file) each line of stdin is one message.
    body: Option<String>,
    /// Read the body from this file.
    #[arg(long, conflicts_with = "body", value_name = "FILE")]
    file: Option<PathBuf>,
}

impl BodyArgs {
    /// The one body given by argument or file; `None` when the bodies are stdin's lines.
    pub(crate) fn single(&self) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(match (&self.body, &self.file) {
            (Some(body), _) => Some(body.clone().into_bytes()),
            (None, Some(file)) => Some(
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?,
            ),
            (None, None) => None,
        })
    }
}

/// A message's properties, as `put` and `publish` take them.
#[derive(Debug, clap::Args)]
pub(crate) struct MessageOptions {
    /// A header, as key=value; repeatable.
    #[arg(short = 'H', long = "header", value_parser = parse_header, value_name = "KEY=VALUE")]
    headers: Vec<(String, String)>,
    /// 0 (lowest) to 9 (highest).
    #[arg(long, default_value_t = hopmq::PRIORITY_DEFAULT, value_parser = clap::value_parser!(u8).range(0..=9))]
    priority: u8,
    /// Time to live, e.g. 30s, 5m.
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Correlation id.
    #[arg(long)]
    correlation_id: Option<String>,
    /// Reply-to address.
    #[arg(long)]
    reply_to: Option<String>,
    /// Keep the message in memory only (lost if a manager stops).
    #[arg(long)]
    non_persistent: bool,
}

impl MessageOptions {
    pub(crate) fn message(&self, body: Vec<u8>) -> Message {
        let mut message = Message::new(body).priority(self.priority);
        for (key, value) in &self.headers {
            message = message.header(key, value);
        }
        if let Some(ttl) = self.ttl {
            message = message.ttl(ttl);
        }
        if let Some(id) = &self.correlation_id {
            message = message.correlation_id(id);
        }
        if let Some(to) = &self.reply_to {
            message = message.reply_to(to);
        }
        if self.non_persistent {
            message = message.non_persistent();
        }
        message
    }
}

/// When `qmgr put` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Wait {
    /// Durable on this manager.
    Stored,
    /// Durably in its destination manager.
    Arrived,
}

impl PutArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        Connection::runtime()?.block_on(async {
            let client = self.connection.client().await?;
            let reports = self.report.unwrap_or_default();
            if let Some(body) = self.body.single()? {
                let message = self.options.message(body).reports(reports);
                let id = match self.wait {
                    Wait::Stored => client.put(&self.address, message).await?,
                    Wait::Arrived => {
                        client
                            .put_arrived(&self.address, message, self.timeout)
                            .await?
                    }
                };
                outln!("{id}")?;
                return Ok(ExitCode::SUCCESS);
            }
            let total = send_lines(&self.address, &self.options, "put", async |batch| {
                let batch = batch
                    .into_iter()
                    .map(|(to, message)| (to, message.reports(reports)))
                    .collect();
                Ok(match self.wait {
                    Wait::Stored => client.put_batch(batch).await?,
                    Wait::Arrived => client.put_batch_arrived(batch, self.timeout).await?,
                }
                .len())
            })
            .await?;
            let put = units::count(total, "message", "messages");
            eprintln!("put {put} to {}", self.address);
            Ok(ExitCode::SUCCESS)
        })
    }
}

/// Sends each line of stdin as one message to `to`, in batches through `send`; a line that is
/// not UTF-8 stops it, named by its number. Returns how many were sent.
pub(crate) async fn send_lines(
    to: &str,
    options: &MessageOptions,
    verb: &str,
    mut send: impl AsyncFnMut(Vec<(String, Message)>) -> anyhow::Result<usize>,
) -> anyhow::Result<u64> {
    let mut stdin = std::io::stdin().lock();
    if stdin.is_terminal() {
        // Otherwise a newcomer sees a command that hangs.
        eprintln!("reading messages for {to} from standard input, one per line; end with Ctrl-D");
    }
    let progress = std::io::stderr().is_terminal();
    let mut total = 0u64;
    let mut number = 0u64;
    let mut batch = Vec::with_capacity(STDIN_BATCH_MAX);
    let mut line = Vec::new();
    loop {
        line.clear();
        let end = stdin
            .read_until(b'\n', &mut line)
            .context("cannot read stdin")?
            == 0;
        if !end {
            number += 1;
            let text = String::from_utf8(strip_line_end(std::mem::take(&mut line)))
                .map_err(|e| not_utf8(number, e.utf8_error().valid_up_to(), total))?;
            batch.push((to.to_owned(), options.message(text.into_bytes())));
        }
        if batch.len() == STDIN_BATCH_MAX || (end && !batch.is_empty()) {
            total += send(std::mem::take(&mut batch)).await? as u64;
            if progress {
                eprint!("\r{verb} {}", units::count(total, "message", "messages"));
            }
        }
        if end {
            break;
        }
    }
    if progress {
        eprintln!();
    }
    Ok(total)
}

/// A line without its `\n` or `\r\n`, as `BufRead::lines` gives it.
fn strip_line_end(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    line
}

/// Why `put` stopped at line `number` of stdin, and what it had put by then.
fn not_utf8(number: u64, valid_up_to: usize, put: u64) -> anyhow::Error {
    anyhow::anyhow!(
        "stdin line {number} is not valid UTF-8 (from byte {}): each line is one text message, \
         a binary body goes with --file; {} put before it, none from line {} on",
        valid_up_to + 1,
        units::count(put, "message was", "messages were"),
        put + 1
    )
}

/// How to print received messages.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct Output {
    /// One JSON object per message per line.
    #[arg(long)]
    json: bool,
}

impl Output {
    /// Prints one message, flushed at once: a `watch` may wait long for the next.
    pub(crate) fn print(&self, message: &Message) -> Result<(), OutputError> {
        if self.json {
            outln!("{}", to_json(message))?;
        } else {
            output::write_bytes(&message.body)?;
            outln!()?;
        }
        output::flush()
    }
}

/// A message as `--json` prints it.
pub(crate) fn to_json(message: &Message) -> serde_json::Value {
    let mut object = serde_json::json!({
        "id": message.id.to_string(),
        "headers": message.headers,
        "priority": message.priority,
        "correlation_id": message.correlation_id,
        "reply_to": message.reply_to,
        "origin": message.origin,
        "delivery_count": message.delivery_count,
        "persistent": message.persistent,
        "expires_at": message.expires_at_ms,
        "trace": message.trace.iter().map(|hop| serde_json::json!({"manager": hop.manager, "at": hop.at_ms})).collect::<Vec<_>>(),
    });
    match message.text() {
        Some(text) => object["body"] = text.into(),
        None => {
            object["body_base64"] = base64::engine::general_purpose::STANDARD
                .encode(&message.body)
                .into()
        }
    }
    object
}

/// Take messages from a local queue, waiting for them.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// A local queue.
    queue: String,
    /// How long to wait for each message, e.g. 500ms, 30s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// How many messages to take; stops early when a wait times out.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Only messages with this correlation id.
    #[arg(long)]
    correlation_id: Option<String>,
    /// Lease each message for DURATION instead of removing it at once: it is acked only once
    /// handled (see --exec and --then), and goes back to the queue if this command ends first
    /// or the lease runs out.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    lease: Option<Duration>,
    /// With --lease: run CMD (with `sh -c`) for each message, its body on CMD's stdin and its
    /// fields in HOPMQ_MESSAGE_ID, HOPMQ_QUEUE, HOPMQ_DELIVERY_COUNT, HOPMQ_PRIORITY,
    /// HOPMQ_ORIGIN, HOPMQ_CORRELATION_ID, HOPMQ_REPLY_TO and HOPMQ_HEADER_<NAME>; exit 0 acks
    /// it, anything else nacks it (exit code 1 then).
    #[arg(long, requires = "lease", value_name = "CMD")]
    exec: Option<String>,
    /// With --lease and without --exec: once a message is printed, ack it (removed only once
    /// written out) or nack it (back to its queue, its delivery counted).
    #[arg(
        long,
        value_enum,
        requires = "lease",
        conflicts_with = "exec",
        default_value = "ack"
    )]
    then: super::lease::Settle,
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    connection: Connection,
}

impl GetArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let Some(lease) = self.lease else {
            return take(
                &self.connection,
                &self.queue,
                self.timeout,
                self.count,
                self.correlation_id,
                self.output,
            );
        };
        let leased = super::lease::LeasedGet {
            queue: &self.queue,
            timeout: self.timeout,
            count: self.count,
            correlation_id: self.correlation_id.clone(),
            lease,
            exec: self.exec.as_deref(),
            then: self.then,
            output: self.output,
        };
        Connection::runtime()?.block_on(async {
            let client = self.connection.client().await?;
            let existed = queue_exists(&client, &self.queue).await?;
            let (taken, code) = leased.run(&client).await?;
            if taken == 0 && !existed && !queue_exists(&client, &self.queue).await? {
                return Err(no_queue(&self.queue));
            }
            Ok(code)
        })
    }
}

/// Take messages that are there now; never waits.
#[derive(Debug, clap::Args)]
pub struct PollArgs {
    /// A local queue.
    queue: String,
    /// How many messages to take at most.
    #[arg(long, default_value_t = 1)]
    count: u64,
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    connection: Connection,
}

impl PollArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        take(
            &self.connection,
            &self.queue,
            Duration::ZERO,
            self.count,
            None,
            self.output,
        )
    }
}

fn take(
    connection: &Connection,
    queue: &str,
    timeout: Duration,
    count: u64,
    correlation_id: Option<String>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    Connection::runtime()?.block_on(async {
        let client = connection.client().await?;
        let existed = queue_exists(&client, queue).await?;
        if !existed {
            // Asked first: a queue homed on another manager is refused at once, naming it,
            // and the note below would be wrong then.
            client.browse(queue, 1).await?;
            if !timeout.is_zero() {
                eprintln!(
                    "no queue `{queue}` on this manager yet; waiting up to {} for a put to \
                     create it",
                    units::duration(timeout)
                );
            }
        }
        let mut left = count;
        while left > 0 {
            let max = left.min(u64::from(hopmq::protocol::BATCH_MESSAGES_MAX)) as u32;
            let options = GetOptions {
                timeout,
                max,
                correlation_id: correlation_id.clone(),
                lease: None,
            };
            let messages = client.get_with(queue, options).await?;
            if messages.is_empty() {
                break;
            }
            left -= messages.len() as u64;
            for message in &messages {
                output.print(message)?;
            }
        }
        if left == count && !existed && !queue_exists(&client, queue).await? {
            return Err(no_queue(queue));
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Whether the manager holds `queue` now (a read never creates one).
async fn queue_exists(client: &hopmq::Client, queue: &str) -> anyhow::Result<bool> {
    // `QUEUE@MANAGER` is read only at MANAGER: its queue is the part before the `@`.
    let name = queue.split('@').next().unwrap_or(queue);
    let status = client.status().await?;
    Ok(status.queues.iter().any(|q| q.name == name))
}

/// What a read of a queue that does not exist says (it is not created by the read).
fn no_queue(queue: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "no queue `{queue}` on this manager: nothing was ever put to it here (a put creates \
         it, as does `qmgr declare {queue}`)"
    )
}

/// Print every message put into a queue from now on (they stay in the queue).
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// A local queue.
    queue: String,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    connection: Connection,
}

impl WatchArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        Connection::runtime()?.block_on(async {
            let client = self.connection.client().await?;
            let mut subscription = client.subscribe(&self.queue).await?;
            // Scripts wait for this line before putting, so no message is missed.
            if queue_exists(&client, &self.queue).await? {
                eprintln!("watching {}", self.queue);
            } else {
                eprintln!(
                    "watching {} (no such queue here yet: the first put creates it)",
                    self.queue
                );
            }
            let mut seen = 0;
            while self.count.is_none_or(|count| seen < count) {
                let Some(message) = subscription.next().await else {
                    bail!("the manager closed the connection");
                };
                self.output.print(&message)?;
                seen += 1;
            }
            Ok(ExitCode::SUCCESS)
        })
    }
}

/// Print messages waiting in a queue without taking them.
#[derive(Debug, clap::Args)]
pub struct BrowseArgs {
    /// A local queue.
    queue: String,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    max: u32,
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    connection: Connection,
}

impl BrowseArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        Connection::runtime()?.block_on(async {
            let client = self.connection.client().await?;
            let messages = client.browse(&self.queue, self.max).await?;
            if messages.is_empty() && !queue_exists(&client, &self.queue).await? {
                return Err(no_queue(&self.queue));
            }
            for message in &messages {
                self.output.print(message)?;
            }
            Ok(ExitCode::SUCCESS)
        })
    }
}

/// Create a local queue (idempotent), optionally with a depth limit.
#[derive(Debug, clap::Args)]
pub struct DeclareArgs {
    /// The queue.
    queue: String,
    /// The most messages it may hold.
    #[arg(long)]
    max_depth: Option<u64>,
    #[command(flatten)]
    connection: Connection,
}

impl DeclareArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        Connection::runtime()?.block_on(async {
            self.connection
                .client()
                .await?
                .declare(&self.queue, self.max_depth)
                .await?;
            Ok(ExitCode::SUCCESS)
        })
    }
}

/// Delete an empty local queue.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The queue.
    queue: String,
    #[command(flatten)]
    connection: Connection,
}

impl DeleteArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        Connection::runtime()?.block_on(async {
            self.connection.client().await?.delete(&self.queue).await?;
            Ok(ExitCode::SUCCESS)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn json_shows_text_or_base64() {
        let text = to_json(&Message::new("hi"));
        assert_eq!(text["body"], "hi");
        assert!(text.get("body_base64").is_none());
        let binary = to_json(&Message::new(vec![0xff, 0x00]));
        assert_eq!(binary["body_base64"], "/wA=");
        assert!(binary.get("body").is_none());
    }
}

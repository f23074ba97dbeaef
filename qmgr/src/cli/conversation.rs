//! Request/reply from the command line: `qmgr request ADDRESS [BODY]` sends a request and
//! prints its reply; `qmgr reply QUEUE -- COMMAND [ARGS...]` serves a queue of requests by
//! running the command once per request (the request's body on its stdin, its fields in
//! `HOPMQ_*` variables) and replying with its stdout (less one final line end, as `$(…)`
//! takes it). A command that exits non-zero still
//! answers: its reply carries the `hopmq.error` header, and `qmgr request` exits 1 on it.
//!
//! Each request is leased while its command runs and answered with `reply`, which acks it in
//! the same write: if `qmgr reply` dies mid-request, the request goes back to be served again,
//! and once answered it is never answered twice.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use hopmq::protocol::{
    PROBE_CORRELATION_PREFIX, PROBE_REASON_HEADER, PROBE_RESULT_HEADER, REPLY_ERROR_HEADER,
};
use hopmq::{ApiError, Client, ClientError, Message};

use super::client::{BodyArgs, Connection, MessageOptions, Output, parse_duration};
use super::lease::{describe, exit_status};
use super::units;

/// Send a request and print its reply.
#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    /// `QUEUE` or `QUEUE@MANAGER`; with --many, a topic.
    address: String,
    #[command(flatten)]
    body: BodyArgs,
    #[command(flatten)]
    options: MessageOptions,
    /// How long to wait for the reply, e.g. 5s. Past it the command fails (exit 1); a reply
    /// that comes later is dead-lettered.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    timeout: Duration,
    /// Publish the request to the topic ADDRESS and print the replies of its subscribers
    /// that come within --timeout, at most this many (scatter/gather); exits 1 if none came.
    #[arg(long, value_name = "MAX_REPLIES")]
    many: Option<u32>,
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    connection: Connection,
}

impl RequestArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let body = match self.body.single()? {
            Some(body) => body,
            None => {
                // A request is one message: all of stdin is its body.
                let mut body = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut body)
                    .context("cannot read the request's body from stdin")?;
                body
            }
        };
        let message = self.options.message(body);
        if message.reply_to.is_some() {
            bail!("a request's reply_to is its own reply queue: leave out --reply-to");
        }
        Connection::runtime()?.block_on(async {
            let client = self.connection.client().await?;
            if let Some(max_replies) = self.many {
                return self.gather(&client, message, max_replies).await;
            }
            let reply = match client.request(&self.address, message, self.timeout).await {
                Ok(reply) => reply,
                Err(ClientError::NoReply(_)) => bail!(
                    "no reply from {} within {} (a reply that comes later is dead-lettered)",
                    self.address,
                    units::duration(self.timeout)
                ),
                Err(error) => return Err(error.into()),
            };
            self.output.print(&reply)?;
            if let Some(error) = reply.headers.get(REPLY_ERROR_HEADER) {
                eprintln!("the server failed the request: {error}");
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        })
    }
}

impl RequestArgs {
    /// `--many`: the replies to a request published to a topic, each printed as it would be
    /// alone.
    async fn gather(
        &self,
        client: &Client,
        message: Message,
        max_replies: u32,
    ) -> anyhow::Result<ExitCode> {
        let replies = client
            .request_many(&self.address, message, self.timeout, max_replies)
            .await?;
        for reply in &replies {
            self.output.print(reply)?;
        }
        if replies.is_empty() {
            eprintln!(
                "no reply to {} within {} (a reply that comes later is dead-lettered)",
                self.address,
                units::duration(self.timeout)
            );
            return Ok(ExitCode::FAILURE);
        }
        let failed = replies
            .iter()
            .filter(|r| r.headers.contains_key(REPLY_ERROR_HEADER))
            .count();
        eprintln!(
            "{} from subscribers of {}{}",
            units::count(replies.len() as u64, "reply", "replies"),
            self.address,
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            }
        );
        Ok(if failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// Serve requests: run a command per request and reply with its output.
#[derive(Debug, clap::Args)]
pub struct ReplyArgs {
    /// A local queue of requests.
    queue: String,
    /// Stop after this many requests (by default, serve until stopped).
    #[arg(long)]
    count: Option<u64>,
    /// How long the command may take per request: past it, the request goes back to its
    /// queue to be served again (and this answer is refused).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    lease: Duration,
    /// The command and its arguments (after `--`), run once per request.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
    #[command(flatten)]
    connection: Connection,
}

impl ReplyArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        Connection::runtime()?.block_on(async {
            let client = self.connection.client().await?;
            let mut served = 0u64;
            while self.count.is_none_or(|count| served < count) {
                let wait = Duration::from_secs(60);
                let Some(request) = client.get_leased(&self.queue, wait, self.lease).await? else {
                    continue;
                };
                served += 1;
                self.answer(&client, &request).await?;
            }
            eprintln!("served {}", units::count(served, "request", "requests"));
            Ok(ExitCode::SUCCESS)
        })
    }

    /// Runs the command for `request` and replies with what it wrote; a request that cannot
    /// be answered (no `reply_to`) is nacked, so it ends in the dead-letter queue once
    /// delivered `max_deliveries` times, never lost.
    async fn answer(&self, client: &Client, request: &Message) -> anyhow::Result<()> {
        let run = self.execute(request).await?;
        let mut reply = Message::new(run.stdout);
        if let Some(error) = run.error {
            eprintln!("request {}: {error}", request.id);
            reply = reply.header(REPLY_ERROR_HEADER, error);
        }
        match client.reply(request, reply).await {
            Ok(_) => Ok(()),
            Err(ClientError::Api(ApiError::BadRequest { reason })) => {
                eprintln!(
                    "request {}: cannot be answered: {reason}; nacked",
                    request.id
                );
                client.nack(request.lease.into_iter().collect()).await?;
                Ok(())
            }
            Err(ClientError::Api(ApiError::UnknownLease { .. })) => {
                eprintln!(
                    "request {}: the command took longer than --lease {}; the request went \
                     back to be served again",
                    request.id,
                    units::duration(self.lease)
                );
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Runs the command with the request's body on its stdin; its stdout, and why it failed
    /// if it did.
    async fn execute(&self, request: &Message) -> anyhow::Result<Ran> {
        let (program, args) = self.command.split_first().context("no command to run")?;
        let mut child = std::process::Command::new(program);
        child
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        describe(&mut child, &self.queue, request);
        let body = request.body.clone();
        let program = program.clone();
        // On the blocking pool: the connection's tasks keep running meanwhile.
        let output = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let mut child = child.spawn()?;
            let writer = child.stdin.take().map(|mut stdin| {
                // A thread of its own: a command that writes before it reads all of its
                // stdin would otherwise block on a full pipe while this blocks on its stdin.
                std::thread::spawn(move || {
                    use std::io::Write;
                    // A command that does not read its stdin is fine.
                    let _ = stdin.write_all(&body);
                })
            });
            let output = child.wait_with_output()?;
            if let Some(writer) = writer {
                let _ = writer.join();
            }
            Ok(output)
        })
        .await
        .context("the command's thread failed")?
        .with_context(|| format!("cannot run `{program}`"))?;
        let error = (!output.status.success())
            .then(|| format!("`{program}` {}", exit_status(output.status)));
        let mut stdout = output.stdout;
        // As `$(…)` does: `qmgr request` prints a reply with a line end of its own.
        if stdout.last() == Some(&b'\n') {
            stdout.pop();
        }
        Ok(Ran { stdout, error })
    }
}

/// Show the path a message to an address would take now, hop by hop.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// `QUEUE` or `QUEUE@MANAGER`.
    address: String,
    /// How long to wait for the probe's answer, e.g. 5s.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    timeout: Duration,
    /// One JSON object: the result, the reason if it stopped, and the hops.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

impl TraceArgs {
    /// Exit 0 if the probe arrived, 1 if it stopped (or never answered).
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let correlation = format!("{PROBE_CORRELATION_PREFIX}{}.{nanos}", std::process::id());
        let probe = Message::new(Vec::new())
            .correlation_id(correlation)
            .non_persistent();
        Connection::runtime()?.block_on(async {
            let client = self.connection.client().await?;
            let answer = match client.request(&self.address, probe, self.timeout).await {
                Ok(answer) => answer,
                Err(ClientError::NoReply(_)) => bail!(
                    "no answer from the probe to {} within {}: it was lost on its way (a \
                     manager on the path stopped?)",
                    self.address,
                    units::duration(self.timeout)
                ),
                Err(error) => return Err(error.into()),
            };
            let hops = probe_hops(&answer.body);
            let arrived = answer.headers.get(PROBE_RESULT_HEADER).map(String::as_str) == Some("arrived");
            let reason = answer.headers.get(PROBE_REASON_HEADER);
            if self.json {
                let hops: Vec<_> = hops
                    .iter()
                    .map(|(manager, at_ms)| serde_json::json!({"manager": manager, "at_ms": at_ms}))
                    .collect();
                let result = if arrived { "arrived" } else { "stopped" };
                crate::outln!(
                    "{}",
                    serde_json::json!({"address": self.address, "result": result, "reason": reason, "hops": hops})
                )?;
            } else {
                print_hops(&self.address, &hops, reason.filter(|_| !arrived))?;
            }
            Ok(if arrived {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        })
    }
}

/// A probe answer's hops: `(manager, at_ms)` per line of `MANAGER AT_MS`.
fn probe_hops(body: &[u8]) -> Vec<(String, u64)> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|line| {
            let (manager, at) = line.split_once(' ')?;
            Some((manager.to_owned(), at.parse().ok()?))
        })
        .collect()
}

/// The hops one per line with the time from the one before, and how the probe ended.
fn print_hops(
    address: &str,
    hops: &[(String, u64)],
    stopped: Option<&String>,
) -> Result<(), super::output::OutputError> {
    let last = hops.last().map_or("?", |(manager, _)| manager.as_str());
    let count = hops.len().saturating_sub(1);
    let hops_text = units::count(count as u64, "hop", "hops");
    match stopped {
        None => crate::outln!("trace to {address}: arrived at {last} after {hops_text}")?,
        Some(reason) => {
            crate::outln!("trace to {address}: stopped after {hops_text}, {reason}")?;
        }
    }
    let width = hops.iter().map(|(m, _)| m.len()).max().unwrap_or(0);
    let mut previous = None;
    for (manager, at_ms) in hops {
        let step = previous.map_or(0, |p| at_ms.saturating_sub(p));
        crate::outln!("  {manager:<width$}  +{step} ms")?;
        previous = Some(*at_ms);
    }
    Ok(())
}

/// What the command made of a request.
struct Ran {
    stdout: Vec<u8>,
    error: Option<String>,
}

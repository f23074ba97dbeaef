//! Leased gets from the command line: `qmgr get QUEUE --lease DURATION`.
//!
//! A lease belongs to the connection that took it, and goes back to its queue when that
//! connection closes, so a lease cannot outlive the command: the command settles each message
//! itself before it ends. Either it runs a command per message (`--exec CMD`: the body on its
//! stdin, the message's fields in its environment; exit 0 acks, anything else nacks), or it
//! prints the message and then acks it (`--then ack`, the default: the message is removed only
//! once it was written out, so a reader that is gone loses nothing) or nacks it (`--then nack`:
//! a look that counts as a delivery). If `qmgr` dies first, the message returns.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use hopmq::{ApiError, Client, ClientError, GetOptions, Message};

use super::client::Output;

/// How a printed leased message is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Settle {
    /// Removed for good once printed.
    Ack,
    /// Back to its queue once printed (its delivery counted).
    Nack,
}

/// What `get --lease` was asked.
pub(crate) struct LeasedGet<'a> {
    pub queue: &'a str,
    pub timeout: Duration,
    pub count: u64,
    pub correlation_id: Option<String>,
    pub lease: Duration,
    pub exec: Option<&'a str>,
    pub then: Settle,
    pub output: Output,
}

impl LeasedGet<'_> {
    /// Takes up to `count` messages one at a time, each settled before the next is taken.
    /// Exit 1 if any was nacked because its command failed.
    pub(crate) async fn run(&self, client: &Client) -> anyhow::Result<(u64, ExitCode)> {
        let mut taken = 0;
        let mut failed = 0u64;
        while taken < self.count {
            let options = GetOptions {
                timeout: self.timeout,
                max: 1,
                correlation_id: self.correlation_id.clone(),
                lease: Some(self.lease),
            };
            let Some(message) = client.get_with(self.queue, options).await?.pop() else {
                break;
            };
            taken += 1;
            let lease = message.lease.context("the manager gave no lease")?;
            let ack = match self.exec {
                Some(command) => self.exec(command, &message).await?,
                None => match self.output.print(&message) {
                    Ok(()) => self.then == Settle::Ack,
                    Err(error) => {
                        // Whatever the reader took, it stops here: the message goes back.
                        client.nack(vec![lease]).await?;
                        return Err(error.into());
                    }
                },
            };
            if ack {
                settle(client.ack(vec![lease]).await, &message, self.lease)?;
            } else {
                failed += u64::from(self.exec.is_some());
                settle(client.nack(vec![lease]).await, &message, self.lease)?;
            }
        }
        let code = if failed > 0 {
            eprintln!(
                "{} not handled: nacked, back in {} (dead-lettered once delivered \
                 max_deliveries times)",
                super::units::count(failed, "message was", "messages were"),
                self.queue
            );
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
        Ok((taken, code))
    }

    /// Runs `command` (with `sh -c`) for `message`: its body on stdin, its fields in
    /// `HOPMQ_*` variables, its output the command's own. True if it exited 0.
    async fn exec(&self, command: &str, message: &Message) -> anyhow::Result<bool> {
        let mut child = std::process::Command::new("sh");
        child
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::piped());
        describe(&mut child, self.queue, message);
        let body = message.body.clone();
        let command = command.to_owned();
        // On the blocking pool: the connection's tasks keep running meanwhile.
        let status = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            use std::io::Write;
            let mut child = child.spawn()?;
            if let Some(mut stdin) = child.stdin.take() {
                // A command that does not read its stdin is fine.
                let _ = stdin.write_all(&body);
            }
            child.wait()
        })
        .await
        .context("the command's thread failed")?
        .with_context(|| format!("cannot run `{command}`"))?;
        if !status.success() {
            eprintln!(
                "message {}: `{command}` {status}; nacked",
                message.id,
                status = exit_status(status)
            );
        }
        Ok(status.success())
    }
}

/// Gives `child` the fields of `message`, taken from `queue`, as `HOPMQ_*` variables.
pub(crate) fn describe(child: &mut std::process::Command, queue: &str, message: &Message) {
    child
        .env("HOPMQ_QUEUE", queue)
        .env("HOPMQ_MESSAGE_ID", message.id.to_string())
        .env("HOPMQ_DELIVERY_COUNT", message.delivery_count.to_string())
        .env("HOPMQ_PRIORITY", message.priority.to_string())
        .env("HOPMQ_ORIGIN", &message.origin);
    if let Some(id) = &message.correlation_id {
        child.env("HOPMQ_CORRELATION_ID", id);
    }
    if let Some(to) = &message.reply_to {
        child.env("HOPMQ_REPLY_TO", to);
    }
    for (key, value) in &message.headers {
        child.env(header_variable(key), value);
    }
}

/// `HOPMQ_HEADER_` and the header's name in capitals, other characters as `_`.
fn header_variable(key: &str) -> String {
    let name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("HOPMQ_HEADER_{name}")
}

pub(crate) fn exit_status(status: std::process::ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exited with {code}"),
        None => "was killed by a signal".to_owned(),
    }
}

/// An ack or nack's outcome: a lease that ended first is said in plain words.
fn settle(
    result: Result<(), ClientError>,
    message: &Message,
    lease: Duration,
) -> anyhow::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(ClientError::Api(ApiError::UnknownLease { .. })) => Err(anyhow::anyhow!(
            "the lease of message {} ({}) ended before it was settled: it went back to its \
             queue (give a longer --lease)",
            message.id,
            super::units::duration(lease)
        )),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_become_variables() {
        assert_eq!(header_variable("customer-id"), "HOPMQ_HEADER_CUSTOMER_ID");
        assert_eq!(header_variable("a.b"), "HOPMQ_HEADER_A_B");
    }
}

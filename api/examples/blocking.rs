//! The blocking client, for programs without an async runtime: a small script-like tool.
//!
//! ```sh
//! cargo run -p hopmq --example blocking -- put QUEUE BODY...   # one message per BODY
//! cargo run -p hopmq --example blocking -- get QUEUE [SECONDS] # prints bodies until none comes
//! ```

use std::process::ExitCode;
use std::time::Duration;

use hopmq::Message;
use hopmq::blocking::Client;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: blocking put QUEUE BODY... | blocking get QUEUE [SECONDS]";
    let (command, queue) = match args {
        [command, queue, ..] => (command.as_str(), queue.as_str()),
        _ => return Err(usage.into()),
    };
    let client = Client::connect()?;
    match command {
        "put" => {
            for body in &args[2..] {
                let id = client.put(queue, Message::new(body.as_str()))?;
                println!("{id}");
            }
        }
        "get" => {
            let seconds: u64 = args.get(2).map_or(Ok(1), |s| s.parse())?;
            while let Some(message) = client.get(queue, Duration::from_secs(seconds))? {
                println!("{}", String::from_utf8_lossy(&message.body));
            }
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}

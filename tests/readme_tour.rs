//! The README's tour, run literally: every ```console block of README.md is extracted and its
//! commands typed into one bash session in a fresh folder, against the `qmgr` this test run
//! built; the output each block shows must be what comes back. A README that drifts from the
//! product fails here.
//!
//! Each console block is preceded by a marker comment saying how it runs (a block without one
//! fails the test, so a new block cannot go unchecked by accident):
//!
//! - `<!-- tour: offline -->`: no manager needed.
//! - `<!-- tour: standalone -->`: a `qmgr run` started in the folder, as the prose says, for
//!   the block's length.
//! - `<!-- tour: cluster -->`: after `scripts/cluster up`, the README's main job (its managers
//!   stay until a block runs `scripts/cluster down`, or the test ends).
//! - `<!-- tour: skip: REASON -->`: deliberately not run.
//!
//! and may add, separated by `;`, `skip "TEXT": REASON` (a command containing TEXT is not run,
//! e.g. one that needs Graphviz or runs until Ctrl-C) and `until "TEXT"` (a command containing
//! TEXT is repeated until its output matches, within a deadline: what an operator sees once a
//! change has spread through the network).
//!
//! In a block, a line `$ COMMAND` is typed (a line ending with `\` continues it); the lines
//! below it, up to the next command, are its expected output (standard output and standard
//! error together, as a terminal shows them). A command shown without output may print
//! anything. Every command must succeed (exit code 0, `pipefail`). Expected output is matched
//! line by line, with:
//! - `...` or `…` within a line: any text; alone on a line: any number of lines;
//! - runs of 8 or more hexadecimal characters with a digit (ids, versions, timestamps): any
//!   such run;
//! - durations (`3.2s`, `25ms`, `3h 12m`): any duration;
//! - runs of spaces: any run of spaces (tables align to their content).
//!
//! The fresh folder holds what a clone has at its top that the tour uses: `scripts/` (linked),
//! `topology.toml` (copied, with free loopback ports instead of 7401–7404, so that the test
//! runs beside anything else), and `target/release/qmgr` (this run's binary, also first on
//! `PATH` as `qmgr`, and `QMGR_BIN` for `scripts/cluster`, which then builds nothing).

#![allow(clippy::unwrap_used)] // a test that cannot go on should stop loudly

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{SOON, START_DEADLINE, qmgr_path, repo_root, send_sigterm, wait_exit};

/// How long one command of the tour may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// How a block runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Setup {
    Offline,
    Standalone,
    Cluster,
    Skip(String),
}

#[derive(Debug)]
struct Block {
    /// The README line of its fence.
    line: usize,
    setup: Setup,
    /// Commands containing one of these are not run.
    skips: Vec<String>,
    /// Commands containing one of these are repeated until their output matches.
    until: Vec<String>,
    steps: Vec<Step>,
}

#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// Parses a marker's text after `tour:`.
fn parse_marker(text: &str, line: usize) -> (Setup, Vec<String>, Vec<String>) {
    // A skipped block's reason is all the rest, `;` included.
    if let Some(reason) = text.strip_prefix("skip:").map(str::trim) {
        assert!(
            !reason.is_empty(),
            "README.md:{line}: a skipped block needs a reason"
        );
        return (Setup::Skip(reason.to_owned()), Vec::new(), Vec::new());
    }
    let mut parts = text.split(';').map(str::trim);
    let kind = parts.next().unwrap_or_default();
    let setup = match kind {
        "offline" => Setup::Offline,
        "standalone" => Setup::Standalone,
        "cluster" => Setup::Cluster,
        _ => panic!("README.md:{line}: unknown tour marker `{kind}`"),
    };
    let quoted = |part: &str, prefix: &str| -> Option<String> {
        let rest = part.strip_prefix(prefix)?.trim_start().strip_prefix('"')?;
        let (text, _) = rest.split_once('"')?;
        Some(text.to_owned())
    };
    let (mut skips, mut until) = (Vec::new(), Vec::new());
    for part in parts {
        if let Some(text) = quoted(part, "skip") {
            assert!(
                part.contains("\":"),
                "README.md:{line}: a skip needs a reason: {part}"
            );
            skips.push(text);
        } else if let Some(text) = quoted(part, "until") {
            until.push(text);
        } else {
            panic!("README.md:{line}: unknown tour marker part `{part}`");
        }
    }
    (setup, skips, until)
}

/// Every console block of the README, with its marker.
fn blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() != "```console" {
            i += 1;
            continue;
        }
        let line = i + 1;
        let marker = i
            .checked_sub(1)
            .and_then(|j| lines[j].trim().strip_prefix("<!-- tour:"))
            .and_then(|rest| rest.strip_suffix("-->"))
            .unwrap_or_else(|| {
                panic!("README.md:{line}: a console block without a `<!-- tour: ... -->` marker")
            });
        let (setup, skips, until) = parse_marker(marker.trim(), line);
        let mut steps: Vec<Step> = Vec::new();
        i += 1;
        while i < lines.len() && lines[i].trim_end() != "```" {
            let text = lines[i];
            if let Some(command) = text.strip_prefix("$ ") {
                let mut command = command.to_owned();
                while command.ends_with('\\') && i + 1 < lines.len() {
                    i += 1;
                    command.push('\n');
                    command.push_str(lines[i]);
                }
                steps.push(Step {
                    command,
                    expected: Vec::new(),
                });
            } else {
                let step = steps
                    .last_mut()
                    .unwrap_or_else(|| panic!("README.md:{}: output before any command", i + 1));
                step.expected.push(text.to_owned());
            }
            i += 1;
        }
        // An empty line closes a command's output: it is layout, not output.
        for step in &mut steps {
            while step.expected.last().is_some_and(|l| l.trim().is_empty()) {
                step.expected.pop();
            }
        }
        blocks.push(Block {
            line,
            setup,
            skips,
            until,
            steps,
        });
        i += 1;
    }
    blocks
}

/// One element of an expected line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Char(char),
    Any,
    Hex,
    Duration,
    Spaces,
}

fn is_hex(c: char) -> bool {
    c.is_ascii_digit() || ('a'..='f').contains(&c)
}

/// The length of a duration (`25ms`, `3.2s`, `4m`) at the start of `s`, if one is there.
fn duration_at(s: &[char]) -> Option<usize> {
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n = digits;
    if s.get(n) == Some(&'.') {
        let fraction = s[n + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if fraction == 0 {
            return None;
        }
        n += 1 + fraction;
    }
    let unit = match (s.get(n), s.get(n + 1)) {
        (Some('m'), Some('s')) => 2,
        (Some('s' | 'm' | 'h' | 'd'), _) => 1,
        _ => return None,
    };
    n += unit;
    // A unit ends the word: `5min` or `3days` are no durations here.
    match s.get(n) {
        Some(c) if c.is_alphanumeric() => None,
        _ => Some(n),
    }
}

/// The lengths at which one or more durations separated by single spaces end, from `s[0]`.
fn duration_runs(s: &[char]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut at = 0;
    while let Some(n) = duration_at(&s[at..]) {
        ends.push(at + n);
        if s.get(at + n) != Some(&' ') {
            break;
        }
        at += n + 1;
    }
    ends
}

/// An expected line as tokens.
fn pattern(expected: &str) -> Vec<Token> {
    let chars: Vec<char> = expected.trim_end().chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let rest = &chars[i..];
        if rest.starts_with(&['.', '.', '.']) {
            tokens.push(Token::Any);
            i += 3;
        } else if rest[0] == '…' {
            tokens.push(Token::Any);
            i += 1;
        } else if rest[0] == ' ' {
            tokens.push(Token::Spaces);
            i += rest.iter().take_while(|c| **c == ' ').count();
        } else if let Some(&end) = duration_runs(rest)
            .last()
            .filter(|_| i == 0 || !chars[i - 1].is_alphanumeric())
        {
            tokens.push(Token::Duration);
            i += end;
        } else {
            let hex = rest.iter().take_while(|c| is_hex(**c)).count();
            let boundary = i == 0 || !chars[i - 1].is_alphanumeric();
            if boundary && hex >= 8 && rest[..hex].iter().any(char::is_ascii_digit) {
                tokens.push(Token::Hex);
                i += hex;
            } else {
                tokens.push(Token::Char(rest[0]));
                i += 1;
            }
        }
    }
    tokens
}

/// Whether `line` matches `tokens`, wholly.
fn matches(tokens: &[Token], line: &[char]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return line.is_empty();
    };
    match first {
        Token::Char(c) => line.first() == Some(c) && matches(rest, &line[1..]),
        Token::Any => (0..=line.len()).any(|n| matches(rest, &line[n..])),
        Token::Spaces => {
            let n = line.iter().take_while(|c| **c == ' ').count();
            (1..=n).any(|k| matches(rest, &line[k..]))
        }
        Token::Hex => {
            let n = line.iter().take_while(|c| is_hex(**c)).count();
            (1..=n).any(|k| matches(rest, &line[k..]))
        }
        Token::Duration => duration_runs(line)
            .into_iter()
            .any(|k| matches(rest, &line[k..])),
    }
}

/// Whether the lines of `actual` match the `expected` lines (`...` alone: any lines).
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    let Some((first, rest)) = expected.split_first() else {
        return actual.is_empty();
    };
    if matches!(first.trim(), "..." | "…") {
        return (0..=actual.len()).any(|n| lines_match(rest, &actual[n..]));
    }
    let Some((line, actual_rest)) = actual.split_first() else {
        return false;
    };
    let chars: Vec<char> = line.trim_end().chars().collect();
    matches(&pattern(first), &chars) && lines_match(rest, actual_rest)
}

/// The fresh folder a reader runs the tour in.
struct Folder {
    dir: tempfile::TempDir,
    /// Holds `qmgr`, first on the session's PATH.
    bin: PathBuf,
}

impl Folder {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::os::unix::fs::symlink(repo_root().join("scripts"), root.join("scripts")).unwrap();
        fs::create_dir_all(root.join("target/release")).unwrap();
        std::os::unix::fs::symlink(qmgr_path(), root.join("target/release/qmgr")).unwrap();
        let bin = root.join("bin");
        fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(qmgr_path(), bin.join("qmgr")).unwrap();
        fs::create_dir_all(root.join("home")).unwrap();
        // The repository's network on free ports.
        let mut topology = fs::read_to_string(repo_root().join("topology.toml")).unwrap();
        for port in 7401..=7404 {
            let free = support::network::free_udp_port();
            topology = topology.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{free}"));
        }
        fs::write(root.join("topology.toml"), topology).unwrap();
        Self { dir, bin }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A command run in the folder with the tour's environment.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        command
            .current_dir(self.path())
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.path().join("home"))
            .env("LANG", "C.UTF-8")
            .env("NO_COLOR", "1")
            .env("QMGR_BIN", qmgr_path());
        command
    }

    /// `scripts/cluster ARGS`, which must succeed.
    fn cluster(&self, args: &[&str]) {
        let output = self
            .command(self.path().join("scripts/cluster"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "scripts/cluster {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        // Whatever a failed tour left running.
        let _ = self
            .command(self.path().join("scripts/cluster"))
            .arg("down")
            .output();
    }
}

/// A standalone `qmgr run` in the folder, stopped when dropped.
struct Standalone(Child);

impl Standalone {
    fn start(folder: &Folder) -> Self {
        let log = fs::File::create(folder.path().join("standalone.log")).unwrap();
        let child = folder
            .command(qmgr_path())
            .arg("run")
            // Every QMGR_* variable is a setting of `qmgr run`, and QMGR_BIN is none.
            .env_remove("QMGR_BIN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let socket = folder.path().join("qmgr-data/qmgr.sock");
        let mut manager = Self(child);
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            let log = || fs::read_to_string(folder.path().join("standalone.log")).unwrap();
            assert!(
                manager.0.try_wait().unwrap().is_none(),
                "the standalone manager exited:\n{}",
                log()
            );
            assert!(
                start.elapsed() < START_DEADLINE,
                "the standalone manager did not listen within {START_DEADLINE:?}:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        manager
    }

    fn stop(mut self) {
        send_sigterm(self.0.id());
        let status = wait_exit(&mut self.0, "the standalone manager", START_DEADLINE);
        assert!(status.success(), "{status}");
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// One bash session: commands are typed in, their output read back up to a marker line that
/// carries the exit code.
struct Session {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

const END: &str = "@@tour-end ";

impl Session {
    fn start(folder: &Folder) -> Self {
        let mut child = folder
            .command("bash")
            .arg("--noprofile")
            .arg("--norc")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let mut session = Self {
            child,
            stdin,
            lines,
        };
        // As at a terminal: errors shown with the output, aliases work, a failing pipeline
        // fails.
        session.run("exec 2>&1; shopt -s expand_aliases; set -o pipefail");
        session
    }

    /// Types `command`; returns its exit code and output lines.
    fn run(&mut self, command: &str) -> (i32, Vec<String>) {
        writeln!(
            self.stdin,
            "{command}\n__tour_status=$?; printf '\\n{END}%s\\n' \"$__tour_status\""
        )
        .unwrap();
        self.stdin.flush().unwrap();
        let start = Instant::now();
        let mut output = Vec::new();
        loop {
            let left = COMMAND_DEADLINE.saturating_sub(start.elapsed());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "`{command}` did not finish within {COMMAND_DEADLINE:?}; so far:\n{}",
                    output.join("\n")
                )
            });
            if let Some(code) = line.strip_prefix(END) {
                // The marker's leading newline ends a last line without one, and adds an empty
                // line after one that had it.
                if output.last().is_some_and(String::is_empty) {
                    output.pop();
                }
                return (code.trim().parse().unwrap(), output);
            }
            output.push(line);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_block(folder: &Folder, block: &Block) {
    let mut session = Session::start(folder);
    for step in &block.steps {
        if let Some(skip) = block
            .skips
            .iter()
            .find(|s| step.command.contains(s.as_str()))
        {
            eprintln!(
                "README.md:{}: not run (marked): `{}` ({skip})",
                block.line, step.command
            );
            continue;
        }
        eprintln!("README.md:{}: $ {}", block.line, step.command);
        let repeat = block
            .until
            .iter()
            .any(|u| step.command.contains(u.as_str()));
        let start = Instant::now();
        loop {
            let (code, output) = session.run(&step.command);
            let lines: Vec<&str> = output.iter().map(String::as_str).collect();
            let matched = step.expected.is_empty() || lines_match(&step.expected, &lines);
            if code == 0 && matched {
                break;
            }
            if !(repeat && code == 0 && start.elapsed() < SOON) {
                panic!(
                    "README.md:{}: `{}` exited {code}{}\n--- expected:\n{}\n--- got:\n{}",
                    block.line,
                    step.command,
                    if matched {
                        ""
                    } else {
                        " and its output differs"
                    },
                    step.expected.join("\n"),
                    output.join("\n")
                );
            }
            // What the README shows has not spread through the network yet: look again.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn the_readme_tour_runs_as_written() {
    let readme = fs::read_to_string(repo_root().join("README.md")).unwrap();
    let blocks = blocks(&readme);
    assert!(blocks.len() >= 4, "{blocks:#?}");
    let folder = Folder::new();
    let mut cluster_up = false;
    for block in &blocks {
        match &block.setup {
            Setup::Skip(reason) => {
                eprintln!("README.md:{}: block not run (marked): {reason}", block.line);
                continue;
            }
            Setup::Offline => run_block(&folder, block),
            Setup::Standalone => {
                let manager = Standalone::start(&folder);
                run_block(&folder, block);
                manager.stop();
            }
            Setup::Cluster => {
                if !cluster_up {
                    folder.cluster(&["up"]);
                }
                run_block(&folder, block);
            }
        }
        // A block may have stopped the cluster: the next cluster block starts it again.
        cluster_up = block.setup == Setup::Cluster
            && !block
                .steps
                .iter()
                .any(|step| step.command.starts_with("scripts/cluster down"));
    }
}

#[test]
fn the_matcher_knows_what_varies_and_nothing_else() {
    let line = |expected: &str, actual: &str| lines_match(&[expected.to_owned()], &[actual]);
    assert!(line(
        "60340533d670f8f50000000000000001",
        "08f414c20253085b0000000000000001"
    ));
    assert!(line(
        "routes at alpha (topology version 635fd925)",
        "routes at alpha (topology version a4ad5574)"
    ));
    assert!(line(
        "bravo   up   up   0.2s ago",
        "bravo up       up             0.0s ago"
    ));
    assert!(line(
        "manager local (hopmq 0.1.0), up 3h 12m",
        "manager local (hopmq 0.1.0), up 25ms"
    ));
    assert!(line(
        "{\"body\":\"x\",...,\"origin\":\"alpha\",…}",
        "{\"body\":\"x\",\"a\":1,\"origin\":\"alpha\",\"z\":2}"
    ));
    assert!(!line(
        "put 3 messages to orders",
        "put 4 messages to orders"
    ));
    assert!(!line("delta charlie 4", "delta bravo 2"));
    assert!(!line("orders 4 0 11B 3.2s", "orders 4 0 12B 3.2s"));
    let lines = |expected: &[&str], actual: &[&str]| {
        let expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        lines_match(&expected, actual)
    };
    assert!(lines(&["a", "...", "z"], &["a", "b", "c", "z"]));
    assert!(lines(&["a", "...", "z"], &["a", "z"]));
    assert!(!lines(&["a", "z"], &["a", "b", "z"]));
    assert!(!lines(&["a"], &["a", "b"]));
}

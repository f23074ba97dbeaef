//! Headless Chromium for the web console's tests: load a page, let its script run, and read
//! the DOM it built (`--dump-dom`) or a screenshot of it.
//!
//! Chromium comes from Debian's packages (`scripts/install-browser`, which `scripts/test`
//! runs). A test that needs it and cannot find it fails saying so: it never passes silently.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one page load may take on a loaded machine before the browser is killed.
const LOAD_DEADLINE: Duration = Duration::from_secs(90);
/// Virtual time the page's script gets (its timers; fetches pause it): enough for the
/// console's first poll and render.
const VIRTUAL_TIME_BUDGET_MS: u32 = 5_000;

/// A Chromium binary.
#[derive(Debug)]
pub struct Browser {
    executable: PathBuf,
}

impl Browser {
    /// Chromium from `CHROMIUM` or `PATH`; panics, saying how to install it, if there is none.
    #[track_caller]
    pub fn find() -> Browser {
        let from_env = std::env::var_os("CHROMIUM").map(PathBuf::from);
        let on_path = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path).find_map(|dir| {
                ["chromium", "chromium-browser"]
                    .iter()
                    .map(|name| dir.join(name))
                    .find(|candidate| candidate.is_file())
            })
        });
        match from_env.or(on_path) {
            Some(executable) => Browser { executable },
            None => panic!(
                "Chromium is not installed (no `chromium` on PATH, no CHROMIUM): run \
                 scripts/install-browser (as root), which scripts/test runs before the tests"
            ),
        }
    }

    /// The DOM of `url` after its script ran, serialized.
    #[track_caller]
    pub fn dump_dom(&self, url: &str) -> String {
        self.run(&["--dump-dom", url])
    }

    /// Saves a 1400×900 screenshot of `url` to `path`.
    #[track_caller]
    pub fn screenshot(&self, url: &str, path: &Path) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("the screenshots folder is created");
        }
        let screenshot = format!("--screenshot={}", path.display());
        self.run(&[&screenshot, "--window-size=1400,900", url]);
        assert!(path.is_file(), "no screenshot at {}", path.display());
    }

    #[track_caller]
    fn run(&self, args: &[&str]) -> String {
        // A profile of its own per run: parallel tests never share one, nor a session.
        let profile = tempfile::tempdir().expect("a temporary folder");
        let mut child = Command::new(&self.executable)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", self.executable.display()));
        let mut stdout = child.stdout.take().expect("stdout is piped");
        // Read while it runs: a large DOM would fill the pipe and stall the browser.
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            out
        });
        let start = Instant::now();
        loop {
            if child.try_wait().expect("waiting works").is_some() {
                break;
            }
            if start.elapsed() > LOAD_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium {args:?} did not finish within {LOAD_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        reader.join().expect("the reader thread ends")
    }
}

/// Where a test's screenshots go: `<target>/console-screenshots/NAME.png`.
pub fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("..")
        .join("console-screenshots")
        .join(format!("{name}.png"))
}

/// How many times `needle` occurs in `haystack`.
pub fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

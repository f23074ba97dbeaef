"""Fixtures of the Python client's tests: real `qmgr run` daemons on temporary sockets.

The qmgr binary is $QMGR_BIN, else target/debug/qmgr (cargo build -p qmgr); scripts/test-python
builds it. Every wait polls a condition against a deadline generous enough for a loaded 2-core
machine; nothing sleeps for a fixed time hoping something happened.
"""

import itertools
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest

import hopmq

REPO = Path(__file__).resolve().parents[3]

DEADLINE = 30.0
"""How long a condition that should hold soon may take on a loaded machine, in seconds."""

# Settings of the shared manager that some tests rely on.
MAX_MESSAGE_BYTES = 65536
MAX_DELIVERIES = 3


def qmgr_binary() -> Path:
    explicit = os.environ.get("QMGR_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    if not target.is_absolute():
        target = REPO / target
    return target / "debug" / "qmgr"


def wait_until(what: str, condition: Callable[[], bool], deadline: float = DEADLINE) -> None:
    """Polls `condition` until it holds; fails naming `what` after `deadline` seconds."""
    start = time.monotonic()
    pause = 0.005
    while not condition():
        if time.monotonic() - start > deadline:
            pytest.fail(f"gave up after {deadline} s waiting until {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


class Manager:
    """One `qmgr run` daemon with its data, socket and log in `home`."""

    def __init__(self, home: Path, name: str = "py", settings: Optional[Dict[str, str]] = None):
        self.home = home
        self.name = name
        self.socket = str(home / "qmgr.sock")
        self.data_dir = home / "data"
        self.log = home / "qmgr.log"
        self.settings = settings or {}
        self.process: "Optional[subprocess.Popen[bytes]]" = None

    def start(self) -> "Manager":
        binary = qmgr_binary()
        if not binary.exists():
            pytest.fail(f"no qmgr binary at {binary}: run `cargo build -p qmgr` or set QMGR_BIN")
        # Every QMGR_* variable is a manager setting (QMGR_BIN is none and would be refused),
        # and HOPMQ_SOCKET is the tests' business.
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("QMGR_") and key != "HOPMQ_SOCKET"
        }
        env.update({"QMGR_RUNTIME_THREADS": "1", "NO_COLOR": "1"})
        env.update(self.settings)
        command = [str(binary), "run", "--name", self.name]
        command += ["--data-dir", str(self.data_dir), "--socket", self.socket]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        wait_until(f"the manager at {self.socket} answers", self.answers)
        return self

    def answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"the manager exited with {self.process.returncode}:\n{self.log_text()}")
        try:
            hopmq.Client(self.socket).close()
            return True
        except hopmq.ConnectError:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=DEADLINE)
            pytest.fail(f"the manager did not stop on SIGTERM:\n{self.log_text()}")

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Manager]:
    """The manager most tests share; each test uses queues of its own."""
    settings = {
        "QMGR_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        "QMGR_MAX_DELIVERIES": str(MAX_DELIVERIES),
    }
    # A short folder: a Unix socket's path must fit in 108 bytes.
    shared = Manager(tmp_path_factory.mktemp("mgr"), settings=settings).start()
    yield shared
    shared.stop()


@pytest.fixture
def start_manager(tmp_path: Path) -> Iterator[Callable[..., Manager]]:
    """Starts managers of the test's own, stopped at its end."""
    started: List[Manager] = []

    def start(**settings: str) -> Manager:
        home = tmp_path / f"m{len(started)}"
        home.mkdir()
        started.append(Manager(home, settings=settings).start())
        return started[-1]

    yield start
    for each in started:
        each.stop()


@pytest.fixture
def client(manager: Manager) -> Iterator[hopmq.Client]:
    with hopmq.Client(manager.socket) as connected:
        yield connected


_queues = itertools.count()


@pytest.fixture
def queue(request: pytest.FixtureRequest) -> str:
    """A queue name no other test uses."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:50]
    return f"{name}.{next(_queues)}"

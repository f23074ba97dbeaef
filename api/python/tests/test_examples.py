"""The examples under api/python/examples run as a user would run them: separate processes
against one manager, stopped with Ctrl-C (SIGINT) where they loop forever."""

import os
import queue as queues
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Dict, List

import pytest

import hopmq
from conftest import DEADLINE, Manager, wait_until

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class Running:
    """An example process whose stdout lines are read as they come."""

    def __init__(self, script: str, args: List[str], env: Dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            # Ctrl-C must reach Python even if this run ignores SIGINT (as a background job
            # of a shell does), which a child would inherit.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.lines: "queues.Queue[str]" = queues.Queue()
        self.seen: List[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, wanted: Callable[[str], bool], what: str) -> str:
        """Waits for a line `wanted` accepts; fails naming `what` after DEADLINE."""
        while True:
            try:
                line = self.lines.get(timeout=DEADLINE)
            except queues.Empty:
                self.process.kill()
                pytest.fail(f"no line {what} within {DEADLINE} s; output: {self.seen}")
            self.seen.append(line)
            if wanted(line):
                return line

    def interrupt(self) -> None:
        """Ctrl-C, then the process must exit 0 having said so."""
        self.process.send_signal(signal.SIGINT)
        self.expect(lambda line: line == "Interrupted", "saying it was interrupted")
        assert self.process.wait(timeout=DEADLINE) == 0


@pytest.fixture
def env(start_manager: Callable[..., Manager]) -> Dict[str, str]:
    manager = start_manager()
    return {**os.environ, "HOPMQ_SOCKET": manager.socket}


def run(script: str, args: List[str], env: Dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=DEADLINE,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_hello_world(env: Dict[str, str]) -> None:
    assert run("send.py", [], env) == " [x] Sent 'Hello World!'\n"
    receiver = Running("receive.py", [], env)
    receiver.expect(lambda line: line.startswith(" [*] Waiting"), "announcing the wait")
    receiver.expect(lambda line: line == " [x] Received Hello World!", "receiving the message")
    receiver.interrupt()


def test_work_queues(env: Dict[str, str]) -> None:
    for task in ["First task", "Second task."]:
        assert run("new_task.py", task.split(), env) == f" [x] Sent {task}\n"
    worker = Running("worker.py", [], env)
    for task in ["First task", "Second task."]:
        received = f" [x] Received {task}"
        worker.expect(received.__eq__, f"receiving {task}")
        worker.expect(" [x] Done".__eq__, "finishing the task")
    with hopmq.Client(env["HOPMQ_SOCKET"]) as client:

        def settled() -> bool:
            [tasks] = [q for q in client.status()["queues"] if q["name"] == "task_queue"]
            return bool(tasks["depth"] == 0 and tasks["leased"] == 0)

        # The worker acks after printing "Done"; a Ctrl-C before its ack would rightly give
        # the task back, to be done again.
        wait_until("the worker acked both tasks", settled)
        worker.interrupt()
        assert client.poll("task_queue") is None


def test_request_reply(env: Dict[str, str]) -> None:
    server = Running("hwserver.py", [], env)
    server.expect(lambda line: line.startswith("Serving"), "announcing it serves")
    output = run("hwclient.py", [], env)
    assert output.count("[ World ]") == 10
    assert output.splitlines()[-1] == "Received reply 9 [ World ]"
    server.interrupt()


def test_topics(env: Dict[str, str]) -> None:
    receiver = Running("receive_logs_topic.py", ["kern.*", "*.critical"], env)
    receiver.expect(lambda line: line.startswith(" [*] Waiting"), "announcing the wait")
    sent = [
        ("kern.critical", "A critical kernel error"),
        ("cron.info", "nobody listens"),
        ("auth.critical", "locked out"),
    ]
    for topic, text in sent:
        said = run("emit_log_topic.py", [topic, *text.split()], env)
        assert said == f" [x] Sent {topic}:{text}\n"
    got = {
        receiver.expect(lambda line: line.startswith(" [x]"), "a log line") for _ in range(3)
    }
    # kern.critical matches both filters: one copy on each subscription.
    assert got == {" [x] kern.critical:A critical kernel error", " [x] auth.critical:locked out"}
    assert not any("cron.info" in line for line in receiver.seen)
    receiver.interrupt()

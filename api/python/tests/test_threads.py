"""Threads and signals: blocking calls release the GIL, a client is shared by threads, Ctrl-C
interrupts a wait without leaving a get behind, and the interpreter exits cleanly with
callbacks and waits still running."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import List, Optional, Set

import pytest

import hopmq
from conftest import DEADLINE, Manager


def test_a_waiting_get_lets_other_threads_run(client: hopmq.Client, queue: str) -> None:
    started = threading.Event()
    got: List[Optional[hopmq.Message]] = []

    def wait_for_one() -> None:
        started.set()
        got.append(client.get(queue, timeout=DEADLINE))

    getter = threading.Thread(target=wait_for_one)
    getter.start()
    assert started.wait(DEADLINE)
    # Python code runs here while the other thread waits inside get. Had get kept the GIL,
    # this loop could only run once get had returned (None, after DEADLINE), with the getter
    # finished.
    spins = 0
    start = time.monotonic()
    while time.monotonic() - start < 0.3:
        spins += 1
    assert getter.is_alive()
    assert spins > 1000
    client.put(queue, "for the waiting thread")
    getter.join(DEADLINE)
    assert [message.text for message in got if message] == ["for the waiting thread"]


def test_a_callback_runs_while_the_main_thread_waits(client: hopmq.Client, queue: str) -> None:
    replies = f"{queue}.replies"
    with client.notify(queue, lambda message: client.put(replies, message.body)):
        client.put(queue, "echo")
        # The callback needs the GIL that this thread's get must have released.
        reply = client.get(replies, timeout=DEADLINE)
    assert reply is not None and reply.text == "echo"


def test_ctrl_c_interrupts_a_wait_and_leaves_no_get_behind(
    client: hopmq.Client, queue: str
) -> None:
    assert threading.current_thread() is threading.main_thread()
    # Python's own Ctrl-C handler, even if this run was started with SIGINT ignored (as a
    # background job of a shell is).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    waiting = threading.Event()

    def interrupt() -> None:
        # Only into the wait: a get that kept the GIL would run this only once it returned.
        if waiting.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    interrupter = threading.Timer(0.3, interrupt)
    start = time.monotonic()
    waiting.set()
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            # Would wait until a message comes, but for Ctrl-C.
            client.get(queue, timeout=DEADLINE)
    finally:
        waiting.clear()
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - start < DEADLINE / 3
    interrupter.join()
    # A get abandoned in the manager would take this message, and the next get would see
    # nothing.
    client.put(queue, "after the interrupt")
    message = client.get(queue, timeout=DEADLINE)
    assert message is not None and message.text == "after the interrupt"


def test_threads_share_one_client(client: hopmq.Client, queue: str) -> None:
    producers, each = 4, 25
    put_ids: Set[str] = set()
    got_ids: List[str] = []
    lock = threading.Lock()

    def produce(n: int) -> None:
        for i in range(each):
            message_id = client.put(queue, f"p{n}-{i}")
            with lock:
                put_ids.add(message_id)

    def consume() -> None:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            with lock:
                if len(got_ids) >= producers * each:
                    return
            message = client.get(queue, timeout=0.2)
            if message is not None:
                with lock:
                    got_ids.append(message.id)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(producers)]
    threads += [threading.Thread(target=consume) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE * 2)
    assert len(put_ids) == producers * each
    assert sorted(got_ids) == sorted(put_ids)


def test_the_interpreter_exits_with_callbacks_and_waits_running(
    manager: Manager, queue: str
) -> None:
    script = textwrap.dedent(
        f"""
        import threading, hopmq
        client = hopmq.Client({manager.socket!r})
        seen = threading.Event()
        handle = client.notify({queue!r}, lambda message: seen.set())
        waiter = threading.Thread(target=client.get, args=({queue + ".never"!r},), daemon=True)
        waiter.start()
        client.put({queue!r}, "wake the callback")
        assert seen.wait({DEADLINE})
        print("exiting", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=DEADLINE
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "exiting\n"

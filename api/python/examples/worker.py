#!/usr/bin/env python3
"""Work queues, the worker: takes tasks from `task_queue` one at a time and acks each once
done. Start several: each task goes to one of them. A worker that dies (or is stopped) before
its ack leaves the task to another, since a leased message returns to its queue when its
lease ends or its client disconnects."""

import sys
import time

import hopmq


def main() -> None:
    with hopmq.Client() as client:
        print(" [*] Waiting for messages. To exit press CTRL+C", flush=True)
        # Leased gets: a task stays the queue's until acked (up to 60 s of work each).
        for message in client.messages("task_queue", lease=60):
            task = message.text
            print(f" [x] Received {task}", flush=True)
            time.sleep(task.count("."))
            print(" [x] Done", flush=True)
            # Until this ack, the task is not done for the queue: stopped before it, the
            # worker gives the task back and another worker does it again.
            message.ack()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("Interrupted")
        sys.exit(0)

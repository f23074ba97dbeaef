#!/usr/bin/env python3
"""Work queues, the producer: puts a task on `task_queue` (as in RabbitMQ's second
tutorial). Each dot in the task is a second of work for worker.py:

    python3 new_task.py First message.
    python3 new_task.py Third message...
"""

import sys

import hopmq

task = " ".join(sys.argv[1:]) or "Hello World!"
with hopmq.Client() as client:
    # Persistent by default: on disk before put returns, so it survives a manager restart.
    client.put("task_queue", task)
    print(f" [x] Sent {task}")

#!/usr/bin/env python3
"""Topics, the publisher: publishes one log line under a routing key such as `kern.critical`
(as in RabbitMQ's fifth tutorial). Every subscription whose filter matches the topic gets a
copy; with nobody subscribed, nobody does.

    HOPMQ_SOCKET=.hopmq/alpha/qmgr.sock python3 emit_log_topic.py kern.critical "Disk on fire"
"""

import sys

import hopmq

topic = sys.argv[1] if len(sys.argv) > 1 else "anonymous.info"
text = " ".join(sys.argv[2:]) or "Hello World!"
with hopmq.Client() as client:  # $HOPMQ_SOCKET, else ./qmgr-data/qmgr.sock
    client.publish(topic, text)
    print(f" [x] Sent {topic}:{text}")

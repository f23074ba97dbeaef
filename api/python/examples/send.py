#!/usr/bin/env python3
"""Hello World, the sender: puts one message on the queue `hello` (as in RabbitMQ's first
tutorial). Run receive.py in another terminal; either may start first, since the message
waits in the queue.

    HOPMQ_SOCKET=.hopmq/alpha/qmgr.sock python3 send.py
"""

import hopmq

with hopmq.Client() as client:  # $HOPMQ_SOCKET, else ./qmgr-data/qmgr.sock
    client.put("hello", "Hello World!")
    print(" [x] Sent 'Hello World!'")

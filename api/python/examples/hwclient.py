#!/usr/bin/env python3
"""Request-reply, the client: sends "Hello" to hwserver.py ten times and waits for each
"World" (as in ZeroMQ's hwclient). Replies come to a queue of this process's own, and each is
picked out by the id of its request."""

import os
import sys

import hopmq

with hopmq.Client() as client:
    replies = f"hello.client.{os.getpid()}"
    # With the manager's name, a reply finds its way back from a server on another host.
    reply_to = f"{replies}@{client.manager}"
    for n in range(10):
        print(f"Sending request {n} ...", flush=True)
        request_id = client.put("hello.server", "Hello", reply_to=reply_to)
        reply = client.get(replies, timeout=10, correlation_id=request_id)
        if reply is None:
            sys.exit("no reply within 10 s: is hwserver.py running?")
        print(f"Received reply {n} [ {reply.text} ]", flush=True)
    client.delete(replies)

#!/usr/bin/env python3
"""Hello World, the receiver: prints every message of the queue `hello` until Ctrl-C."""

import sys

import hopmq


def main() -> None:
    with hopmq.Client() as client:
        print(" [*] Waiting for messages. To exit press CTRL+C", flush=True)
        # Without a timeout the iteration never ends: it waits for each next message.
        for message in client.messages("hello"):
            print(f" [x] Received {message.text}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("Interrupted")
        sys.exit(0)

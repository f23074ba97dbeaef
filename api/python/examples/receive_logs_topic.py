#!/usr/bin/env python3
"""Topics, the subscriber: prints every publication matching the filters given until Ctrl-C
(`*` matches exactly one token, a final `>` one or more; RabbitMQ's `#` is `>` here).

    python3 receive_logs_topic.py "kern.*" "*.critical"

A topic subscription lives as long as the client's connection: what is published while it
is not running is not kept for it (create_subscription makes one that is).
"""

import sys

import hopmq


def main() -> None:
    filters = sys.argv[1:]
    if not filters:
        sys.exit(f"usage: {sys.argv[0]} FILTER...")
    with hopmq.Client() as client:
        # One stream per filter; a publication matching both comes once on each.
        subscriptions = [client.subscribe_topic(f) for f in filters]
        print(" [*] Waiting for logs. To exit press CTRL+C", flush=True)
        while True:
            for subscription in subscriptions:
                got = subscription.recv(timeout=0.1)
                if isinstance(got, hopmq.Missed):
                    print(f" [!] Missed {got.count} (this receiver fell behind)", flush=True)
                elif got is not None:
                    print(f" [x] {got.topic}:{got.text}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("Interrupted")
        sys.exit(0)

#!/usr/bin/env python3
"""Request-reply, the server: answers each "Hello" on `hello.server` with "World" (as in
ZeroMQ's hwserver). The reply goes to the request's reply_to, tagged with the request's id."""

import sys

import hopmq


def main() -> None:
    with hopmq.Client() as client:
        print("Serving hello.server. To exit press CTRL+C", flush=True)
        for request in client.messages("hello.server"):
            print(f"Received request: {request.text}", flush=True)
            if request.reply_to:
                client.put(request.reply_to, "World", correlation_id=request.id)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("Interrupted")
        sys.exit(0)

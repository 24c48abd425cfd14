#!/usr/bin/env python3
"""LAB ONLY: an Alertmanager webhook receiver that writes down what it was sent.

Every POST body (Alertmanager's webhook JSON) is appended to FILE as one JSON line
{"received_at": <unix time>, "path": <request path>, "body": <the JSON>}, so tests can read
what was notified and when. Standard library only.

Usage: alert_receiver.py --listen 127.0.0.1:9095 --file /var/lib/lab-alert-receiver/alerts.jsonl
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY = 4 * 1024 * 1024


class Receiver(BaseHTTPRequestHandler):
    out: Path
    lock = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            self.send_error(400, "a JSON body of at most 4 MiB is expected")
            return
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(400, "the body is not JSON")
            return
        line = json.dumps({"received_at": time.time(), "path": self.path, "body": body})
        with self.lock, self.out.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        # A health check for the role (and a person): says it runs, returns nothing stored.
        payload = b"lab alert receiver\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, fmt: str, *args: object) -> None:
        pass  # the file is the log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:9095", help="HOST:PORT")
    parser.add_argument("--file", type=Path, required=True, help="JSON lines file to append to")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    Receiver.out = args.file
    ThreadingHTTPServer((host, int(port)), Receiver).serve_forever()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""LAB ONLY: the machine's controller, simulated: it posts deposits to the local detector.

A real RVM's controller calls POST /deposit when a bottle or can lands in the chute, with
the customer's session id. This posts at a steady rate (with a little jitter), a new
session every few deposits, so the lab's dashboard and alerts see real traffic. A
refused or failed call is logged and the next one goes on: the detector may be
restarting (a rollout) or not ready.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import urllib.error
import urllib.request
import uuid


def post(url: str, session_id: str, timeout: float) -> str:
    body = json.dumps({"session_id": session_id}).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return f"{answer.status} {json.loads(answer.read()).get('verdict', '?')}"
    except urllib.error.HTTPError as e:
        return f"{e.code} {e.read()[:200].decode(errors='replace')}"
    except (OSError, ValueError) as e:
        return f"failed: {e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080/deposit")
    parser.add_argument("--per-minute", type=float, required=True, help="deposits per minute")
    parser.add_argument("--items-per-session", type=int, default=4)
    args = parser.parse_args(argv)
    if args.per_minute <= 0:
        parser.error(f"--per-minute must be above 0, got {args.per_minute}")
    interval = 60.0 / args.per_minute
    session, left = "", 0
    while True:
        if left == 0:
            session, left = f"lab-{uuid.uuid4().hex[:12]}", args.items_per_session
        result = post(args.url, session, timeout=30)
        left -= 1
        print(f"deposit session={session}: {result}", flush=True)
        time.sleep(interval * random.uniform(0.8, 1.2))


if __name__ == "__main__":
    sys.exit(main())

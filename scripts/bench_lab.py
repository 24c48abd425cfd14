#!/usr/bin/env python3
"""Times the lab's life cycle and prints a Markdown table of medians.

  sudo .venv/bin/python scripts/bench_lab.py --runs 3 [--root-runs 2] [--tags base]

Steps: build the cached root (forced rebuild), create a 2-host lab, converge it with
site.yml, re-converge it with no changes, tear it down.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))
from labtools import LAB_PLAY, ansible_env  # noqa: E402

RVMLAB = [sys.executable, str(REPO / "lab" / "rvmlab.py")]
LAB = "bench"


def timed(cmd: list[str], **kw) -> tuple[float, str]:
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, **kw)
    elapsed = time.monotonic() - start
    print(f"bench_lab: {elapsed:7.1f}s  {' '.join(cmd[:4])}", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--root-runs", type=int, default=1)
    parser.add_argument("--tags", help="converge only these tags (e.g. base)")
    args = parser.parse_args()
    # A cache of our own: a forced rebuild must not pull the root from under other labs.
    os.environ["RVMLAB_CACHE_DIR"] = tempfile.mkdtemp(prefix="rvmlab-bench-cache-")
    env = ansible_env(NO_COLOR="1")
    # The lab's group_vars beside a hosts file of our own (not the `make lab` hosts.yml).
    inventory_dir = Path(tempfile.mkdtemp(prefix="rvmlab-bench-"))
    (inventory_dir / "group_vars").symlink_to(REPO / "inventories" / "lab" / "group_vars")
    inventory = inventory_dir / "hosts.yml"
    playbook = ["ansible-playbook", str(LAB_PLAY), "-i", str(inventory)]
    if args.tags:
        playbook += ["--tags", args.tags]
    times: dict[str, list[float]] = {"build root": [], "create lab": [], "converge": []}
    times["re-converge"] = []
    for _ in range(args.root_runs):
        times["build root"].append(timed([*RVMLAB, "build-root", "--force"])[0])
    subprocess.run([*RVMLAB, "down", "--lab", LAB], capture_output=True)
    for _ in range(args.runs):
        up = [*RVMLAB, "up", "--lab", LAB, "--host", "dev-01", "--host", "dev-02"]
        times["create lab"].append(timed([*up, "--inventory", str(inventory)])[0])
        try:
            times["converge"].append(timed(playbook, env=env)[0])
            elapsed, out = timed(playbook, env=env)
            changed = [line for line in out.splitlines() if "changed=" in line]
            if any("changed=0" not in line for line in changed):
                sys.exit(f"re-converge changed something:\n{chr(10).join(changed)}")
            times["re-converge"].append(elapsed)
        finally:
            subprocess.run([*RVMLAB, "down", "--lab", LAB], capture_output=True)
    shutil.rmtree(os.environ["RVMLAB_CACHE_DIR"])
    print("| step | median (s) | runs (s) |\n|---|---|---|")
    for step, values in times.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {step} | {statistics.median(values):.1f} | {runs} |")
    print(json.dumps(times), file=sys.stderr)


if __name__ == "__main__":
    main()

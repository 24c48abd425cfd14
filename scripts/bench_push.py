#!/usr/bin/env python3
"""How a push run's wall time grows with the fleet: for each device count, a fresh lab
(N devices, the platform stand-in, a monitoring host and a backup host), one converge, then
the two runs an operator repeats - an idempotent run of the whole site.yml, and a release
switch (`--tags detector`, canary then batches) - each timed. Prints a Markdown table.

  sudo .venv/bin/python scripts/bench_push.py --devices 1 3 6
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))
from labtools import LAB_PLAY, ansible_env  # noqa: E402

RVMLAB = [sys.executable, str(REPO / "lab" / "rvmlab.py")]
LAB = "benchpush"


def timed(cmd: list[str], **kw) -> tuple[float, str]:
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, **kw)
    elapsed = time.monotonic() - start
    print(f"bench_push: {elapsed:7.1f}s  {' '.join(cmd[:6])}", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout


def bench(devices: int) -> dict[str, float]:
    env = ansible_env(NO_COLOR="1")
    inventory_dir = Path(tempfile.mkdtemp(prefix="rvmlab-benchpush-"))
    (inventory_dir / "group_vars").symlink_to(REPO / "inventories" / "lab" / "group_vars")
    inventory = inventory_dir / "hosts.yml"
    hosts = [f"dev-{i:02d}" for i in range(1, devices + 1)]
    hosts += ["bench-platform:platform", "bench-monitor:monitoring", "bench-backup:backup"]
    up = [*RVMLAB, "up", "--lab", LAB, *(a for h in hosts for a in ("--host", h))]
    playbook = ["ansible-playbook", str(LAB_PLAY), "-i", str(inventory)]
    subprocess.run([*RVMLAB, "down", "--lab", LAB], capture_output=True)
    try:
        timed([*up, "--inventory", str(inventory)])
        converge, _ = timed(playbook, env=env)
        idempotent, out = timed(playbook, env=env)
        changed = [line for line in out.splitlines() if "changed=" in line]
        if any("changed=0" not in line for line in changed):
            sys.exit(f"the idempotent run changed something:\n{chr(10).join(changed)}")
        switch, _ = timed(
            [*playbook, "--tags", "detector", "-e", f"release_id=bench-{devices}"], env=env
        )
    finally:
        subprocess.run([*RVMLAB, "down", "--lab", LAB], capture_output=True)
    return {"converge": converge, "idempotent": idempotent, "release switch": switch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 3, 6])
    args = parser.parse_args()
    results = {n: bench(n) for n in args.devices}
    print("| devices | first converge (s) | idempotent run (s) | release switch (s) |")
    print("|---:|---:|---:|---:|")
    for n, r in results.items():
        print(f"| {n} | {r['converge']:.0f} | {r['idempotent']:.0f} | {r['release switch']:.0f} |")
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()

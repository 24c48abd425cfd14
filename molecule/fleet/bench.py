#!/usr/bin/env python3
"""Timings of the fleet rollout on the lab (docs/benchmarks.md, "Fleet rollout (lab)").

    python3 molecule/fleet/bench.py --repeat 3      # about 25 minutes on 2 cores

Boots lab `fleet-bench` (3 devices + the platform stand-in), then times with
`ansible-playbook site.yml`: a full converge from bare hosts, an idempotent re-run, a
release switch (`--tags detector -e release_id=...`), a tagged rollback, and a bad release
(the canary's time from the restart into the bad release to being ready on the old one,
as the play reports it). Prints medians as a Markdown table and tears the lab down.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab"))
from labtools import LAB_PLAY, playbook  # noqa: E402

LAB = "fleet-bench"
HOSTS = [
    "bench-dev-1:jetson",
    "bench-dev-2:jetson",
    "bench-dev-3:jetson",
    "bench-platform:platform",
]


def run(args: list[str], inventory: Path, expect_ok: bool = True) -> tuple[float, str]:
    result = playbook(LAB_PLAY, inventory, *args)
    if result.ok != expect_ok:
        sys.exit(f"{args}: rc={result.returncode}\n{result.stdout[-5000:]}")
    return result.seconds, result.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    lab = [sys.executable, str(REPO / "lab" / "rvmlab.py")]
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        inv = Path(tmp) / "inv"
        inv.mkdir()
        (inv / "group_vars").symlink_to(REPO / "inventories" / "lab" / "group_vars")
        subprocess.run([*lab, "down", "--lab", LAB], check=True)
        subprocess.run(
            [*lab, "up", "--lab", LAB, *[f"--host={h}" for h in HOSTS],
             "--inventory", str(inv / "hosts.yml")],
            check=True,
        )  # fmt: skip
        try:
            samples["full converge, 3 devices + platform, from bare hosts"] = [run([], inv)[0]]
            for i in range(args.repeat):
                samples.setdefault("idempotent re-run (full site.yml)", []).append(run([], inv)[0])
                seconds, _ = run(["--tags", "detector", "-e", f"release_id=bench-{i}"], inv)
                samples.setdefault("release switch (--tags detector, 3 batches)", []).append(
                    seconds
                )
                # Back to the release bench-i replaced (the converge's).
                seconds, _ = run(["--tags", "rollback"], inv)
                samples.setdefault("tagged rollback (3 devices at once)", []).append(seconds)
                seconds, out = run(
                    ["--tags", "detector", "-e", f"release_id=bench-bad-{i}",
                     "-e", "detector_app_camera_source=/dev/video-missing",
                     "-e", "detector_app_ready_timeout_s=20"],
                    inv, expect_ok=False,
                )  # fmt: skip
                back = re.search(r"back on \S+ \(ready=True, ([\d.]+)s\)", re.sub(r"\s+", " ", out))
                if not back:
                    sys.exit(f"bad release: no switch-back in the output\n{out[-5000:]}")
                samples.setdefault(
                    "bad release: restart -> canary ready on the old release (20 s gate)", []
                ).append(float(back.group(1)))
                samples.setdefault("bad release: whole run until it stops", []).append(seconds)
        finally:
            subprocess.run([*lab, "down", "--lab", LAB], check=False)
    print("| step | median (s) | samples (s) |\n|---|---|---|")
    for what, values in samples.items():
        listed = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {what} | {statistics.median(values):.1f} | {listed} |")
    print(json.dumps(samples), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

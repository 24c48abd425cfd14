#!/usr/bin/env python3
"""Backup figures on a lab device (docs/benchmarks.md, "Backups (issue 10)").

    python3 molecule/fleet/bench_backup.py --inventory .cache/lab-<you>/hosts.yml

On a converged lab with a device and a backup host (and the platform stand-in): takes the
platform down, stops the lab's deposit traffic, fills the device's spool to --deposits
pending deposits (the detector stopped; rows and JPEG-sized incompressible images written
by the app's own Spool), then times `systemctl start rvm-backup` for the first backup and an
unchanged re-run (bytes added from rvm_backup.prom), the local API's deposit latency (p50,
p99 of --samples POST /deposit on the device) with no backup running and with backups
running back to back, and last the restore: the device destroyed and brought back by
lab/restore.yml to ready. Prints a Markdown table. Leaves the platform up again.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab"))
from labtools import LabHosts, playbook  # noqa: E402

FILL = r"""
import os, sys, uuid
from pathlib import Path
from rvm_detector.spool import Spool
n, size = int(sys.argv[1]), int(sys.argv[2])
spool = Spool(Path("/var/lib/rvm-detector/spool"))
for i in range(n):
    u = f"bench-{uuid.uuid4()}"
    spool.enqueue(uuid=u, status="ACCEPTED", data={"client_ref": u, "bench": i},
                  image=os.urandom(size))
spool.close()
print(n)
"""

READY = (
    "import urllib.request as u\n"
    "try:\n print(u.urlopen('http://127.0.0.1:8080/readyz', timeout=5).status)\n"
    "except Exception:\n print(0)"
)
APP = "setpriv --reuid=rvm --regid=rvm --init-groups /opt/rvm-detector/current/venv/bin/"
WIPE = (
    "systemctl stop rvm-backup.timer rvm-detector rvm-tegrastats-exporter; rm -rf "
    "/etc/rvm-detector /etc/rvm-backup /var/lib/rvm-backup /opt/rvm-detector "
    "/var/lib/rvm-detector/spool /var/lib/rvm-detector/backup"
)
LOOP = "while true; do systemctl start rvm-backup.service; done"

LATENCY = r"""
import json, sys, time, urllib.request as u
out = []
for _ in range(int(sys.argv[1])):
    r = u.Request("http://127.0.0.1:8080/deposit", data=b"{}", method="POST",
                  headers={"Content-Type": "application/json"})
    t = time.perf_counter(); u.urlopen(r, timeout=60).read(); out.append(time.perf_counter() - t)
print(json.dumps(out))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--inventory", type=Path, required=True)
    ap.add_argument("--deposits", type=int, default=1000)
    ap.add_argument("--image-bytes", type=int, default=60_000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--skip-restore", action="store_true")
    args = ap.parse_args()
    hosts = LabHosts(args.inventory)
    dev = sorted(hosts.groups["jetson"])[0]
    platform = hosts.groups["platform"][0]

    def sh(cmd: str, **kw):
        return hosts.ssh(dev, cmd, timeout=1800, **kw)

    def admin(body: dict) -> None:
        code = (
            "import json, urllib.request as u\n"
            "u.urlopen(u.Request('http://127.0.0.1:8001/admin/faults',"
            f" data={json.dumps(body).encode()!r}, method='POST',"
            " headers={'Content-Type': 'application/json'}))"
        )
        hosts.py(platform, code)

    def backup() -> tuple[float, int]:
        t = time.monotonic()
        sh("systemctl start rvm-backup.service")
        seconds = time.monotonic() - t
        prom = sh("cat /var/lib/prometheus/node-exporter/rvm_backup.prom").stdout
        added = re.search(r"^rvm_backup_last_success_bytes_added (\S+)", prom, re.M)
        return seconds, int(float(added.group(1)))

    def latency() -> tuple[float, float]:
        cmd = f"python3 -c {shlex.quote(LATENCY)} {args.samples}"
        xs = sorted(json.loads(sh(cmd).stdout))
        return statistics.median(xs) * 1000, xs[int(0.99 * (len(xs) - 1))] * 1000

    rows: list[tuple[str, str]] = []
    admin({"down": True})
    try:
        sh("systemctl stop lab-deposit-traffic.service rvm-detector.service")
        fill = f"python3 -c {shlex.quote(FILL)} {args.deposits} {args.image_bytes}"
        sh(APP + fill)
        sh("systemctl start rvm-detector.service")
        deadline = time.monotonic() + 120
        while hosts.py(dev, READY).strip() != "200":
            assert time.monotonic() < deadline, f"{dev}: the detector did not become ready"
            time.sleep(1)
        status = json.loads(
            sh(
                APP
                + "rvm-detector spool --config /opt/rvm-detector/current/config.yml status --json"
            ).stdout
        )
        rows.append(
            (
                "pending deposits in the spool",
                f"{status['pending']} ({status['image_bytes'] / 1e6:.0f} MB images)",
            )
        )
        s, added = backup()
        rows.append(("first backup", f"{s:.1f} s, {added / 1e6:.1f} MB added"))
        s, added = backup()
        rows.append(("unchanged re-run", f"{s:.1f} s, {added / 1e3:.1f} kB added"))
        p50, p99 = latency()
        rows.append(("deposit latency, no backup running", f"p50 {p50:.0f} ms, p99 {p99:.0f} ms"))
        sh(f"systemd-run --unit=bench-backup-loop /bin/sh -c '{LOOP}'")
        try:
            p50, p99 = latency()
        finally:
            sh("systemctl stop bench-backup-loop.service", check=False)
        rows.append(
            ("deposit latency, backups running back to back", f"p50 {p50:.0f} ms, p99 {p99:.0f} ms")
        )
        if not args.skip_restore:
            t = time.monotonic()
            sh(WIPE)
            run = playbook(REPO / "lab" / "restore.yml", args.inventory.parent, "-l", dev,
                           "-e", f"restore_from={dev}", timeout=1800)  # fmt: skip
            assert run.ok, run.text[-3000:]
            rows.append(
                (
                    "restore: destroyed to ready (restore.yml + converge)",
                    f"{time.monotonic() - t:.0f} s",
                )
            )
    finally:
        admin({"reset": True})
        sh("systemctl start lab-deposit-traffic.service", check=False)
    print("| Measure | Result |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

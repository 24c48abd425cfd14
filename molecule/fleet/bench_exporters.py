#!/usr/bin/env python3
"""What the device's exporters cost at a 15 s scrape (docs/benchmarks.md, "Exporters").

    python3 molecule/fleet/bench_exporters.py --inventory .cache/lab-<name>/hosts.yml \\
        [--device fleet-dev-1] [--monitor fleet-monitor] [--minutes 10] [--interval 15]

Runs on a converged lab (make lab, or a lab of your own). From the monitoring host, as
Prometheus does, it scrapes the device's node exporter (9100) and rvm-tegrastats-exporter
(9102) every --interval seconds for --minutes, and reads on the device, before and after,
each exporter's CPU time (utime + stime in /proc/<pid>/stat) and memory (VmRSS, and VmHWM,
the peak), and the same for its child processes (the tegrastats exporter's one long-lived
tegrastats). Prints a Markdown table: CPU seconds per hour, the same as % of one core, RSS
and peak RSS in MiB, the children's CPU and RSS, the scrapes' median time and size.
(systemd's CPUUsageNSec would be simpler, but the lab's nspawn hosts have no CPU accounting.)

In the lab, the tegrastats child is the simulation's Python stand-in (lab/roles/
jetson_simulation), not NVIDIA's tegrastats: its columns say nothing about a Jetson.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab"))
from labtools import LabHosts  # noqa: E402

EXPORTERS = {
    "prometheus-node-exporter": ("prometheus-node-exporter.service", 9100),
    "rvm-tegrastats-exporter": ("rvm-tegrastats-exporter.service", 9102),
}

# Run on the device: per unit, its main process's and its children's CPU time and memory.
_READ = """
import json, os, subprocess

def cpu_s(pid):
    stat = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")

def kib(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0

out = {}
for unit in %r:
    pid = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", unit],
                         capture_output=True, text=True, check=True).stdout.strip()
    children = sorted({c for t in os.listdir(f"/proc/{pid}/task")
                       for c in open(f"/proc/{pid}/task/{t}/children").read().split()})
    out[unit] = {
        "pid": int(pid),
        "cpu_s": cpu_s(pid),
        "rss_kib": kib(pid, "VmRSS"),
        "hwm_kib": kib(pid, "VmHWM"),
        "children": children,
        "children_cpu_s": sum(cpu_s(c) for c in children),
        "children_rss_kib": sum(kib(c, "VmRSS") for c in children),
    }
print(json.dumps(out))
"""

# Run on the monitoring host: scrape every URL each interval until the end; scrape times.
_SCRAPE = """
import json, time, urllib.request as u
urls, interval, end = %r, %r, time.monotonic() + %r
took = {url: [] for url in urls}
size = {}
next_at = time.monotonic()
while next_at < end:
    for url in urls:
        t0 = time.monotonic()
        body = u.urlopen(url, timeout=10).read()
        took[url].append(time.monotonic() - t0)
        size[url] = len(body)
    next_at += interval
    time.sleep(max(0.0, next_at - time.monotonic()))
print(json.dumps({"took": took, "size": size}))
"""


def read(hosts: LabHosts, device: str) -> dict[str, dict]:
    units = [unit for unit, _ in EXPORTERS.values()]
    return json.loads(hosts.py(device, _READ % (units,)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--inventory", required=True, type=Path, help="the lab's hosts.yml")
    ap.add_argument("--device", default="fleet-dev-1")
    ap.add_argument("--monitor", default="fleet-monitor")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=15.0, help="scrape interval, seconds")
    args = ap.parse_args()

    hosts = LabHosts(args.inventory)
    address = hosts.hostvars[args.device]["ansible_host"]
    urls = [f"http://{address}:{port}/metrics" for _, port in EXPORTERS.values()]
    seconds = args.minutes * 60

    before, t0 = read(hosts, args.device), time.monotonic()
    scraped = json.loads(
        hosts.ssh(
            args.monitor,
            f"python3 -c {shlex.quote(_SCRAPE % (urls, args.interval, seconds))}",
            timeout=seconds + 120,
        ).stdout
    )
    after, elapsed = read(hosts, args.device), time.monotonic() - t0

    print(
        f"{args.device}, scraped from {args.monitor} every {args.interval:g} s for "
        f"{elapsed / 60:.1f} min ({len(scraped['took'][urls[0]])} scrapes each)\n"
    )
    print(
        "| exporter | CPU s/h | % of one core | RSS MiB | peak RSS MiB "
        "| children CPU s/h | children RSS MiB | scrape median ms | response KiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (name, (unit, _)), url in zip(EXPORTERS.items(), urls, strict=True):
        b, a = before[unit], after[unit]
        if a["pid"] != b["pid"] or a["children"] != b["children"]:
            sys.exit(f"{unit} or a child restarted during the measurement: {b} -> {a}")
        per_hour = (a["cpu_s"] - b["cpu_s"]) * 3600 / elapsed
        children_per_hour = (a["children_cpu_s"] - b["children_cpu_s"]) * 3600 / elapsed
        took = statistics.median(scraped["took"][url]) * 1000
        print(
            f"| {name} | {per_hour:.1f} | {per_hour / 36:.3f} | {a['rss_kib'] / 1024:.1f} "
            f"| {a['hwm_kib'] / 1024:.1f} | {children_per_hour:.1f} "
            f"| {a['children_rss_kib'] / 1024:.1f} | {took:.1f} "
            f"| {scraped['size'][url] / 1024:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

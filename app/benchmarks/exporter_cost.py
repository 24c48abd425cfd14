"""What rvm-tegrastats-exporter costs on a device: CPU seconds per hour and resident memory.

Runs the exporter (`python -m rvm_detector.tegrastats`) against a tegrastats that prints a
JetPack 6 line every `--interval` ms (by default the lab's stand-in,
lab/roles/jetson_simulation/files/tegrastats), scrapes /metrics every `--scrape` seconds
like Prometheus would, and reads the exporter's own CPU time (utime + stime, children
not included: the tegrastats child is NVIDIA's, not ours) and RSS from /proc. With
`--node-exporter PATH`, node exporter is measured beside it the same way, as a yardstick.

    python app/benchmarks/exporter_cost.py --minutes 5 \
        --node-exporter /usr/bin/prometheus-node-exporter
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def wait_http(url: str, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                answer.read()
                return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--interval", type=int, default=1000, help="tegrastats --interval, ms")
    p.add_argument("--scrape", type=float, default=15, help="seconds between scrapes")
    p.add_argument(
        "--tegrastats", default=str(ROOT / "lab/roles/jetson_simulation/files/tegrastats")
    )
    p.add_argument("--node-exporter", help="path of node exporter, measured beside it")
    args = p.parse_args()

    env = dict(os.environ, PYTHONPATH=str(ROOT / "app/src"))
    port = free_port()
    exporter = [sys.executable, "-m", "rvm_detector.tegrastats", "--listen", f"127.0.0.1:{port}"]
    exporter += ["--tegrastats", args.tegrastats, "--interval", str(args.interval)]
    exporter += ["--nvpmodel", ""]
    targets = {
        "rvm-tegrastats-exporter": (
            subprocess.Popen(
                exporter,
                env=env,
                stdout=subprocess.DEVNULL,
            ),
            f"http://127.0.0.1:{port}/metrics",
        )
    }
    if args.node_exporter:
        node_port = free_port()
        targets["node exporter"] = (
            subprocess.Popen(
                [args.node_exporter, f"--web.listen-address=127.0.0.1:{node_port}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            f"http://127.0.0.1:{node_port}/metrics",
        )
    try:
        for _, url in targets.values():
            wait_http(url)
        time.sleep(args.interval / 1000 * 3)  # past start-up: imports, first lines
        start = {name: cpu_seconds(proc.pid) for name, (proc, _) in targets.items()}
        peak = dict.fromkeys(targets, 0)
        scrapes, began = 0, time.monotonic()
        sizes = {}
        while time.monotonic() - began < args.minutes * 60:
            for name, (proc, url) in targets.items():
                with urllib.request.urlopen(url, timeout=10) as answer:
                    sizes[name] = len(answer.read())
                peak[name] = max(peak[name], rss_bytes(proc.pid))
            scrapes += 1
            time.sleep(args.scrape)
        elapsed = time.monotonic() - began
        result = {
            "minutes": round(elapsed / 60, 2),
            "interval_ms": args.interval,
            "scrape_s": args.scrape,
            "scrapes": scrapes,
        }
        for name, (proc, _) in targets.items():
            used = cpu_seconds(proc.pid) - start[name]
            result[name] = {
                "cpu_s_per_hour": round(used / elapsed * 3600, 1),
                "cpu_percent_of_one_core": round(100 * used / elapsed, 3),
                "rss_mib_peak": round(peak[name] / 2**20, 1),
                "rss_mib_end": round(rss_bytes(proc.pid) / 2**20, 1),
                "exposition_bytes": sizes[name],
            }
        print(json.dumps(result, indent=2))
    finally:
        for proc, _ in targets.values():
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())

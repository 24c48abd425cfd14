"""Upload benchmark: enqueue latency, spool drain rate vs a one-at-a-time baseline.

Runs everything on loopback against the platform stand-in, started as its own
process so its CPU is not shared with the client's GIL, once over HTTPS (a
throw-away self-signed CA made with the openssl CLI; the real platform is
HTTPS, so every new connection costs a TLS handshake) and once over plain HTTP
(where a new loopback connection costs almost nothing):

    .venv/bin/python app/benchmarks/upload_bench.py --count 10000 --image-kb 50

Contenders, one run, same stand-in process per scheme, same image size:
- enqueue: `Spool.enqueue` latency per deposit on this disk (fsync'd file + dir + WAL);
- uploader: `Uploader` draining the spool of --count deposits (production settings);
- pooled-raw: 8 threads on one pooled httpx client posting from memory, no spool
  (the ceiling the stand-in and HTTP allow: shows the stand-in is not the limit);
- baseline: one deposit at a time on one client without keep-alive: a new TCP (+TLS)
  connection per deposit, the client object reused;
- baseline_per_call: one deposit at a time, a new client per call, as code that calls
  `requests.post(...)`/`httpx.post(...)` per deposit does (the existing edge client's shape).
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from rvm_detector.config import UploadConfig
from rvm_detector.platform import PlatformClient
from rvm_detector.spool import Spool
from rvm_detector.uploader import Uploader

REPO = Path(__file__).resolve().parents[2]
KEY = "rvm_" + "b" * 60


def _image(kb: int, i: int) -> bytes:
    body = os.urandom(64) * (kb * 1024 // 64)
    return b"\xff\xd8\xff\xe0" + i.to_bytes(4, "big") + body[: kb * 1024 - 8]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_cert(workdir: Path) -> tuple[Path, Path]:
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class Standin:
    def __init__(self, workdir: Path, tls: tuple[Path, Path] | None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        key_file = workdir / "key"
        key_file.write_text(KEY)
        key_file.chmod(0o600)
        tls_args = ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])] if tls else []
        self.ca = tls[0] if tls else None
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "lab" / "platform_standin.py"),
                "--db",
                str(workdir / "platform.db"),
                "--api-key-file",
                str(key_file),
                "--port",
                "0",
                "--admin-port",
                "0",
                *tls_args,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        urls = json.loads(self.proc.stdout.readline())
        self.url, self.admin = urls["edge"], urls["admin"]

    def stats(self) -> dict:
        return httpx.get(f"{self.admin}/admin/stats").json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def bench_enqueue(spool: Spool, count: int, kb: int, prefix: str) -> dict:
    lat = []
    for i in range(count):
        image = _image(kb, i)
        uuid = f"{prefix}-{i:06d}"
        t0 = time.perf_counter()
        spool.enqueue(uuid=uuid, status="ACCEPTED", data={"client_ref": uuid}, image=image)
        lat.append(time.perf_counter() - t0)
    return {
        "count": count,
        "p50_ms": round(_percentile(lat, 50) * 1e3, 3),
        "p99_ms": round(_percentile(lat, 99) * 1e3, 3),
        "max_ms": round(max(lat) * 1e3, 3),
        "mean_ms": round(statistics.fmean(lat) * 1e3, 3),
    }


def bench_drain(spool: Spool, standin: Standin, count: int) -> dict:
    cfg = UploadConfig()  # production settings: 1..8 workers, AIMD
    client = PlatformClient(
        standin.url, KEY, ca_bundle=standin.ca, max_connections=cfg.max_concurrency + 2
    )
    uploader = Uploader(spool, client, cfg)
    cpu0 = _cpu_seconds(standin.proc.pid)
    t0 = time.perf_counter()
    uploader.start()
    assert uploader.wait_drained(3600), "drain did not finish"
    wall = time.perf_counter() - t0
    cpu = _cpu_seconds(standin.proc.pid) - cpu0
    final_limit = uploader.limit.limit
    uploader.stop()
    client.close()
    return {
        "count": count,
        "seconds": round(wall, 2),
        "deposits_per_s": round(count / wall, 1),
        "standin_cpu_percent": round(100 * cpu / wall, 1),
        "final_concurrency": int(final_limit),
    }


def _post(client: httpx.Client, uuid: str, image: bytes) -> None:
    r = client.post(
        "/api/v1/edge/deposit",
        headers={"Idempotency-Key": uuid, "X-RVM-API-KEY": KEY},
        data={"status": "ACCEPTED", "data": json.dumps({"client_ref": uuid})},
        files={"image": (f"{uuid}.jpg", image, "image/jpeg")},
    )
    assert r.status_code == 201, r.text


def _verify(standin: Standin) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=str(standin.ca)) if standin.ca else True


def bench_pooled_raw(standin: Standin, count: int, kb: int, threads: int = 8) -> dict:
    images = [_image(kb, i) for i in range(64)]
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    with httpx.Client(base_url=standin.url, limits=limits, verify=_verify(standin)) as client:
        cpu0 = _cpu_seconds(standin.proc.pid)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda i: _post(client, f"raw-{i:06d}", images[i % 64]), range(count)))
        wall = time.perf_counter() - t0
    cpu = _cpu_seconds(standin.proc.pid) - cpu0
    return {
        "count": count,
        "seconds": round(wall, 2),
        "deposits_per_s": round(count / wall, 1),
        "standin_cpu_percent": round(100 * cpu / wall, 1),
    }


def bench_baseline(standin: Standin, count: int, kb: int) -> dict:
    images = [_image(kb, i) for i in range(64)]
    # No keep-alive: every deposit opens a new TCP connection; one at a time.
    no_reuse = httpx.Limits(max_connections=1, max_keepalive_connections=0)
    with httpx.Client(base_url=standin.url, limits=no_reuse, verify=_verify(standin)) as client:
        t0 = time.perf_counter()
        for i in range(count):
            _post(client, f"base-{i:06d}", images[i % 64])
        wall = time.perf_counter() - t0
    return {"count": count, "seconds": round(wall, 2), "deposits_per_s": round(count / wall, 1)}


def bench_baseline_per_call(standin: Standin, count: int, kb: int) -> dict:
    """`requests.post(...)` per deposit: a new client (and TLS context) every call."""
    images = [_image(kb, i) for i in range(64)]
    t0 = time.perf_counter()
    for i in range(count):
        with httpx.Client(base_url=standin.url, verify=_verify(standin)) as client:
            _post(client, f"call-{i:06d}", images[i % 64])
    wall = time.perf_counter() - t0
    return {"count": count, "seconds": round(wall, 2), "deposits_per_s": round(count / wall, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=10_000, help="deposits in the backlog")
    ap.add_argument("--image-kb", type=int, default=50)
    ap.add_argument("--http-count", type=int, default=3_000, help="backlog for the HTTP pass")
    ap.add_argument("--baseline-count", type=int, default=1_000)
    ap.add_argument("--raw-count", type=int, default=3_000)
    ap.add_argument("--workdir", type=Path, help="where the spool lives (default: a temp dir)")
    args = ap.parse_args()
    results: dict = {"image_kb": args.image_kb}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        tls = make_cert(work)
        # Enqueue latency: the full backlog, on this disk, nothing else of ours running.
        spool = Spool(work / "spool-https", max_bytes=50 * 1024**3)
        results["enqueue"] = bench_enqueue(spool, args.count, args.image_kb, "s")
        for scheme, count in (("https", args.count), ("http", args.http_count)):
            standin = Standin(work / scheme, tls if scheme == "https" else None)
            try:
                if scheme == "http":
                    spool = Spool(work / "spool-http", max_bytes=50 * 1024**3)
                    bench_enqueue(spool, count, args.image_kb, "h")
                r = {"uploader": bench_drain(spool, standin, count)}
                spool.close()
                r["pooled_raw"] = bench_pooled_raw(standin, args.raw_count, args.image_kb)
                r["baseline"] = bench_baseline(standin, args.baseline_count, args.image_kb)
                r["baseline_per_call"] = bench_baseline_per_call(
                    standin, args.baseline_count // 4, args.image_kb
                )
                rate = r["uploader"]["deposits_per_s"]
                r["uploader_vs_baseline"] = round(rate / r["baseline"]["deposits_per_s"], 2)
                r["uploader_vs_baseline_per_call"] = round(
                    rate / r["baseline_per_call"]["deposits_per_s"], 2
                )
                stats = standin.stats()
                r["standin_stored"] = stats["deposits_stored"]
                r["standin_duplicates"] = stats["duplicate_deposits"]
                expected = count + args.raw_count + args.baseline_count + args.baseline_count // 4
                assert stats["deposits_stored"] == expected, stats
            finally:
                standin.stop()
            results[scheme] = r
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

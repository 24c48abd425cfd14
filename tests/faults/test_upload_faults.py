"""Every accepted deposit reaches the platform exactly once, whatever breaks on the way.

Each test counts the deposits accepted by the device and the deposits the
platform stand-in stored, and checks: none lost, none stored twice, images
intact. Kill counts scale with RVM_FAULT_KILLS (default 20, for CI).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rvm_detector.platform import PlatformClient
from rvm_detector.spool import Spool
from rvm_detector.uploader import Uploader
from upload_driver import CFG, image_for

DRIVER = Path(__file__).with_name("upload_driver.py")
KILLS = int(os.environ.get("RVM_FAULT_KILLS", "20"))


def _assert_exactly_once(standin, accepted: set[str], attempted_prefix: str = "") -> None:
    got = standin.deposits()
    refs = [d["client_ref"] for d in got]
    stats = standin.stats()
    summary = (
        f"accepted={len(accepted)} stored={len(got)} posts={stats['deposit_posts']} "
        f"outcomes={stats['deposit_outcomes']}"
    )
    assert len(refs) == len(set(refs)), f"duplicates stored: {summary}"
    lost = accepted - set(refs)
    example = sorted(lost)[:3]
    assert not lost, f"{len(lost)} accepted deposits never arrived, e.g. {example}: {summary}"
    for d in got:
        assert d["idem_key"] == d["client_ref"]
        assert d["client_ref"].startswith(attempted_prefix)
        assert d["image_sha256"] == hashlib.sha256(image_for(d["client_ref"])).hexdigest(), (
            f"image of {d['client_ref']} corrupted"
        )


def _spool_is_clean(spool_dir: Path) -> None:
    conn = sqlite3.connect(spool_dir / "spool.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM deposits").fetchone()[0] == 0
    finally:
        conn.close()
    assert list((spool_dir / "images").iterdir()) == []


def _driver(mode: str, spool: Path, url: str, key_file: Path, start: int = 0):
    return subprocess.Popen(
        [
            sys.executable,
            str(DRIVER),
            mode,
            "--spool",
            str(spool),
            "--url",
            url,
            "--key-file",
            str(key_file),
            "--start",
            str(start),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_kill_9_at_random_moments_loses_nothing(standin, key_file, tmp_path) -> None:
    spool_dir = tmp_path / "spool"
    rng = random.Random(4)
    accepted: set[str] = set()
    # Some responses are lost too, so kills also land between "stored" and "acked".
    standin.faults.update({"truncate_rate": 0.1, "error_rate": 0.1})
    for cycle in range(KILLS):
        proc = _driver("stream", spool_dir, standin.edge_url, key_file, start=cycle * 1_000_000)
        lines: list[str] = []
        reader = threading.Thread(target=lambda p=proc, out=lines: out.extend(p.stdout))
        reader.start()
        deadline = time.monotonic() + 30
        while not lines and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert lines, "the driver never accepted a deposit"
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join()
        # A line is only complete when the newline made it out: those were accepted.
        accepted.update(line.strip() for line in lines if line.endswith("\n"))
    standin.faults.update({"truncate_rate": 0.0, "error_rate": 0.0})
    drain = _driver("drain", spool_dir, standin.edge_url, key_file)
    assert drain.wait(timeout=180) == 0
    _assert_exactly_once(standin, accepted, "k-")
    assert len(accepted) >= KILLS
    _spool_is_clean(spool_dir)


def _run_uploader(spool: Spool, url: str, key: str) -> tuple[Uploader, PlatformClient]:
    client = PlatformClient(url, key, read_timeout_s=0.5)
    uploader = Uploader(spool, client, CFG)
    uploader.start()
    return uploader, client


def _enqueue(spool: Spool, n: int, prefix: str) -> set[str]:
    uuids = {f"{prefix}-{i:05d}" for i in range(n)}
    for u in sorted(uuids):
        spool.enqueue(uuid=u, status="ACCEPTED", data={"client_ref": u}, image=image_for(u))
    return uuids


def _deliver_under(standin, key_file: Path, tmp_path: Path, faults: dict, n: int) -> set[str]:
    spool = Spool(tmp_path / "spool")
    standin.faults.update(faults)
    uploader, client = _run_uploader(spool, standin.edge_url, key_file.read_text())
    try:
        accepted = _enqueue(spool, n, "f")
        assert uploader.wait_drained(120), f"not drained: {spool.stats()}"
    finally:
        uploader.stop()
        client.close()
        spool.close()
    _spool_is_clean(tmp_path / "spool")
    return accepted


def test_platform_down_during_1000_deposits_then_back(standin, key_file, tmp_path) -> None:
    spool = Spool(tmp_path / "spool")
    standin.faults.update({"down": True})
    uploader, client = _run_uploader(spool, standin.edge_url, key_file.read_text())
    try:
        accepted = _enqueue(spool, 1000, "down")
        assert spool.stats().pending == 1000
        assert standin.stats()["deposits_stored"] == 0
        standin.faults.update({"down": False})
        assert uploader.wait_drained(120), f"not drained: {spool.stats()}"
    finally:
        uploader.stop()
        client.close()
        spool.close()
    _assert_exactly_once(standin, accepted, "down-")
    assert len(standin.deposits()) == 1000
    _spool_is_clean(tmp_path / "spool")


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param({"error_rate": 0.3}, id="30pct-500"),
        pytest.param({"rate_limit_rate": 0.6, "retry_after_s": 0}, id="429-storm"),
        pytest.param({"truncate_rate": 0.3}, id="truncated-responses"),
        pytest.param({"slow_body_rate": 0.1, "slow_body_s": 1.0}, id="slow-body-timeouts"),
        pytest.param({"bad_gateway_html_rate": 0.3}, id="html-502"),
    ],
)
def test_faulty_platform_gets_every_deposit_once(standin, key_file, tmp_path, faults) -> None:
    accepted = _deliver_under(standin, key_file, tmp_path, faults, 300)
    _assert_exactly_once(standin, accepted, "f-")
    assert len(standin.deposits()) == 300
    assert standin.stats()["deposit_posts"] > 300, "the fault really hit some requests"


def test_without_idempotency_support_lost_responses_become_duplicates(
    standin, key_file, tmp_path
) -> None:
    """What docs/upload.md warns about: a platform that ignores Idempotency-Key."""
    accepted = _deliver_under(
        standin, key_file, tmp_path, {"truncate_rate": 0.3, "ignore_idempotency": True}, 100
    )
    refs = [d["client_ref"] for d in standin.deposits()]
    assert set(refs) == accepted, "still nothing lost"
    assert len(refs) > len(set(refs)), "but retried deposits were stored twice"

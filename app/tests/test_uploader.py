"""The uploader against the real platform stand-in (HTTP over loopback, SQLite on both ends)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tenacity
from rvm_detector import upload_metrics
from rvm_detector.config import UploadConfig
from rvm_detector.platform import PlatformClient, Reply
from rvm_detector.spool import Spool
from rvm_detector.uploader import PLACEHOLDER_IMAGE, AdaptiveLimit, Backoff, Uploader
from upload_fixtures import API_KEY, FAST_UPLOAD, jpeg_for, load_standin


@pytest.fixture
def standin(tmp_path: Path) -> Iterator:
    server = load_standin().StandinServer(tmp_path / "platform.db", [API_KEY], seed=7).start()
    yield server
    server.stop()


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool(tmp_path / "spool")
    yield s
    s.close()


def _start(spool: Spool, url: str, key: str = API_KEY, cfg: UploadConfig = FAST_UPLOAD):
    client = PlatformClient(url, key, read_timeout_s=2.0)
    uploader = Uploader(spool, client, cfg)
    uploader.start()
    return uploader, client


def _enqueue(spool: Spool, n: int, prefix: str = "dep") -> list[str]:
    uuids = [f"{prefix}-{i:04d}" for i in range(n)]
    for u in uuids:
        spool.enqueue(uuid=u, status="ACCEPTED", data={"client_ref": u}, image=jpeg_for(u))
    return uuids


def _wait(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_every_deposit_arrives_once_with_its_key_and_image(standin, spool) -> None:
    uuids = _enqueue(spool, 40)
    uploader, client = _start(spool, standin.edge_url)
    try:
        assert uploader.wait_drained(20)
    finally:
        uploader.stop()
        client.close()
    got = standin.deposits()
    assert sorted(d["idem_key"] for d in got) == uuids
    for d in got:
        assert d["client_ref"] == d["idem_key"]
        assert json.loads(d["data"])["client_ref"] == d["idem_key"]
        assert d["status"] == "ACCEPTED" and d["image_mime"] == "image/jpeg"
        assert d["image_size"] == len(jpeg_for(d["idem_key"]))
    assert standin.stats()["deposit_posts"] == 40


def test_validation_error_goes_to_dead_letters_and_is_not_retried(standin, spool) -> None:
    spool.enqueue(uuid="bad", status="", data={"client_ref": "bad"}, image=jpeg_for("bad"))
    good = _enqueue(spool, 3)
    uploader, client = _start(spool, standin.edge_url)
    try:
        assert _wait(lambda: spool.stats().dead == 1 and spool.stats().pending == 0)
        time.sleep(0.5)  # room for a wrong retry to show up in the platform's count
    finally:
        uploader.stop()
        client.close()
    dead = list(spool.export("dead"))
    assert [d["uuid"] for d in dead] == ["bad"]
    assert dead[0]["dead_status"] == 422
    assert "The status field is required." in dead[0]["dead_body"]
    assert sorted(d["idem_key"] for d in standin.deposits()) == good
    assert standin.stats()["deposit_outcomes"]["422"] == 1, "a permanent failure is sent once"


def test_wrong_api_key_is_retried_and_reported_once(standin, spool, caplog) -> None:
    _enqueue(spool, 3)
    before = upload_metrics.AUTH_ERRORS._value.get()
    caplog.set_level(logging.ERROR, logger="rvm_detector.uploader")
    uploader, client = _start(spool, standin.edge_url, key="rvm_" + "x" * 60)
    try:
        assert _wait(lambda: upload_metrics.AUTH_ERRORS._value.get() - before >= 3)
    finally:
        uploader.stop()
        client.close()
    assert spool.stats().pending == 3 and spool.stats().dead == 0, "kept for when it is fixed"
    loud = [r for r in caplog.records if "401" in r.getMessage()]
    assert len(loud) == 1, [r.getMessage() for r in loud]
    assert standin.stats()["deposits_stored"] == 0


def test_shed_image_is_sent_as_placeholder_and_marked(standin, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "small", max_bytes=1024 * 1024)
    for i in range(30):
        u = f"big-{i:02d}"
        spool.enqueue(uuid=u, status="ACCEPTED", data={"client_ref": u}, image=jpeg_for(u, 60_000))
    shed = {r["uuid"] for r in spool.export() if r["image_shed"]}
    assert shed, "the budget forced shedding"
    uploader, client = _start(spool, standin.edge_url)
    try:
        assert uploader.wait_drained(20)
    finally:
        uploader.stop()
        client.close()
        spool.close()
    got = {d["idem_key"]: d for d in standin.deposits()}
    assert len(got) == 30
    for u, d in got.items():
        data = json.loads(d["data"])
        if u in shed:
            assert data["image_shed"] is True and d["image_mime"] == "image/png"
            assert d["image_size"] == len(PLACEHOLDER_IMAGE)
        else:
            assert "image_shed" not in data and d["image_size"] == 60_000


def test_retry_after_is_honoured(standin, spool) -> None:
    _enqueue(spool, 1)
    standin.faults.update({"rate_limit_rate": 1.0, "retry_after_s": 1})
    uploader, client = _start(spool, standin.edge_url)
    try:
        assert _wait(lambda: standin.stats()["deposit_posts"] >= 1)
        first = time.monotonic()
        # While the platform says "come back in 1 s", nothing else is sent.
        time.sleep(0.7)
        assert standin.stats()["deposit_posts"] == 1
        standin.faults.update({"rate_limit_rate": 0.0})
        assert uploader.wait_drained(10)
        assert time.monotonic() - first >= 0.9
    finally:
        uploader.stop()
        client.close()
    assert standin.stats()["deposit_outcomes"] == {"429": 1, "201": 1}


def test_answers_outside_the_contract_never_stop_the_uploader(standin, spool, caplog) -> None:
    uuids = _enqueue(spool, 30)
    standin.faults.update({"bad_gateway_html_rate": 0.3, "non_json_2xx_rate": 0.3})
    caplog.set_level(logging.WARNING, logger="rvm_detector.uploader")
    uploader, client = _start(spool, standin.edge_url)
    try:
        assert uploader.wait_drained(30)
    finally:
        uploader.stop()
        client.close()
    assert sorted(d["idem_key"] for d in standin.deposits()) == uuids
    outcomes = standin.stats()["deposit_outcomes"]
    assert outcomes.get("502", 0) > 0
    text = caplog.text
    assert "HTTP 502 (body is not JSON" in text and "HTTP 201 (body is not JSON" in text


def test_backoff_is_full_jitter_exponential_and_uses_retry_after() -> None:
    backoff = Backoff(UploadConfig(backoff_base_s=0.5, backoff_max_s=8, retry_after_max_s=30))
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)]:
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.7, "the whole window is used (full jitter)"
    said = Reply(429, None, "", 12.0, None)
    assert backoff.delay(1, said) == 12.0
    assert backoff.delay(1, Reply(503, None, "", 3600.0, None)) == 30, "capped"
    assert isinstance(backoff._wait.fallback, tenacity.wait_random_exponential)


def test_concurrency_rises_with_backlog_and_halves_on_overload() -> None:
    limit = AdaptiveLimit(1, 8, cooldown_s=0.0)
    for _ in range(200):
        limit.on_success(backlogged=True)
    assert limit.limit == 8
    limit.on_overload()
    assert limit.limit == 4
    for _ in range(10):
        limit.on_overload()
    assert limit.limit == 1
    for _ in range(50):
        limit.on_success(backlogged=False)
    assert limit.limit == 1, "no backlog, no growth"

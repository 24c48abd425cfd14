"""Platform client, edge session, stand-in contract rules, upload config and `spool` CLI."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from rvm_detector import __version__
from rvm_detector.cli import main as cli_main
from rvm_detector.config import PlatformConfig, SpoolConfig
from rvm_detector.edge import EdgeSession, HealthProbe, Identity
from rvm_detector.platform import PlatformClient, parse_retry_after
from rvm_detector.spool import Spool
from upload_fixtures import API_KEY, FAST_UPLOAD, jpeg_for, load_standin

IDENTITY = Identity("RVM-202601-006", "Lab RVM 6", "yolo11n-rvm", "3", "cd" * 32)


@pytest.fixture
def standin(tmp_path: Path) -> Iterator:
    server = (
        load_standin()
        .StandinServer(tmp_path / "platform.db", [API_KEY], heartbeat_interval_s=1)
        .start()
    )
    yield server
    server.stop()


@pytest.fixture
def client(standin) -> Iterator[PlatformClient]:
    c = PlatformClient(standin.edge_url, API_KEY, read_timeout_s=3.0)
    yield c
    c.close()


def _key_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "api_key"
    path.write_text(API_KEY + "\n")
    path.chmod(mode)
    return path


def _platform_cfg(tmp_path: Path, url: str, **extra) -> PlatformConfig:
    return PlatformConfig(
        base_url=url, api_key_file=_key_file(tmp_path), upload=FAST_UPLOAD, **extra
    )


# -- the stand-in applies the platform's rules ----------------------------------


def test_deposit_validation_matches_the_platform(client) -> None:
    ok = client.deposit(idempotency_key="u1", status="ACCEPTED", data="{}", image=jpeg_for("u1"))
    assert ok.status == 201 and ok.contract_error is None
    assert set(ok.body["data"]) == {"image_url", "ai_result", "processed_at"}

    bad = client.deposit(idempotency_key="u2", status="", data="not json", image=b"GIF89a...")
    assert bad.status == 422
    assert set(bad.body["errors"]) == {"image", "status", "data"}
    assert bad.body["message"].startswith("The image field must be a file of type")

    huge = jpeg_for("u3", 5 * 1024 * 1024 + 1)
    too_big = client.deposit(idempotency_key="u3", status="ACCEPTED", data="{}", image=huge)
    assert too_big.status == 422
    assert "5120 kilobytes" in too_big.body["errors"]["image"][0]


def test_repeated_idempotency_key_returns_the_first_answer(client, standin) -> None:
    first = client.deposit(idempotency_key="k1", status="ACCEPTED", data="{}", image=jpeg_for("a"))
    again = client.deposit(idempotency_key="k1", status="ACCEPTED", data="{}", image=jpeg_for("a"))
    assert again.status == 201 and again.body == first.body
    assert standin.stats()["deposits_stored"] == 1
    assert standin.stats()["deposit_outcomes"] == {"201": 1, "replay": 1}


def test_keys_are_stored_only_as_sha256(standin, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "platform.db")
    stored = [r[0] for r in conn.execute("SELECT key_sha256 FROM machines")]
    assert stored == [hashlib.sha256(API_KEY.encode()).hexdigest()]
    assert API_KEY.encode() not in (tmp_path / "platform.db").read_bytes()


def test_wrong_key_401_blocked_403(standin) -> None:
    wrong = PlatformClient(standin.edge_url, "rvm_" + "z" * 60)
    try:
        assert wrong.heartbeat({"status": "online"}).status == 401
    finally:
        wrong.close()
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    with httpx.Client(base_url=standin.admin_url) as admin:
        assert admin.post("/admin/block", json={"sha256": digest}).status_code == 200
    blocked = PlatformClient(standin.edge_url, API_KEY)
    try:
        reply = blocked.heartbeat({"status": "online"})
        assert reply.status == 403 and reply.body["message"] == "This machine is blocked."
    finally:
        blocked.close()


def test_sync_offline_is_all_or_nothing(standin) -> None:
    # The device no longer sends offline transactions; the stand-in still models the
    # platform's endpoint, so its rule is checked here with a plain HTTP client.
    good = {"timestamp": "2026-01-02T03:04:05Z", "items": [{"type": "PET_BOTTLE", "points": 10}]}
    bad = {"timestamp": "yesterday", "items": []}
    with httpx.Client(
        base_url=standin.edge_url + "/api/v1", headers={"X-RVM-API-KEY": API_KEY}
    ) as http:
        refused = http.post("/edge/sync-offline", json={"transactions": [good, bad]})
        assert refused.status_code == 422
        assert "transactions.1.timestamp" in refused.json()["errors"]
        assert standin.stats()["offline_transactions"] == 0
        done = http.post("/edge/sync-offline", json={"transactions": [good, good]})
        assert done.status_code == 200 and done.json()["synced_count"] == 2


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None


# -- edge session ------------------------------------------------------------------


def test_handshake_retries_until_the_platform_is_back_then_heartbeats(
    standin, client, tmp_path: Path
) -> None:
    standin.faults.update({"down": True})
    session = EdgeSession(
        client,
        _platform_cfg(tmp_path, standin.edge_url),
        IDENTITY,
        HealthProbe(tmp_path),
        restart=lambda: None,
        status=lambda: {"spool_pending": 4},
    )
    session.start()
    try:
        assert not session.handshake_done.wait(0.6), "platform down: no handshake yet"
        standin.faults.update({"down": False})
        assert session.handshake_done.wait(10)
        assert session.interval_s == 1.0, "the platform's interval is used"
        with httpx.Client(base_url=standin.admin_url) as admin:
            assert _eventually(lambda: len(admin.get("/admin/heartbeats").json()) >= 1)
            hs = admin.get("/admin/handshakes").json()[0]["body"]
            beat = admin.get("/admin/heartbeats").json()[0]["body"]
    finally:
        session.stop()
    assert hs["hardware_id"] == "RVM-202601-006"
    assert hs["system"]["ai_models"]["hash"] == "cd" * 32
    assert 0 <= hs["health_metrics"]["disk_usage_percent"] <= 100
    assert beat["status"] == "online" and beat["health_metrics"]["spool_pending"] == 4


def test_restart_and_git_pull_commands_are_acted_on_once(standin, client, tmp_path) -> None:
    marker = tmp_path / "pulled"
    cfg = _platform_cfg(
        tmp_path,
        standin.edge_url,
        git_pull_command=[sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x')"],
    )
    restarted = threading.Event()
    session = EdgeSession(client, cfg, IDENTITY, HealthProbe(tmp_path), restarted.set)
    with httpx.Client(base_url=standin.admin_url) as admin:
        for action in ("GIT_PULL", "RESTART"):
            r = admin.post(
                "/admin/commands", json={"hardware_id": IDENTITY.hardware_id, "action": action}
            )
            assert r.status_code == 201
        session.beat()
        session.beat()  # commands are handed out once
        assert admin.get("/admin/stats").json()["pending_commands"] == 0
    assert restarted.is_set()
    assert marker.read_text() == "x"


# -- configuration -----------------------------------------------------------------


def test_platform_url_that_does_not_parse_is_refused(tmp_path: Path) -> None:
    for url in ("myrvm.example.com", "ftp://x", "https://", "https://host:99999"):
        with pytest.raises(ValidationError, match=r"platform\.base_url"):
            PlatformConfig(base_url=url, api_key_file=_key_file(tmp_path))


def test_api_key_file_must_exist_and_be_private(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="chmod 600"):
        PlatformConfig(base_url="https://p.example", api_key_file=tmp_path / "missing")
    for mode in (0o644, 0o640, 0o604):
        with pytest.raises(ValidationError, match="group/other may read the secret"):
            PlatformConfig(base_url="https://p.example", api_key_file=_key_file(tmp_path, mode))
    for mode in (0o600, 0o400):
        PlatformConfig(base_url="https://p.example", api_key_file=_key_file(tmp_path, mode))


def test_spool_dir_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValidationError, match=r"spool\.dir .* is not a directory"):
        SpoolConfig(dir=tmp_path / "afile" / "spool")
    SpoolConfig(dir=tmp_path / "new" / "spool")  # missing but creatable is fine


# -- operator CLI ------------------------------------------------------------------


def test_spool_cli_status_export_and_retry_dead(tmp_path: Path, capsys) -> None:
    spool = Spool(tmp_path)
    for u in ("a", "b"):
        spool.enqueue(uuid=u, status="ACCEPTED", data={"client_ref": u}, image=jpeg_for(u))
    item = spool.claim()
    assert item is not None
    spool.dead_letter(item.uuid, 422, '{"message":"bad"}', "HTTP 422")
    spool.close()

    assert cli_main(["spool", "--dir", str(tmp_path), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["pending"] == 1 and status["dead"] == 1

    out = tmp_path / "dead.jsonl"
    images = tmp_path / "exported"
    args = ["spool", "--dir", str(tmp_path), "export", "--state", "dead", "--out", str(out)]
    assert cli_main([*args, "--images", str(images)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["uuid"], r["dead_status"]) for r in rows] == [("a", 422)]
    assert (images / "a.jpg").read_bytes() == jpeg_for("a")

    assert cli_main(["spool", "--dir", str(tmp_path), "retry-dead"]) == 0
    assert "1 dead letter(s) queued" in capsys.readouterr().out
    assert Spool(tmp_path).stats().dead == 0

    assert cli_main(["spool", "--dir", str(tmp_path / "nothing"), "status"]) == 2


def _eventually(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_service_sink_is_the_spool_and_its_components_deliver(standin, tmp_path: Path) -> None:
    from rvm_detector.config import Config
    from rvm_detector.records import DepositRecord, ModelId
    from rvm_detector.service import build_sink

    model = tmp_path / "model.onnx"
    model.write_bytes(b"not a real model; only its sha256 is read here")
    config = Config(
        camera={"source": str(tmp_path)},
        model={"path": model},
        platform={
            "base_url": standin.edge_url,
            "api_key_file": _key_file(tmp_path),
            "hardware_id": "RVM-T1",
            "upload": FAST_UPLOAD.model_dump(),
        },
        spool={"dir": tmp_path / "spool"},
    )
    setup = build_sink(config)
    record = DepositRecord(
        camera="chute",
        model=ModelId("m", "1", "00" * 32),
        detections=(),
        verdict="reject",
        reason="nothing detected",
        jpeg=jpeg_for("x"),
    )
    for c in setup.components:
        c.start()
    try:
        setup.sink.put(record)
        assert _eventually(lambda: standin.stats()["deposits_stored"] == 1)
        assert _eventually(lambda: standin.stats()["handshakes"] == 1)
        ready = [c.ready() for c in setup.components if c.ready]
        assert ready and all(ok for ok, _ in ready)
    finally:
        for c in setup.components:
            c.stop()
    stored = standin.deposits()[0]
    assert stored["idem_key"] == record.uuid and stored["status"] == "REJECTED"


def test_heartbeat_reports_the_pull_mode_commit_and_last_result(standin, client, tmp_path) -> None:
    """Pull mode (roles/pull_mode): the operator sees in the heartbeat which ring commit
    the device runs and how its last pull ended; a device never pulled says so."""
    state = tmp_path / "pull-state.json"
    cfg = _platform_cfg(tmp_path, standin.edge_url, pull_state_file=state)
    session = EdgeSession(client, cfg, IDENTITY, HealthProbe(tmp_path), lambda: None)
    commit, bad = "3f2a9c1d07be" + "0" * 28, "9b1c" + "1" * 36
    with httpx.Client(base_url=standin.admin_url) as admin:
        session.beat()
        state.write_text(
            json.dumps({
                "ref": "ring/canary",
                "applied": {"commit": commit},
                "last": {"result": "held", "commit": bad, "at_text": "2026-11-29T09:00:00Z",
                         "message": "ring/canary is still at 9b1c11111111, whose run failed"},
            })
        )  # fmt: skip
        session.beat()
        beats = [b["body"] for b in admin.get("/admin/heartbeats").json()]
    assert beats[0]["version"].endswith(" ring?@none never-run")
    assert beats[1]["version"] == f"{__version__} ring/canary@3f2a9c1d07be held"
    pull = beats[1]["health_metrics"]["pull"]
    assert pull["applied_commit"] == commit and pull["last_commit"] == bad
    assert "whose run failed" in pull["last_message"]

"""The spool: durable acceptance, at-least-once bookkeeping, disk budget, dead letters."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from rvm_detector import upload_metrics
from rvm_detector.records import DepositRecord, Detection, ModelId
from rvm_detector.spool import Spool
from upload_fixtures import jpeg_for


def _record(uuid: str, verdict: str = "accept", size: int = 2048) -> DepositRecord:
    return DepositRecord(
        uuid=uuid,
        camera="chute",
        model=ModelId("yolo11n-rvm", "1", "ab" * 32),
        detections=(Detection("pet_bottle", 0.91, (1.0, 2.0, 30.0, 40.0)),),
        verdict=verdict,  # type: ignore[arg-type]
        reason="pet_bottle 0.91",
        jpeg=jpeg_for(uuid, size),
        session_id="sess-1",
    )


def test_put_survives_reopen_with_data_and_image(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(_record("a1"))
    spool.put(_record("a2", verdict="reject"))
    spool.close()

    again = Spool(tmp_path)
    first = again.claim()
    assert first is not None and first.uuid == "a1"
    data = json.loads(first.data)
    assert data["client_ref"] == "a1"
    assert data["detections"][0]["class_name"] == "pet_bottle"
    assert first.status == "ACCEPTED" and first.session_id == "sess-1"
    assert again.read_image(first) == jpeg_for("a1")
    second = again.claim()
    assert second is not None and second.uuid == "a2" and second.status == "REJECTED"
    assert again.claim() is None, "both are in flight; nothing else is due"


def test_ack_removes_row_and_image_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(_record("a1"))
    item = spool.claim()
    assert item is not None
    spool.ack(item.uuid)
    assert spool.stats().pending == 0
    assert spool.stats().image_bytes == 0
    spool.close()  # waits for the janitor that deletes acked images
    assert list((tmp_path / "images").iterdir()) == []


def test_released_or_retried_deposit_comes_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(_record("a1"))
    item = spool.claim()
    assert item is not None
    spool.retry_later(item.uuid, 60.0, "HTTP 500")
    assert spool.claim() is None, "not due for another minute"
    later = spool.claim(now=time.time() + 61)
    assert later is not None and later.uuid == "a1" and later.attempts == 1
    spool.release(later.uuid)
    assert spool.export().__next__()["last_error"] == "HTTP 500"


def test_same_uuid_twice_is_stored_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(_record("a1"))
    spool.put(_record("a1"))
    assert spool.stats().pending == 1


def test_orphan_image_from_a_crash_before_commit_is_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(_record("kept"))
    spool.close()
    (tmp_path / "images" / "crashed.jpg").write_bytes(b"half written")
    again = Spool(tmp_path)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["kept.jpg"]
    assert again.stats().pending == 1


def test_disk_budget_sheds_oldest_images_and_keeps_every_record(tmp_path: Path) -> None:
    budget = 2 * 1024 * 1024
    spool = Spool(tmp_path, max_bytes=budget)
    shed_before = upload_metrics.IMAGES_SHED._value.get()
    for i in range(60):
        spool.put(_record(f"d{i:03d}", size=50_000))
    stats = spool.stats()
    assert stats.pending == 60, "no record is ever dropped"
    assert stats.image_bytes + stats.db_bytes <= budget
    assert stats.shed_pending > 0
    rows = list(spool.export())
    shed = [r["image_shed"] for r in rows]
    # Oldest first: every shed record is older than every record that kept its image.
    assert shed == sorted(shed, reverse=True)
    assert rows[-1]["image_shed"] is False, "the newest image is kept"
    on_disk = {p.name for p in (tmp_path / "images").iterdir()}
    assert on_disk == {r["image_name"] for r in rows if not r["image_shed"]}
    assert upload_metrics.IMAGES_SHED._value.get() - shed_before == stats.shed_pending


def test_dead_letters_keep_the_response_and_can_be_retried(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(_record("a1"))
    spool.put(_record("a2"))
    item = spool.claim()
    assert item is not None
    body = '{"message":"The status field is required.","errors":{"status":["required"]}}'
    spool.dead_letter(item.uuid, 422, body, "HTTP 422")
    assert spool.stats().dead == 1 and spool.stats().pending == 1
    dead = list(spool.export("dead"))
    assert dead[0]["uuid"] == "a1" and dead[0]["dead_status"] == 422
    assert dead[0]["dead_body"] == body
    assert spool.retry_dead() == 1
    assert spool.stats().dead == 0 and spool.stats().pending == 2


def test_enqueue_is_committed_with_full_sync_in_wal_mode(tmp_path: Path) -> None:
    Spool(tmp_path).put(_record("a1"))
    # An independent reader (another process would see the same) finds the row.
    conn = sqlite3.connect(tmp_path / "spool.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT uuid FROM deposits").fetchall() == [("a1",)]


def test_unwritable_spool_dir_is_a_clear_error(tmp_path: Path) -> None:
    from rvm_detector.spool import SpoolError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError, match=r"spool\.dir"):
        Spool(blocker / "spool")


def test_spool_of_an_earlier_release_with_offline_transactions_opens_and_keeps_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An earlier release also made a table offline_transactions; a spool it left behind
    # (with a deposit and a queued transaction) must open, deliver, and keep that row.
    conn = sqlite3.connect(tmp_path / "spool.db")
    Spool(tmp_path / "fresh").close()
    fresh = sqlite3.connect(tmp_path / "fresh" / "spool.db")
    (schema,) = fresh.execute("SELECT sql FROM sqlite_master WHERE name='deposits'").fetchone()
    assert (
        fresh.execute(
            "SELECT name FROM sqlite_master WHERE name=?", ("offline_transactions",)
        ).fetchall()
        == []
    )
    conn.executescript(
        schema + ";\nCREATE TABLE offline_transactions (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " created_at REAL NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',"
        " dead_body TEXT);\n"
        "INSERT INTO offline_transactions (created_at, body) VALUES (1.0, '{\"items\": []}');\n"
        "PRAGMA user_version=1;"
    )
    conn.close()

    with caplog.at_level("WARNING", logger="rvm_detector.spool"):
        spool = Spool(tmp_path)
    assert "1 row(s) in table offline_transactions" in caplog.text
    spool.put(_record("a1"))
    item = spool.claim()
    assert item is not None and item.uuid == "a1"
    spool.dead_letter(item.uuid, 422, "{}", "HTTP 422")
    assert spool.retry_dead() == 1
    assert spool.stats().pending == 1
    spool.close()
    conn = sqlite3.connect(tmp_path / "spool.db")
    assert conn.execute("SELECT body FROM offline_transactions").fetchall() == [('{"items": []}',)]

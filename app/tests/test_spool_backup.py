"""`rvm-detector spool backup|restore`: consistent snapshots of a live spool, for restic."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from rvm_detector import cli
from rvm_detector.records import DepositRecord, Detection, ModelId
from rvm_detector.spool import Spool, SpoolError, restore, snapshot
from upload_fixtures import jpeg_for


def _record(uuid: str) -> DepositRecord:
    return DepositRecord(
        uuid=uuid,
        camera="chute",
        model=ModelId("yolo11n-rvm", "1", "ab" * 32),
        detections=(Detection("pet_bottle", 0.91, (1.0, 2.0, 30.0, 40.0)),),
        verdict="accept",
        reason="pet_bottle 0.91",
        jpeg=jpeg_for(uuid, 4096),
        session_id="sess-1",
    )


def _uuids(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return {u for (u,) in conn.execute("SELECT uuid FROM deposits")}
    finally:
        conn.close()


def test_snapshot_during_writes_holds_every_deposit_acknowledged_before_it(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool")
    acked: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            spool.put(_record(f"d{i}"))
            acked.append(f"d{i}")  # put returned: the deposit is acknowledged
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        while len(acked) < 50:
            threading.Event().wait(0.01)
        taken: list[tuple[set[str], set[str]]] = []
        for n in range(5):
            before = set(acked)
            snapshot(tmp_path / "spool", tmp_path / f"snap{n}")
            taken.append((before, _uuids(tmp_path / f"snap{n}" / "spool.db")))
    finally:
        stop.set()
        t.join()
        spool.close()
    for n, (before, held) in enumerate(taken):
        assert before <= held, f"snapshot {n} lost {sorted(before - held)[:5]}"
        images = {p.name for p in (tmp_path / f"snap{n}" / "images").iterdir()}
        assert images == {f"{u}.jpg" for u in held}, "every row's image, and no other file"
    assert len(acked) > len(taken[0][1]), "the writer kept writing while snapshots were taken"


def test_snapshot_is_one_file_without_wal_and_restores_into_a_working_spool(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool")
    for i in range(3):
        spool.put(_record(f"r{i}"))
    result = snapshot(tmp_path / "spool", tmp_path / "snap")
    spool.close()
    assert (result.deposits, result.pending, result.images) == (3, 3, 3)
    assert not (tmp_path / "snap" / "spool.db-wal").exists()

    restore(tmp_path / "snap", tmp_path / "new")
    again = Spool(tmp_path / "new")
    item = again.claim()
    assert item is not None and item.uuid == "r0"
    assert again.read_image(item) == jpeg_for("r0", 4096)
    assert again.stats().pending == 3
    again.close()


def test_image_delivered_while_the_snapshot_is_taken_is_sent_again_without_image(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.put(_record("gone"))
    spool.put(_record("kept"))
    spool.close()
    (tmp_path / "spool" / "images" / "gone.jpg").unlink()  # acked+trashed after the copy
    result = snapshot(tmp_path / "spool", tmp_path / "snap")
    assert (result.images, result.images_gone) == (1, 1)
    conn = sqlite3.connect(tmp_path / "snap" / "spool.db")
    rows = dict(conn.execute("SELECT uuid, image_shed FROM deposits"))
    conn.close()
    assert rows == {"gone": 1, "kept": 0}, "the row stays (the platform de-duplicates it)"


def test_rerun_keeps_unchanged_images_and_drops_delivered_ones(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.put(_record("a"))
    spool.put(_record("b"))
    snapshot(tmp_path / "spool", tmp_path / "snap")
    inode = (tmp_path / "snap" / "images" / "b.jpg").stat().st_ino
    item = spool.claim()
    assert item is not None and item.uuid == "a"
    spool.ack("a")
    spool.close()
    snapshot(tmp_path / "spool", tmp_path / "snap")
    assert sorted(p.name for p in (tmp_path / "snap" / "images").iterdir()) == ["b.jpg"]
    assert _uuids(tmp_path / "snap" / "spool.db") == {"b"}
    spool = Spool(tmp_path / "spool")
    spool.put(_record("c"))
    spool.close()
    snapshot(tmp_path / "spool", tmp_path / "snap")
    names = sorted(p.name for p in (tmp_path / "snap" / "images").iterdir())
    assert names == ["b.jpg", "c.jpg"]
    # The same file as before: restic skips it without reading it again.
    assert (tmp_path / "snap" / "images" / "b.jpg").stat().st_ino == inode


def test_restore_refuses_a_spool_that_still_holds_deposits_unless_forced(
    tmp_path: Path,
) -> None:
    old = Spool(tmp_path / "old")
    old.put(_record("from-old"))
    old.close()
    snapshot(tmp_path / "old", tmp_path / "snap")
    busy = Spool(tmp_path / "busy")
    busy.put(_record("still-here"))
    busy.close()
    with pytest.raises(SpoolError, match=r"still holds 1 deposit.*--force"):
        restore(tmp_path / "snap", tmp_path / "busy")
    assert _uuids(tmp_path / "busy" / "spool.db") == {"still-here"}
    restore(tmp_path / "snap", tmp_path / "busy", force=True)
    assert _uuids(tmp_path / "busy" / "spool.db") == {"from-old"}


def test_cli_backup_and_errors_name_the_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.put(_record("x"))
    spool.close()
    rc = cli.main(["spool", "--dir", str(tmp_path / "spool"), "backup", str(tmp_path / "s")])
    assert rc == 0
    assert "1 deposit(s) (1 pending, 0 dead), 1 image(s)" in capsys.readouterr().out
    rc = cli.main(["spool", "--dir", str(tmp_path / "nothing"), "backup", str(tmp_path / "s")])
    assert rc == 2
    assert f"{tmp_path / 'nothing'} holds no spool.db" in capsys.readouterr().err
    rc = cli.main(["spool", "--dir", str(tmp_path / "new"), "restore", str(tmp_path / "empty")])
    assert rc == 2
    assert "holds no spool.db: not a spool snapshot" in capsys.readouterr().err

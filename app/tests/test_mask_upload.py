"""Mask images through the spool and uploader: after their deposit, once, never ahead of it."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from rvm_detector.platform import PlatformClient
from rvm_detector.records import DepositRecord, Detection, MaskInfo, ModelId
from rvm_detector.spool import Spool
from rvm_detector.uploader import Uploader
from upload_fixtures import API_KEY, FAST_UPLOAD, jpeg_for, load_standin


def _png(k: int) -> bytes:
    labels = np.zeros((24, 32), np.uint8)
    labels[4 : 4 + k, 5:20] = 1
    return cv2.imencode(".png", labels)[1].tobytes()


def _record(uuid: str, with_mask: bool = True, seq: int = 1) -> DepositRecord:
    mask = MaskInfo(((5.0, 4.0, 19.0, 4.0, 19.0, 9.0),), 75, 0.5)
    return DepositRecord(
        uuid=uuid,
        camera="chute",
        model=ModelId("m", "1", "0" * 64),
        detections=(Detection("can", 0.9, (5, 4, 20, 14), mask if with_mask else None),),
        verdict="accept",
        reason="can",
        jpeg=jpeg_for(uuid),
        session_id="sess",
        segmentation="on" if with_mask else "off",
        mask_png=_png(5) if with_mask else b"",
        processed_jpeg=jpeg_for(uuid + "p") if with_mask else b"",
        item_sequence=seq,
    )


@pytest.fixture
def standin(tmp_path: Path):
    server = load_standin().StandinServer(tmp_path / "platform.db", [API_KEY], seed=3).start()
    yield server
    server.stop()


def test_masks_follow_their_deposits_once_and_never_ahead(tmp_path: Path, standin) -> None:
    spool = Spool(tmp_path / "spool")
    for i in range(6):
        spool.put(_record(f"d-{i}", with_mask=i % 3 != 2, seq=i + 1))
    # Nothing is sent yet: a mask is not claimable while its deposit waits.
    assert spool.claim_mask() is None
    assert spool.stats().masks_pending == 4
    # Half the upload-image answers are lost after storing: retries must not duplicate.
    standin.faults.update({"truncate_rate": 0.3})
    client = PlatformClient(standin.edge_url, API_KEY, read_timeout_s=1.0)
    uploader = Uploader(spool, client, FAST_UPLOAD)
    uploader.start()
    try:
        assert uploader.wait_drained(60), spool.stats()
    finally:
        uploader.stop()
        client.close()
        spool.close()
    deposits = {d["client_ref"]: d for d in standin.deposits()}
    images = standin.images()
    assert len(deposits) == 6 and len(images) == 4
    for img in images:
        ref = img["metadata"]["client_ref"]
        assert img["idem_key"] == f"{ref}:mask"
        # Stored after its deposit (the stand-in's clock, ISO strings sort in time order).
        assert img["received_at"] >= deposits[ref]["received_at"]
        assert img["metadata"]["session_id"] == "sess"
        assert img["metadata"]["item_sequence"] == int(ref.split("-")[1]) + 1
    assert not list((tmp_path / "spool" / "masks").iterdir())


def test_dead_deposit_holds_its_mask_and_orphans_are_swept(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.put(_record("a"))
    spool.dead_letter("a", 422, "{}", "refused")
    assert spool.claim_mask() is None  # the platform never accepted the deposit
    spool.ack("a")
    claimed = spool.claim_mask()
    assert claimed is not None and claimed[0] == "a"
    assert spool.read_mask_files("a")[0] == _png(5)
    spool.close()
    # A crash after the files but before the commit leaves files without a row.
    (tmp_path / "spool" / "masks" / "ghost.png").write_bytes(b"x")
    spool = Spool(tmp_path / "spool")
    assert not (tmp_path / "spool" / "masks" / "ghost.png").exists()
    assert (tmp_path / "spool" / "masks" / "a.png").exists()
    spool.close()


def test_refused_mask_is_dead_lettered_and_the_deposit_still_delivered(
    tmp_path: Path, standin
) -> None:
    spool = Spool(tmp_path / "spool")
    rec = _record("big")
    # Over the platform's 1 MiB limit for mask_image: 422, kept aside, not retried forever.
    spool.put(
        DepositRecord(**{**rec.__dict__, "mask_png": b"\x89PNG\r\n\x1a\n" + b"0" * (1 << 20)})
    )
    client = PlatformClient(standin.edge_url, API_KEY)
    uploader = Uploader(spool, client, FAST_UPLOAD)
    uploader.start()
    try:
        deadline = time.monotonic() + 30
        while spool.stats().masks_pending and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        uploader.stop()
        client.close()
    assert spool.stats().masks_pending == 0
    assert [d["client_ref"] for d in standin.deposits()] == ["big"]
    assert standin.images() == []
    spool.close()

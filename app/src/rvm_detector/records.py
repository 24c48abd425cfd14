"""Deposit records and the sink interface they are handed to.

A `DepositRecord` is everything the platform needs to know about one deposit:
what was seen, by which camera and model, the verdict, and the JPEG. A `Sink`
takes ownership of records; once `put` returns the record must survive a crash
(the caller drops its copy). The directory sink here is the simplest durable
sink; the upload side's SQLite spool implements the same protocol.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid as uuid_mod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

Verdict = Literal["accept", "reject"]


@dataclass(frozen=True)
class MaskInfo:
    """An item's segmentation mask as the record carries it."""

    # Outer contours, each [x, y, x, y, ...] in the original image's pixels.
    polygons: tuple[tuple[float, ...], ...]
    area: int  # mask pixels
    fill: float  # area / box area

    def to_dict(self) -> dict[str, Any]:
        return {
            "polygons": [[round(v, 1) for v in p] for p in self.polygons],
            "area": int(self.area),
            "fill": round(float(self.fill), 4),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskInfo:
        polygons = tuple(tuple(float(v) for v in p) for p in d["polygons"])
        return cls(polygons, int(d["area"]), float(d["fill"]))


@dataclass(frozen=True)
class Detection:
    class_name: str
    confidence: float
    # x1, y1, x2, y2 in the original image's pixels.
    box: tuple[float, float, float, float]
    # Deposits with segmentation on: the item's mask.
    mask: MaskInfo | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "class_name": self.class_name,
            "confidence": round(float(self.confidence), 5),
            "box": [round(float(v), 2) for v in self.box],
        }
        if self.mask is not None:
            d["mask"] = self.mask.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Detection:
        x1, y1, x2, y2 = (float(v) for v in d["box"])
        mask = MaskInfo.from_dict(d["mask"]) if d.get("mask") else None
        return cls(str(d["class_name"]), float(d["confidence"]), (x1, y1, x2, y2), mask)


@dataclass(frozen=True)
class ModelId:
    name: str
    version: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class DepositRecord:
    camera: str
    model: ModelId
    detections: tuple[Detection, ...]
    verdict: Verdict
    reason: str
    jpeg: bytes = field(repr=False)
    # When the frame was captured (monotonic clocks are useless across processes).
    captured_at: datetime = field(default_factory=_utcnow)
    created_at: datetime = field(default_factory=_utcnow)
    uuid: str = field(default_factory=lambda: str(uuid_mod.uuid4()))
    # The machine's own deposit session, when the controller announced one.
    session_id: str | None = None
    # Segmentation: "on" (masks in the detections), "off", or "failed: <reason>".
    segmentation: str = "off"
    # For POST /edge/upload-image after the deposit: the label PNG (0 background, k =
    # k-th detection) and the frame with the masks drawn; empty when there are no masks.
    mask_png: bytes = field(default=b"", repr=False)
    processed_jpeg: bytes = field(default=b"", repr=False)
    # This deposit's place in its session (1-based), for the upload's metadata.
    item_sequence: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form of everything except the JPEG bytes."""
        return {
            "uuid": self.uuid,
            "created_at": self.created_at.isoformat(),
            "captured_at": self.captured_at.isoformat(),
            "camera": self.camera,
            "session_id": self.session_id,
            "model": self.model.to_dict(),
            "detections": [d.to_dict() for d in self.detections],
            "verdict": self.verdict,
            "reason": self.reason,
            "segmentation": self.segmentation,
            "item_sequence": self.item_sequence,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], jpeg: bytes) -> DepositRecord:
        return cls(
            uuid=str(d["uuid"]),
            created_at=datetime.fromisoformat(d["created_at"]),
            captured_at=datetime.fromisoformat(d["captured_at"]),
            camera=str(d["camera"]),
            session_id=d.get("session_id"),
            model=ModelId(**d["model"]),
            detections=tuple(Detection.from_dict(x) for x in d["detections"]),
            verdict=d["verdict"],
            reason=str(d["reason"]),
            jpeg=jpeg,
            segmentation=str(d.get("segmentation", "off")),
            item_sequence=int(d.get("item_sequence", 1)),
        )


@runtime_checkable
class Sink(Protocol):
    def put(self, record: DepositRecord) -> None:
        """Take ownership of `record`; durable on disk once this returns."""


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a new or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so a crash leaves either the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DirectorySink:
    """Each record as `<uuid>.jpg` + `<uuid>.json` in one directory.

    The JPEG is written first and the JSON last, so a `.json` file is the commit
    marker: a reader that sees it also finds the image.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)

    def put(self, record: DepositRecord) -> None:
        write_atomic(self.directory / f"{record.uuid}.jpg", record.jpeg)
        body = json.dumps(record.to_dict(), sort_keys=True).encode()
        write_atomic(self.directory / f"{record.uuid}.json", body)
        fsync_dir(self.directory)

    def records(self) -> list[DepositRecord]:
        """All committed records, oldest first (by creation time)."""
        out = []
        for meta in self.directory.glob("*.json"):
            d = json.loads(meta.read_text())
            out.append(DepositRecord.from_dict(d, meta.with_suffix(".jpg").read_bytes()))
        return sorted(out, key=lambda r: r.created_at)

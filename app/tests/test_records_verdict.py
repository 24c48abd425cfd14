"""Deposit records in the directory sink, and the accept/reject rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rvm_detector.config import VerdictConfig
from rvm_detector.records import DepositRecord, Detection, DirectorySink, ModelId, Sink
from rvm_detector.verdict import judge, unknown_classes

MODEL = ModelId("deposit-yolo11n", "1.0.0", "ab" * 32)


def record(**kw) -> DepositRecord:
    base = dict(
        camera="chute",
        model=MODEL,
        detections=(Detection("can", 0.91234567, (1.234, 2.0, 30.5, 40.25)),),
        verdict="accept",
        reason="can at confidence 0.91",
        jpeg=b"\xff\xd8jpeg-bytes",
    )
    return DepositRecord(**{**base, **kw})


def test_directory_sink_round_trip_and_leaves_no_temp_files(tmp_path: Path) -> None:
    sink = DirectorySink(tmp_path / "out")
    assert isinstance(sink, Sink)
    first, second = record(session_id="s1"), record(verdict="reject", reason="x")
    sink.put(first)
    sink.put(second)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == sorted(f"{r.uuid}.{ext}" for r in (first, second) for ext in ("jpg", "json"))
    meta = json.loads((tmp_path / "out" / f"{first.uuid}.json").read_text())
    assert meta == first.to_dict() and "jpeg" not in meta
    assert meta["detections"] == [
        {"class_name": "can", "confidence": 0.91235, "box": [1.23, 2.0, 30.5, 40.25]}
    ]
    back = sink.records()
    assert [r.uuid for r in back] == [first.uuid, second.uuid]
    assert back[0].jpeg == first.jpeg and back[0].session_id == "s1"


RULES = VerdictConfig(accept={"pet_bottle": 0.5, "can": 0.6}, max_items=1)


@pytest.mark.parametrize(
    ("detections", "verdict", "reason"),
    [
        ([], "reject", "no item detected"),
        ([("can", 0.9)], "accept", "can at confidence 0.90"),
        ([("can", 0.55)], "reject", "can confidence 0.55 is below 0.60"),
        ([("pet_bottle", 0.55)], "accept", "pet_bottle at confidence 0.55"),
        ([("other", 0.99)], "reject", "other is not an accepted item"),
        ([("can", 0.9), ("can", 0.8)], "reject", "2 items in view; at most 1 per deposit"),
    ],
)
def test_verdict_rules(detections, verdict: str, reason: str) -> None:
    dets = [Detection(c, s, (0, 0, 1, 1)) for c, s in detections]
    assert judge(dets, RULES) == (verdict, reason)


def test_rules_naming_classes_the_model_lacks() -> None:
    assert unknown_classes(RULES, ["pet_bottle", "can", "other"]) == []
    assert unknown_classes(RULES, ["bottle", "can"]) == ["pet_bottle"]

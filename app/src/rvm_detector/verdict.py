"""Accept or reject a deposit from its detections, by configurable class rules."""

from __future__ import annotations

from collections.abc import Sequence

from rvm_detector.config import VerdictConfig
from rvm_detector.records import Detection, Verdict


def judge(detections: Sequence[Detection], rules: VerdictConfig) -> tuple[Verdict, str]:
    """(verdict, reason); `detections` are sorted by confidence, highest first."""
    if not detections:
        return "reject", "no item detected"
    if len(detections) > rules.max_items:
        return "reject", (f"{len(detections)} items in view; at most {rules.max_items} per deposit")
    top = detections[0]
    minimum = rules.accept.get(top.class_name)
    if minimum is None:
        return "reject", f"{top.class_name} is not an accepted item"
    if top.confidence < minimum:
        return "reject", (
            f"{top.class_name} confidence {top.confidence:.2f} is below {minimum:.2f}"
        )
    return "accept", f"{top.class_name} at confidence {top.confidence:.2f}"


def unknown_classes(rules: VerdictConfig, model_classes: Sequence[str]) -> list[str]:
    """Classes the rules name that the model cannot produce (a config/model mismatch)."""
    return sorted(set(rules.accept) - set(model_classes))

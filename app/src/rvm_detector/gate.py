"""The gate a TensorRT engine passes before it serves: its detections match the ONNX model's.

`rvm-detector gate --onnx A --engine B --frames DIR` runs this app's own detect with both
models on the model's check frames and compares, frame by frame:

- every ONNX detection must have an engine detection of the same class whose box overlaps
  it at IoU >= min_iou (greedy, highest ONNX confidence first, each engine box used once);
- recall (ONNX detections matched / all ONNX detections) >= min_recall, and so must the
  engine's precision (engine detections matched / all engine detections): an engine that
  adds objects is as wrong as one that loses them.

The drift (mean IoU of the matches, mean and largest confidence change) is reported
whatever the verdict, so an INT8 engine's loss is measured, not guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rvm_detector.records import Detection

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes (0 when either is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class GateResult:
    passed: bool
    reason: str
    frames: int
    reference_detections: int
    candidate_detections: int
    matched: int
    recall: float
    precision: float
    mean_iou: float
    mean_confidence_delta: float
    max_confidence_delta: float
    min_iou: float
    min_recall: float
    # Up to 10 frames whose detections did not all match, for the operator to look at.
    frames_with_misses: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _FrameMatch:
    matched: int
    ious: list[float]
    confidence_deltas: list[float]


def match_frame(
    reference: Sequence[Detection], candidate: Sequence[Detection], min_iou: float
) -> _FrameMatch:
    """Greedy one-to-one matching of same-class boxes at IoU >= min_iou."""
    used: set[int] = set()
    ious: list[float] = []
    deltas: list[float] = []
    for ref in sorted(reference, key=lambda d: -d.confidence):
        best, best_iou = -1, min_iou
        for i, cand in enumerate(candidate):
            if i in used or cand.class_name != ref.class_name:
                continue
            v = iou(ref.box, cand.box)
            if v >= best_iou:
                best, best_iou = i, v
        if best >= 0:
            used.add(best)
            ious.append(best_iou)
            deltas.append(abs(candidate[best].confidence - ref.confidence))
    return _FrameMatch(len(used), ious, deltas)


def compare(
    frames: Sequence[tuple[str, Sequence[Detection], Sequence[Detection]]],
    min_iou: float = 0.9,
    min_recall: float = 0.98,
) -> GateResult:
    """Compare (frame name, ONNX detections, engine detections) over all check frames."""
    n_ref = n_cand = n_matched = 0
    ious: list[float] = []
    deltas: list[float] = []
    misses: list[str] = []
    for name, ref, cand in frames:
        m = match_frame(ref, cand, min_iou)
        n_ref, n_cand, n_matched = n_ref + len(ref), n_cand + len(cand), n_matched + m.matched
        ious += m.ious
        deltas += m.confidence_deltas
        if m.matched != len(ref) or m.matched != len(cand):
            misses.append(name)
    recall = n_matched / n_ref if n_ref else 0.0
    precision = n_matched / n_cand if n_cand else (1.0 if n_ref == 0 else 0.0)
    if not frames:
        reason = "no check frames: the gate proves nothing, so the engine is not used"
    elif n_ref == 0:
        reason = (
            f"the ONNX model finds nothing on the {len(frames)} check frames: the gate "
            "proves nothing, so the engine is not used (ship check frames with objects)"
        )
    elif recall < min_recall:
        reason = (
            f"recall {recall:.3f} < {min_recall}: the engine matches {n_matched} of the ONNX "
            f"model's {n_ref} detections (same class, IoU >= {min_iou})"
        )
    elif precision < min_recall:
        reason = (
            f"precision {precision:.3f} < {min_recall}: {n_cand - n_matched} of the engine's "
            f"{n_cand} detections have no ONNX counterpart"
        )
    else:
        reason = ""
    return GateResult(
        passed=not reason,
        reason=reason or f"recall {recall:.3f}, precision {precision:.3f} at IoU >= {min_iou}",
        frames=len(frames),
        reference_detections=n_ref,
        candidate_detections=n_cand,
        matched=n_matched,
        recall=round(recall, 4),
        precision=round(precision, 4),
        mean_iou=round(sum(ious) / len(ious), 4) if ious else 0.0,
        mean_confidence_delta=round(sum(deltas) / len(deltas), 4) if deltas else 0.0,
        max_confidence_delta=round(max(deltas), 4) if deltas else 0.0,
        min_iou=min_iou,
        min_recall=min_recall,
        frames_with_misses=misses[:10],
    )


def list_frames(directory: Path) -> list[Path]:
    """The check frames in `directory`, by name (a fixed order makes reports comparable)."""
    if not directory.is_dir():
        raise FileNotFoundError(f"check frames directory {directory} does not exist")
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)


def run_gate(
    onnx: Path,
    engine: Path,
    frames_dir: Path,
    min_iou: float = 0.9,
    min_recall: float = 0.98,
    conf: float = 0.25,
) -> GateResult:
    """Detect on every check frame with both models (ModelError when one cannot load)."""
    import cv2

    from rvm_detector.detector import load_detector

    paths = list_frames(frames_dir)
    reference = load_detector(onnx, "onnxruntime", conf)
    candidate = load_detector(engine, "tensorrt", conf)
    if reference.info.class_names != candidate.info.class_names:
        raise ValueError(
            f"the engine's classes {list(candidate.info.class_names)} are not the ONNX "
            f"model's {list(reference.info.class_names)}: it was built from another model"
        )
    candidate.warmup()
    rows = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"check frame {path} is not a readable image")
        rows.append((path.name, reference.detect(image), candidate.detect(image)))
    return compare(rows, min_iou, min_recall)

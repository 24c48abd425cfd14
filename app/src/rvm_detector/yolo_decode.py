"""Turning a YOLO detection head's raw output into final boxes, in numpy.

The head gives (1, 4 + num_classes, anchors): cx, cy, w, h in input pixels,
then one score per class. Like Ultralytics (single label per box): keep boxes
whose best class score is above `conf`, then class-aware greedy NMS at `iou`,
at most `max_det` boxes, highest score first.

Candidates are filtered by score before any box math. Right after an inference
every numpy call runs with cold caches (the model's weights have just streamed
through them) and costs tens of microseconds, so the usual case, a handful of
candidates, is finished in plain Python after three numpy calls; many
candidates (a low threshold) take the vectorised path.
"""

from __future__ import annotations

import numpy as np

# Boxes of different classes are shifted this far apart so one NMS pass never
# lets a box of one class suppress another class (Ultralytics uses the same).
_CLASS_OFFSET = 7680.0
# Up to this many candidates, NMS in plain Python beats numpy's per-call overhead.
SMALL = 48


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS on xyxy boxes; returns kept indices, highest score first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        ih = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        overlap = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.intp)


Candidate = tuple[float, int, float, float, float, float]  # score, class, x1, y1, x2, y2


def _nms_small(cands: list[Candidate], iou: float, max_det: int) -> list[Candidate]:
    """The same greedy, class-aware NMS on a few candidates, in plain Python."""
    cands.sort(key=lambda c: -c[0])  # stable: equal scores keep anchor order
    kept: list[Candidate] = []
    for c in cands:
        _, cls, x1, y1, x2, y2 = c
        area = (x2 - x1) * (y2 - y1)
        for k in kept:
            if k[1] != cls:
                continue
            iw = min(x2, k[4]) - max(x1, k[2])
            ih = min(y2, k[5]) - max(y1, k[3])
            if iw <= 0 or ih <= 0:
                continue
            inter = iw * ih
            if inter / (area + (k[4] - k[2]) * (k[5] - k[3]) - inter + 1e-9) > iou:
                break
        else:
            kept.append(c)
            if len(kept) == max_det:
                break
    return kept


def decode_candidates(output: np.ndarray, conf: float, iou: float, max_det: int) -> list[Candidate]:
    """(1, 4+nc, N) head output -> kept (score, class, x1, y1, x2, y2), best first."""
    pred = output[0]
    best = pred[4:].max(axis=0)
    idx = np.flatnonzero(best > conf)
    if idx.size == 0:
        return []
    if idx.size > SMALL:
        boxes, scores, classes = decode(output, conf, iou, max_det)
        return [
            (s, c, b[0], b[1], b[2], b[3])
            for b, s, c in zip(boxes.tolist(), scores.tolist(), classes.tolist(), strict=True)
        ]
    cands: list[Candidate] = []
    for col in pred[:, idx].T.tolist():
        cx, cy, hw, hh = col[0], col[1], col[2] / 2, col[3] / 2
        cls_scores = col[4:]
        score = max(cls_scores)
        cands.append((score, cls_scores.index(score), cx - hw, cy - hh, cx + hw, cy + hh))
    return _nms_small(cands, iou, max_det)


def decode(
    output: np.ndarray, conf: float, iou: float, max_det: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(1, 4+nc, N) head output -> (boxes xyxy float32 [k,4], scores [k], class ids [k])."""
    pred = output[0]
    scores_all = pred[4:]
    best = scores_all.max(axis=0)
    idx = np.flatnonzero(best > conf)
    if idx.size == 0:
        empty = np.empty((0,), np.float32)
        return np.empty((0, 4), np.float32), empty, np.empty((0,), np.intp)
    cls = scores_all[:, idx].argmax(axis=0)
    scores = best[idx]
    cx, cy, w, h = pred[0, idx], pred[1, idx], pred[2, idx] / 2, pred[3, idx] / 2
    boxes = np.stack([cx - w, cy - h, cx + w, cy + h], axis=1).astype(np.float32)
    keep = nms(boxes + (cls * _CLASS_OFFSET)[:, None], scores, iou)[:max_det]
    return boxes[keep], scores[keep], cls[keep]

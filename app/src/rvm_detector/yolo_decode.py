"""Turning a YOLO detection head's raw output into final boxes, in numpy.

The head gives (1, 4 + num_classes, anchors): cx, cy, w, h in input pixels,
then one score per class. Like Ultralytics (single label per box): keep boxes
whose best class score is above `conf`, then class-aware greedy NMS at `iou`,
at most `max_det` boxes, highest score first.
"""

from __future__ import annotations

import numpy as np

# Boxes of different classes are shifted this far apart so one NMS pass never
# lets a box of one class suppress another class (Ultralytics uses the same).
_CLASS_OFFSET = 7680.0


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

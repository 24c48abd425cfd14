"""Deposit frames with each item's exact mask, for training and measuring SAM2.

`render_with_masks(rng)` draws the same frame and boxes as `deposit_synth.scene.render`
for the same generator state (same calls, same order, so the YOLO data set's pixels and
boxes are untouched) and also returns, per item, the boolean mask of its *visible*
silhouette: the item's coverage (> 0.3, the threshold that defines its box) minus what
items pasted later cover. The test `test_sam2_data.py` checks frame and box identity
against `render`, so a change in deposit_synth that this module does not follow fails
there rather than silently training on different frames.

    sample(seed, split, index) -> (bgr uint8 HxWx3, [Box], [bool HxW mask])
"""

from __future__ import annotations

import cv2
import numpy as np
from deposit_synth.backgrounds import chute_background
from deposit_synth.items import Item
from deposit_synth.scene import (
    CLASS_WEIGHTS,
    FRAME_H,
    FRAME_W,
    ITEM_COUNT_WEIGHTS,
    LENGTH_RANGE,
    MAKERS,
    Box,
    _camera,
    _place,
    _pose,
)

# Splits of their own: the SAM2 frames never coincide with the detector's train/val.
SPLITS = ("sam2-train", "sam2-val")
DEFAULT_SEED = 20251212
COVERAGE_THRESHOLD = 0.3  # the box is the extent of coverage > 0.3 (scene._paste)


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    return np.random.default_rng([seed, 100 + SPLITS.index(split), index])


def _paste_with_mask(
    rng: np.random.Generator, img: np.ndarray, item: Item, cls: int, taken: list[Box]
) -> tuple[Box | None, np.ndarray]:
    """`scene._paste`, step for step, also returning the full-frame coverage."""
    fh, fw = img.shape[:2]
    m, size = _pose(rng, item, (fh, fw))
    warp = {"dsize": size, "flags": cv2.INTER_LINEAR, "borderValue": 0}
    colour = cv2.warpAffine(item.colour, m, **warp)
    alpha = cv2.warpAffine(item.alpha, m, **warp)
    coverage = cv2.warpAffine(item.coverage, m, **warp)
    x, y = _place(rng, size, (fh, fw), taken)
    pw, ph = min(size[0], fw - x), min(size[1], fh - y)
    colour, alpha, coverage = colour[:ph, :pw], alpha[:ph, :pw], coverage[:ph, :pw]

    dx, dy = rng.uniform(-10, 10, 2)
    shift = np.float32([[1, 0, x + dx], [0, 1, y + dy]])
    shadow = cv2.warpAffine(coverage, shift, (fw, fh), borderValue=0)
    shadow = cv2.GaussianBlur(shadow, (0, 0), float(rng.uniform(2, 7)))
    img *= 1 - rng.uniform(0.25, 0.6) * shadow[..., None]

    region = img[y : y + ph, x : x + pw]
    region[:] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
    full = np.zeros((fh, fw), bool)
    full[y : y + ph, x : x + pw] = coverage > COVERAGE_THRESHOLD
    ys, xs = np.nonzero(coverage > COVERAGE_THRESHOLD)
    if len(xs) == 0:
        return None, full
    box = Box(
        cls,
        float(x + xs.min()),
        float(y + ys.min()),
        float(x + xs.max() + 1),
        float(y + ys.max() + 1),
    )
    return box, full


def render_with_masks(
    rng: np.random.Generator, frame_w: int = FRAME_W, frame_h: int = FRAME_H
) -> tuple[np.ndarray, list[Box], list[np.ndarray]]:
    """`scene.render` plus one boolean mask (visible silhouette) per box."""
    img = chute_background(rng, frame_h, frame_w)
    boxes: list[Box] = []
    masks: list[np.ndarray] = []
    for _ in range(int(rng.choice(3, p=ITEM_COUNT_WEIGHTS))):
        cls = int(rng.choice(3, p=CLASS_WEIGHTS))
        lo, hi = LENGTH_RANGE[cls]
        length = rng.uniform(lo, hi) * frame_h * (0.8 if boxes else 1.0)
        box, full = _paste_with_mask(rng, img, MAKERS[cls](rng, length), cls, boxes)
        if box is not None:
            # What this item covers is no longer visible on the ones below it.
            masks = [m & ~full for m in masks]
            boxes.append(box)
            masks.append(full)
    return _camera(rng, img), boxes, masks


def sample(seed: int, split: str, index: int) -> tuple[np.ndarray, list[Box], list[np.ndarray]]:
    """One frame (BGR uint8), its boxes and masks: a pure function of its arguments."""
    return render_with_masks(sample_rng(seed, split, index))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union

"""One deposit frame: background, items posed and shadowed, then camera effects."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .backgrounds import chute_background
from .items import Item, can, other, pet_bottle

FRAME_W, FRAME_H = 320, 240
MAKERS = (pet_bottle, can, other)
# Long side of each class as a fraction of frame height: a 0.5-1.5 l bottle is longer
# than a can; foreign objects span both.
LENGTH_RANGE = ((0.45, 0.95), (0.3, 0.6), (0.3, 0.8))
CLASS_WEIGHTS = (0.4, 0.35, 0.25)
ITEM_COUNT_WEIGHTS = (0.07, 0.81, 0.12)  # 0, 1 or 2 items in a frame


@dataclass(frozen=True)
class Box:
    cls: int
    x1: float
    y1: float
    x2: float
    y2: float


def _pose(
    rng: np.random.Generator, item: Item, frame: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """An affine map for the item: rotation, slight squash, scaled to fit the frame."""
    h, w = item.coverage.shape
    fh, fw = frame
    # Items mostly slide along the chute, but a deposit can land any way round.
    angle = rng.normal(90, 20) if rng.random() < 0.6 else rng.uniform(0, 360)
    angle += 180 * (rng.random() < 0.5)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    m[:, :2] = m[:, :2] @ np.diag(rng.uniform(0.9, 1.1, 2))
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64) @ m.T
    span = corners.max(0) - corners.min(0)
    fit = min(1.0, 0.96 * fw / span[0], 0.96 * fh / span[1])
    m *= fit
    corners *= fit
    span = corners.max(0) - corners.min(0)
    size = (int(np.ceil(span[0])) + 2, int(np.ceil(span[1])) + 2)
    m[:, 2] -= corners.min(0) - 1
    return m, size


def _place(
    rng: np.random.Generator, size: tuple[int, int], frame: tuple[int, int], taken: list[Box]
) -> tuple[int, int]:
    """Top-left corner for a patch, avoiding heavy overlap with items already placed."""
    fh, fw = frame
    best, best_overlap = (0, 0), np.inf
    for _ in range(8):
        x = int(rng.integers(0, max(1, fw - size[0] + 1)))
        y = int(rng.integers(0, max(1, fh - size[1] + 1)))
        overlap = 0.0
        for b in taken:
            ix = max(0.0, min(x + size[0], b.x2) - max(x, b.x1))
            iy = max(0.0, min(y + size[1], b.y2) - max(y, b.y1))
            overlap = max(overlap, ix * iy / (size[0] * size[1]))
        if overlap < best_overlap:
            best, best_overlap = (x, y), overlap
        if overlap < 0.1:
            break
    return best


def _paste(
    rng: np.random.Generator, img: np.ndarray, item: Item, cls: int, taken: list[Box]
) -> Box | None:
    fh, fw = img.shape[:2]
    m, size = _pose(rng, item, (fh, fw))
    warp = {"dsize": size, "flags": cv2.INTER_LINEAR, "borderValue": 0}
    colour = cv2.warpAffine(item.colour, m, **warp)
    alpha = cv2.warpAffine(item.alpha, m, **warp)
    coverage = cv2.warpAffine(item.coverage, m, **warp)
    x, y = _place(rng, size, (fh, fw), taken)
    pw, ph = min(size[0], fw - x), min(size[1], fh - y)
    colour, alpha, coverage = colour[:ph, :pw], alpha[:ph, :pw], coverage[:ph, :pw]

    # Contact shadow: the silhouette, shifted away from the light and softened.
    dx, dy = rng.uniform(-10, 10, 2)
    shift = np.float32([[1, 0, x + dx], [0, 1, y + dy]])
    shadow = cv2.warpAffine(coverage, shift, (fw, fh), borderValue=0)
    shadow = cv2.GaussianBlur(shadow, (0, 0), float(rng.uniform(2, 7)))
    img *= 1 - rng.uniform(0.25, 0.6) * shadow[..., None]

    region = img[y : y + ph, x : x + pw]
    region[:] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
    ys, xs = np.nonzero(coverage > 0.3)
    if len(xs) == 0:
        return None
    return Box(
        cls,
        float(x + xs.min()),
        float(y + ys.min()),
        float(x + xs.max() + 1),
        float(y + ys.max() + 1),
    )


def _camera(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Uneven lighting, colour cast, defocus or motion blur and sensor noise."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (xx / w - 0.5) * np.cos(angle) + (yy / h - 0.5) * np.sin(angle)
    light = rng.uniform(0.55, 1.3) * (1 + rng.uniform(0, 0.6) * ramp)
    if rng.random() < 0.4:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        spot = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (rng.uniform(0.2, 0.6) * w) ** 2))
        light = light * (0.8 + 0.5 * spot)
    img = img * light[..., None] * rng.uniform(0.88, 1.12, 3).astype(np.float32)
    if rng.random() < 0.35:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 1.6)))
    if rng.random() < 0.2:
        k = int(rng.integers(3, 10))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        img = cv2.filter2D(img, -1, kernel / max(float(kernel.sum()), 1e-6))
    img = img + rng.normal(0, rng.uniform(1, 8), img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def render(
    rng: np.random.Generator, frame_w: int = FRAME_W, frame_h: int = FRAME_H
) -> tuple[np.ndarray, list[Box]]:
    """A BGR uint8 frame and the ground-truth boxes of the items in it."""
    img = chute_background(rng, frame_h, frame_w)
    boxes: list[Box] = []
    for _ in range(int(rng.choice(3, p=ITEM_COUNT_WEIGHTS))):
        cls = int(rng.choice(3, p=CLASS_WEIGHTS))
        lo, hi = LENGTH_RANGE[cls]
        # Two items share the chute, so each is drawn a little smaller.
        length = rng.uniform(lo, hi) * frame_h * (0.8 if boxes else 1.0)
        box = _paste(rng, img, MAKERS[cls](rng, length), cls, boxes)
        if box is not None:
            boxes.append(box)
    return _camera(rng, img), boxes

"""One deposit frame: background, items posed and shadowed, distractors, camera effects.

Boxes are the items' *visible* extent: an item partly covered by another item or a
hand, or partly outside the frame, is boxed where it can be seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .backgrounds import chute_background
from .items import DISTRACTORS, Item, can, other, pet_bottle

FRAME_W, FRAME_H = 320, 240
WIDE_FRAME = (384, 216)  # 16:9, like a 1280x720 camera
WIDE_SHARE = 0.2
MAKERS = (pet_bottle, can, other)
# Long side of each class as a fraction of frame height: a 0.5-1.5 l bottle is longer
# than a can; foreign objects span both. Wide, so that zoom and camera distance vary.
LENGTH_RANGE = ((0.3, 1.05), (0.18, 0.7), (0.2, 0.85))
CLASS_WEIGHTS = (0.4, 0.35, 0.25)
ITEM_COUNT_WEIGHTS = (0.07, 0.7, 0.17, 0.06)  # 0, 1, 2 or 3 items in a frame
MIN_VISIBLE = 0.3  # an item less visible than this (of its own area) is not labelled
MIN_BOX_PX = 4


@dataclass(frozen=True)
class Box:
    cls: int
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class _Placed:
    cls: int
    visible: np.ndarray  # HxW float32, this item's coverage minus what covers it
    area: float


def _pose(
    rng: np.random.Generator, item: Item, frame: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """A perspective map for the item: rotation, squash and tilt, scaled to fit the frame."""
    h, w = item.coverage.shape
    fh, fw = frame
    # Items mostly slide along the chute, but a deposit can land any way round.
    angle = rng.normal(90, 25) if rng.random() < 0.5 else rng.uniform(0, 360)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    m[:, :2] = m[:, :2] @ np.diag(rng.uniform(0.85, 1.15, 2))
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.hstack([src, np.ones((4, 1), np.float32)]) @ m.T
    # Perspective: the camera looks down at an angle, so each corner moves a little.
    span = dst.max(0) - dst.min(0)
    dst = dst + rng.uniform(-1, 1, (4, 2)) * rng.uniform(0, 0.12) * span
    span = dst.max(0) - dst.min(0)
    fit = min(1.0, 0.98 * fw / span[0], 0.98 * fh / span[1])
    dst = (dst - dst.min(0)) * fit + 1
    size = (int(np.ceil(dst[:, 0].max())) + 2, int(np.ceil(dst[:, 1].max())) + 2)
    return cv2.getPerspectiveTransform(src, dst.astype(np.float32)), size


def _place(
    rng: np.random.Generator, size: tuple[int, int], frame: tuple[int, int], taken: list[Box]
) -> tuple[int, int]:
    """Top-left corner for a patch; sometimes partly outside the frame or over another item."""
    fh, fw = frame
    if rng.random() < 0.12:  # cut by the frame edge
        return (
            int(rng.integers(-size[0] // 3, max(1, fw - 2 * size[0] // 3))),
            int(rng.integers(-size[1] // 3, max(1, fh - 2 * size[1] // 3))),
        )
    tolerate = 0.1 if rng.random() < 0.75 else 0.35  # sometimes items pile up
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
        if overlap < tolerate:
            break
    return best


def _paste(
    rng: np.random.Generator,
    img: np.ndarray,
    item: Item,
    taken: list[Box],
    at: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Composite the item into img; returns its coverage and alpha in frame coordinates."""
    fh, fw = img.shape[:2]
    m, size = _pose(rng, item, (fh, fw))
    warp = {"dsize": size, "flags": cv2.INTER_LINEAR, "borderValue": 0}
    colour = cv2.warpPerspective(item.colour, m, **warp)
    alpha = cv2.warpPerspective(item.alpha, m, **warp)
    coverage = cv2.warpPerspective(item.coverage, m, **warp)
    x, y = at if at is not None else _place(rng, size, (fh, fw), taken)
    # The part of the patch inside the frame.
    px0, py0 = max(0, -x), max(0, -y)
    fx0, fy0 = max(0, x), max(0, y)
    pw, ph = min(size[0] - px0, fw - fx0), min(size[1] - py0, fh - fy0)
    full = np.zeros((fh, fw), np.float32)
    opacity = np.zeros((fh, fw), np.float32)
    if pw <= 0 or ph <= 0:
        return full, opacity
    colour = colour[py0 : py0 + ph, px0 : px0 + pw]
    alpha = alpha[py0 : py0 + ph, px0 : px0 + pw]
    cov = coverage[py0 : py0 + ph, px0 : px0 + pw]
    full[fy0 : fy0 + ph, fx0 : fx0 + pw] = cov
    opacity[fy0 : fy0 + ph, fx0 : fx0 + pw] = alpha

    # Contact shadow: the silhouette, shifted away from the light and softened.
    if rng.random() < 0.85:
        dx, dy = rng.uniform(-12, 12, 2)
        shift = np.float32([[1, 0, dx], [0, 1, dy]])
        shadow = cv2.warpAffine(full, shift, (fw, fh), borderValue=0)
        if rng.random() < 0.8:
            shadow = cv2.GaussianBlur(shadow, (0, 0), float(rng.uniform(1, 8)))
        img *= 1 - rng.uniform(0.2, 0.65) * shadow[..., None]

    region = img[fy0 : fy0 + ph, fx0 : fx0 + pw]
    region[:] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
    return full, opacity


def _occlude(placed: list[_Placed], opacity: np.ndarray) -> None:
    """What is drawn over an item hides it as far as it is opaque (clear PET hides little)."""
    for p in placed:
        p.visible *= 1 - np.clip(opacity, 0, 1)


def _box_of(p: _Placed) -> Box | None:
    ys, xs = np.nonzero(p.visible > 0.3)
    if len(xs) == 0 or len(xs) < MIN_VISIBLE * p.area:
        return None
    x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    if min(x2 - x1, y2 - y1) < MIN_BOX_PX:
        return None
    return Box(p.cls, float(x1), float(y1), float(x2), float(y2))


def _disc_kernel(radius: float) -> np.ndarray:
    r = max(1, int(np.ceil(radius)))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    k = (xx**2 + yy**2 <= radius**2 + 0.5).astype(np.float32)
    return k / k.sum()


def _camera(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Lighting, colour cast, exposure, defocus or motion blur, noise and JPEG artefacts."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (xx / w - 0.5) * np.cos(angle) + (yy / h - 0.5) * np.sin(angle)
    light = rng.uniform(0.45, 1.4) * (1 + rng.uniform(0, 0.8) * ramp)
    if rng.random() < 0.4:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        spot = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (rng.uniform(0.2, 0.6) * w) ** 2))
        light = light * (0.8 + 0.6 * spot)
    if rng.random() < 0.3:  # vignetting
        r2 = ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) * 4
        light = light * (1 - rng.uniform(0.1, 0.5) * r2)
    cast = rng.uniform(0.8, 1.2, 3) if rng.random() < 0.7 else rng.uniform(0.6, 1.4, 3)
    img = img * light[..., None] * cast.astype(np.float32)
    if rng.random() < 0.3:  # contrast and gamma of the camera's processing
        img = np.clip(img, 0, 255)
        img = 255 * (img / 255) ** rng.uniform(0.6, 1.6)
        img = (img - 128) * rng.uniform(0.7, 1.3) + 128
    if rng.random() < 0.2:  # washed-out or oversaturated colour
        grey = img.mean(-1, keepdims=True)
        img = grey + (img - grey) * rng.uniform(0.2, 1.6)
    blur = rng.random()
    if blur < 0.25:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 2.0)))
    elif blur < 0.35:
        img = cv2.filter2D(img, -1, _disc_kernel(rng.uniform(1.0, 3.0)))
    elif blur < 0.55:
        k = int(rng.integers(3, 14))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        img = cv2.filter2D(img, -1, kernel / max(float(kernel.sum()), 1e-6))
    if rng.random() < 0.15:  # a low-resolution sensor, scaled up
        f = rng.uniform(0.35, 0.7)
        small = cv2.resize(img, (max(8, int(w * f)), max(8, int(h * f))), cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    sigma = rng.uniform(0.5, 12) if rng.random() < 0.9 else rng.uniform(12, 25)
    noise = rng.normal(0, sigma, img.shape if rng.random() < 0.7 else (h, w, 1))
    img = np.clip(img + noise.astype(np.float32), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:  # a camera or a link that compresses hard
        q = int(rng.integers(20, 90))
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return img


def frame_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height): mostly the 4:3 held-out size, sometimes a 16:9 camera's."""
    return WIDE_FRAME if rng.random() < WIDE_SHARE else (FRAME_W, FRAME_H)


def render(
    rng: np.random.Generator, frame_w: int | None = None, frame_h: int | None = None
) -> tuple[np.ndarray, list[Box]]:
    """A BGR uint8 frame and the ground-truth boxes of the items in it."""
    img, boxes, _ = render_with_masks(rng, frame_w, frame_h)
    return img, boxes


def render_with_masks(
    rng: np.random.Generator, frame_w: int | None = None, frame_h: int | None = None
) -> tuple[np.ndarray, list[Box], list[np.ndarray]]:
    """`render`, plus each box's item mask: its visible silhouette (bool HxW).

    The mask is what defines the box (visible coverage > 0.3), so masks and boxes agree
    by construction; SAM2's training and evaluation data (training/sam2_data.py) use it.
    """
    if frame_w is None or frame_h is None:
        frame_w, frame_h = frame_size(rng)
    img = chute_background(rng, frame_h, frame_w)
    placed: list[_Placed] = []
    taken: list[Box] = []
    for _ in range(int(rng.choice(len(ITEM_COUNT_WEIGHTS), p=ITEM_COUNT_WEIGHTS))):
        cls = int(rng.choice(3, p=CLASS_WEIGHTS))
        lo, hi = LENGTH_RANGE[cls]
        # Several items share the chute, so each is drawn a little smaller.
        length = rng.uniform(lo, hi) * frame_h * (0.8 if placed else 1.0)
        cover, opacity = _paste(rng, img, MAKERS[cls](rng, length), taken)
        _occlude(placed, opacity)
        area = float((cover > 0.3).sum())
        placed.append(_Placed(cls, cover, area))
        ys, xs = np.nonzero(cover > 0.3)
        if len(xs):
            taken.append(Box(cls, xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    # Distractors: a hand reaching in, a receipt, a scrap of film. Never labelled.
    for _ in range(int(rng.choice(3, p=(0.72, 0.23, 0.05)))):
        maker = DISTRACTORS[int(rng.integers(len(DISTRACTORS)))]
        length = rng.uniform(0.2, 0.7) * frame_h
        at = None
        if taken and rng.random() < 0.6:  # over an item, covering part of it
            b = taken[int(rng.integers(len(taken)))]
            at = (
                int(rng.uniform(b.x1 - 0.6 * length, b.x2 - 0.2 * length)),
                int(rng.uniform(b.y1 - 0.6 * length, b.y2 - 0.2 * length)),
            )
        _, opacity = _paste(rng, img, maker(rng, length), taken, at)
        _occlude(placed, opacity)
    kept = [(b, p.visible > 0.3) for b, p in ((_box_of(p), p) for p in placed) if b is not None]
    return _camera(rng, img), [b for b, _ in kept], [m for _, m in kept]

"""Chute backgrounds: brushed metal, moulded plastic and painted gradients, with wear."""

from __future__ import annotations

import cv2
import numpy as np


def _low_freq_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a coarse random grid upsampled with cubic interpolation."""
    grid = rng.uniform(-1.0, 1.0, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _brushed_metal(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = rng.uniform(90, 210)
    tint = rng.uniform(-8, 8, 3)
    vertical = rng.random() < 0.5
    # Streaks come from noise smeared along one axis, like a brushed stainless sheet.
    rows, cols = (w, h) if vertical else (h, w)
    streaks = rng.normal(0.0, 1.0, (rows, cols)).astype(np.float32)
    streaks = cv2.blur(streaks, (int(rng.integers(15, 60)), 1))
    streaks = streaks.T if vertical else streaks
    amp = rng.uniform(20, 45)
    gray = base + amp * streaks + 18 * _low_freq_noise(rng, h, w, 3)
    return np.clip(gray[..., None] + tint, 0, 255)


def _plastic(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    palette = np.array(
        [
            [40, 40, 40],
            [70, 70, 75],
            [150, 150, 150],
            [120, 80, 40],
            [60, 110, 60],
            [170, 190, 200],
        ],
        dtype=np.float32,
    )
    colour = palette[rng.integers(len(palette))] + rng.uniform(-15, 15, 3)
    mottling = 14 * _low_freq_noise(rng, h, w, 5) + rng.normal(0, 3, (h, w))
    return np.clip(colour + mottling[..., None], 0, 255)


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c0 = rng.uniform(30, 200, 3)
    c1 = np.clip(c0 + rng.uniform(-70, 70, 3), 0, 255)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    return c0 * (1 - t[..., None]) + c1 * t[..., None]


def _add_chute_walls(rng: np.random.Generator, img: np.ndarray) -> None:
    """Darker side walls with a bright edge: the chute's guide rails."""
    h, w = img.shape[:2]
    vertical = rng.random() < 0.5
    span = w if vertical else h
    for side in (0, 1):
        if rng.random() < 0.35:
            continue
        width = int(rng.uniform(0.04, 0.14) * span)
        shade = rng.uniform(0.45, 0.8)
        sl = slice(0, width) if side == 0 else slice(span - width, span)
        edge = width if side == 0 else span - width - 1
        if vertical:
            img[:, sl] *= shade
            img[:, max(0, min(edge, w - 1))] = rng.uniform(170, 240)
        else:
            img[sl, :] *= shade
            img[max(0, min(edge, h - 1)), :] = rng.uniform(170, 240)


def _add_wear(rng: np.random.Generator, img: np.ndarray) -> None:
    """Scratches, seams, rivets and stains: clutter that is not a deposit."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(0, 6))):
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(p0[0] + rng.normal(0, 40)), int(p0[1] + rng.normal(0, 40)))
        val = float(rng.uniform(-50, 50))
        cv2.line(img, p0, p1, tuple(float(c) + val for c in img[p0[1], p0[0]]), 1, cv2.LINE_AA)
    if rng.random() < 0.4:
        y = int(rng.integers(0, h))
        cv2.line(img, (0, y), (w - 1, y), (float(rng.uniform(20, 80)),) * 3, 1, cv2.LINE_AA)
    if rng.random() < 0.3:
        x0, y0 = int(rng.integers(4, 20)), int(rng.integers(4, 20))
        step = int(rng.integers(30, 70))
        for x in range(x0, w, step):
            for y in (y0, h - y0):
                cv2.circle(img, (x, y), 2, (float(rng.uniform(160, 230)),) * 3, -1, cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 3))):
        stain = np.zeros((h, w), np.float32)
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(5, 40)), int(rng.integers(5, 25)))
        cv2.ellipse(stain, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        stain = cv2.GaussianBlur(stain, (0, 0), 6)
        img *= 1 - rng.uniform(0.1, 0.35) * stain[..., None]


def _add_shadow(rng: np.random.Generator, img: np.ndarray) -> None:
    """A soft polygonal shadow cast by the machine's housing."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.float32)
    pts = np.stack([rng.uniform(-0.2, 1.2, 4) * w, rng.uniform(-0.2, 1.2, 4) * h], axis=1)
    cv2.fillPoly(mask, [pts.astype(np.int32)], 1.0)
    mask = cv2.GaussianBlur(mask, (0, 0), float(rng.uniform(5, 25)))
    img *= 1 - rng.uniform(0.2, 0.5) * mask[..., None]


def chute_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An empty chute as float32 BGR in [0, 255]."""
    kind = rng.choice(3, p=[0.45, 0.35, 0.2])
    maker = (_brushed_metal, _plastic, _gradient)[int(kind)]
    img = np.ascontiguousarray(maker(rng, h, w), dtype=np.float32)
    _add_chute_walls(rng, img)
    _add_wear(rng, img)
    if rng.random() < 0.5:
        _add_shadow(rng, img)
    return img

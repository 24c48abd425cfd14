"""Chute backgrounds: brushed metal, moulded plastic, painted gradients, plain colours and
belts, with rails, seams, perforations, slats, rollers, stickers and wear, or none of it."""

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


def _plain(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = np.empty((h, w, 3), np.float32)
    img[:] = rng.uniform(10, 245, 3) if rng.random() < 0.5 else rng.uniform(20, 230)
    return img + rng.normal(0, rng.uniform(0, 4), (h, w, 1)).astype(np.float32)


def _belt(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A rubber belt or conveyor: dark, with a fine texture and periodic slats."""
    img = np.full((h, w, 3), rng.uniform(20, 90), np.float32)
    img += rng.normal(0, rng.uniform(2, 10), (h, w, 1)).astype(np.float32)
    step = int(rng.integers(12, 60))
    vertical = rng.random() < 0.5
    bright = float(rng.uniform(-30, 50))
    for pos in range(int(rng.integers(0, step)), w if vertical else h, step):
        thick = int(rng.integers(1, max(2, step // 3)))
        if vertical:
            img[:, pos : pos + thick] += bright
        else:
            img[pos : pos + thick] += bright
    return img


def _add_rails(rng: np.random.Generator, img: np.ndarray) -> None:
    """Guide rails or bars across the chute: bright tubes with a shaded side."""
    h, w = img.shape[:2]
    vertical = rng.random() < 0.5
    span = w if vertical else h
    for _ in range(int(rng.integers(1, 4))):
        pos = int(rng.integers(0, span))
        width = int(rng.integers(3, max(4, span // 12)))
        tone = float(rng.uniform(60, 240))
        profile = tone * (0.6 + 0.4 * np.sin(np.linspace(0, np.pi, width)))
        sl = slice(pos, min(span, pos + width))
        n = sl.stop - sl.start
        if n <= 0:
            continue
        if vertical:
            img[:, sl] = profile[None, :n, None]
        else:
            img[sl, :] = profile[:n, None, None]


def _add_seams(rng: np.random.Generator, img: np.ndarray) -> None:
    """Panel seams: a dark groove with a bright lip, in either or both directions."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(1, 4))):
        dark, light = float(rng.uniform(0, 60)), float(rng.uniform(150, 255))
        if rng.random() < 0.5:
            x = int(rng.integers(1, w - 1))
            img[:, x] = dark
            img[:, x + 1] = light
        else:
            y = int(rng.integers(1, h - 1))
            img[y] = dark
            img[y + 1] = light


def _add_perforation(rng: np.random.Generator, img: np.ndarray) -> None:
    """A perforated or dimpled sheet: a regular grid of holes."""
    h, w = img.shape[:2]
    step = int(rng.integers(6, 22))
    r = max(1, int(step * rng.uniform(0.15, 0.35)))
    tone = (float(rng.uniform(0, 70)),) * 3
    x0, y0 = int(rng.integers(0, step)), int(rng.integers(0, step))
    stagger = rng.random() < 0.5
    for row, y in enumerate(range(y0, h, step)):
        off = step // 2 if stagger and row % 2 else 0
        for x in range(x0 + off, w, step):
            cv2.circle(img, (x, y), r, tone, -1, cv2.LINE_AA)


def _add_stickers(rng: np.random.Generator, img: np.ndarray) -> None:
    """Warning stickers, arrows and printed text on the chute."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(1, 4))):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        sw, sh = int(rng.integers(8, 50)), int(rng.integers(6, 30))
        colour = rng.uniform(0, 255, 3).tolist()
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + sw, y + sh), colour, -1)
        else:
            tri = np.int32([[x, y + sh], [x + sw // 2, y], [x + sw, y + sh]])
            cv2.fillPoly(img, [tri], colour, cv2.LINE_AA)
        ink = (float(rng.uniform(0, 255)),) * 3
        for ty in range(y + 2, y + sh - 1, 3):
            cv2.line(img, (x + 2, ty), (x + int(rng.integers(3, max(4, sw))), ty), ink, 1)


def chute_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An empty chute as float32 BGR in [0, 255]: plain, or cluttered with structure."""
    kind = rng.choice(5, p=[0.3, 0.2, 0.15, 0.2, 0.15])
    maker = (_brushed_metal, _plastic, _gradient, _plain, _belt)[int(kind)]
    img = np.ascontiguousarray(maker(rng, h, w), dtype=np.float32)
    if rng.random() < 0.15:  # a plain chute: nothing but the surface
        return img
    if rng.random() < 0.6:
        _add_chute_walls(rng, img)
    for add, p in (
        (_add_rails, 0.3),
        (_add_seams, 0.35),
        (_add_perforation, 0.15),
        (_add_stickers, 0.2),
    ):
        if rng.random() < p:
            add(rng, img)
    _add_wear(rng, img)
    if rng.random() < 0.5:
        _add_shadow(rng, img)
    return img

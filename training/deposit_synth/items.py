"""Deposit items drawn upright (long axis vertical) on their own small canvas.

Each maker returns an `Item`: colour, compositing alpha and coverage. Coverage is the
item's silhouette; it defines the ground-truth box even where the item is see-through
(a clear PET bottle has low alpha but is still all bottle).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Item:
    colour: np.ndarray  # float32 HxWx3 BGR in [0, 255]
    alpha: np.ndarray  # float32 HxW in [0, 1]
    coverage: np.ndarray  # float32 HxW in [0, 1]


def _random_colour(rng: np.random.Generator, lo: float = 20, hi: float = 235) -> np.ndarray:
    return rng.uniform(lo, hi, 3).astype(np.float32)


def _saturated_colour(rng: np.random.Generator) -> np.ndarray:
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(150, 256), rng.integers(110, 256)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _profile_canvas(half_widths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of a body of revolution given its half-width per row, plus x in [-1, 1]."""
    cx = (width - 1) / 2
    xs = np.arange(width, dtype=np.float32) - cx
    hw = half_widths[:, None]
    coverage = np.clip(hw - np.abs(xs)[None, :] + 0.5, 0, 1).astype(np.float32)
    xn = np.clip(xs[None, :] / np.maximum(hw, 1e-3), -1, 1).astype(np.float32)
    return coverage, xn


def _cylinder_shade(rng: np.random.Generator, xn: np.ndarray, gloss: float) -> np.ndarray:
    """Lambert-like falloff towards the edges plus a specular stripe."""
    centre = rng.uniform(-0.65, 0.65)
    width = rng.uniform(0.08, 0.2)
    diffuse = 0.45 + 0.55 * np.sqrt(np.clip(1 - xn**2, 0, 1))
    specular = gloss * np.exp(-(((xn - centre) / width) ** 2))
    return (diffuse + specular).astype(np.float32)


def _print_design(rng: np.random.Generator, h: int, w: int, base: np.ndarray) -> np.ndarray:
    """Label or can artwork: bands, a logo blob and rows of 'text'."""
    art = np.empty((h, w, 3), np.float32)
    art[:] = base
    for _ in range(int(rng.integers(0, 4))):
        y0 = int(rng.integers(0, max(h, 1)))
        cv2.rectangle(
            art,
            (0, y0),
            (w, y0 + int(rng.integers(2, max(3, h // 4)))),
            _saturated_colour(rng).tolist(),
            -1,
        )
    if rng.random() < 0.7 and min(h, w) > 6:
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        radius = int(rng.integers(2, max(3, min(h, w) // 2)))
        cv2.circle(art, centre, radius, _saturated_colour(rng).tolist(), -1, cv2.LINE_AA)
    text = _random_colour(rng, 0, 255).tolist()
    for _ in range(int(rng.integers(0, 6))):
        x0, y0 = int(rng.integers(0, max(w, 1))), int(rng.integers(0, max(h, 1)))
        cv2.rectangle(art, (x0, y0), (x0 + int(rng.integers(3, max(4, w // 2))), y0 + 1), text, -1)
    return art


def pet_bottle(rng: np.random.Generator, length: float) -> Item:
    aspect = rng.uniform(2.4, 4.2)
    body = length / aspect / 2
    neck = body * rng.uniform(0.28, 0.42)
    cap = neck * rng.uniform(1.1, 1.3)
    cap_len = length * rng.uniform(0.05, 0.08)
    neck_len = length * rng.uniform(0.05, 0.12)
    shoulder_len = length * rng.uniform(0.1, 0.24)
    h, w = round(length), int(np.ceil(2 * body)) + 3
    y = np.arange(h, dtype=np.float32) + 0.5
    t = np.clip((y - cap_len - neck_len) / shoulder_len, 0, 1)
    half = neck + (body - neck) * (0.5 - 0.5 * np.cos(np.pi * t))
    half = np.where(y < cap_len, cap, half)
    foot = np.clip((h - y) / (0.04 * length), 0, 1)
    half = half * (0.85 + 0.15 * np.sqrt(foot))
    coverage, xn = _profile_canvas(half, w)

    tints = [(215, 210, 200), (150, 200, 140), (210, 170, 120), (60, 110, 150), (90, 150, 80)]
    tint = np.float32(tints[rng.integers(len(tints))]) + rng.uniform(-15, 15, 3).astype(np.float32)
    clear = rng.random() < 0.55
    base_alpha = rng.uniform(0.3, 0.5) if clear else rng.uniform(0.55, 0.85)
    shade = _cylinder_shade(rng, xn, gloss=rng.uniform(0.4, 1.0))
    colour = tint * shade[..., None]
    # Plastic looks denser at grazing angles, so a clear bottle shows its outline.
    alpha = base_alpha + (1 - base_alpha) * 0.7 * np.abs(xn) ** 4
    alpha = np.maximum(alpha, np.clip(shade - 1.0, 0, 1))

    rows = y[:, None]
    cap_rows = rows < cap_len
    cap_colour = _random_colour(rng) if rng.random() < 0.3 else _saturated_colour(rng)
    ridges = 0.85 + 0.15 * np.cos(np.arange(w, dtype=np.float32) * 1.7)[None, :]
    colour = np.where(cap_rows[..., None], cap_colour * (shade * ridges)[..., None], colour)
    alpha = np.where(cap_rows, 1.0, alpha)

    body_top = cap_len + neck_len + shoulder_len
    if rng.random() < 0.5:
        ribs = (np.sin(rows * rng.uniform(0.5, 1.2)) > 0.8) & (
            rows > body_top + 0.45 * (h - body_top)
        )
        colour = np.where(ribs[..., None], colour * 0.8, colour)
        alpha = np.where(ribs, np.minimum(alpha + 0.2, 1.0), alpha)
    if rng.random() < 0.85:
        label_h = int((h - body_top) * rng.uniform(0.25, 0.55))
        y0 = int(body_top + rng.uniform(0.05, 0.4) * (h - body_top))
        label = _print_design(rng, label_h, w, _random_colour(rng))
        sl = slice(y0, y0 + label_h)
        colour[sl] = label * shade[sl, :, None]
        alpha[sl] = 1.0
    return Item(colour.astype(np.float32), (alpha * coverage).astype(np.float32), coverage)


def can(rng: np.random.Generator, length: float) -> Item:
    aspect = rng.uniform(1.55, 2.7)
    body = length / aspect / 2
    lid = body * rng.uniform(0.15, 0.45) if rng.random() < 0.35 else 0.0
    h, w = round(length), int(np.ceil(2 * body)) + 3
    y = np.arange(h, dtype=np.float32) + 0.5
    top_taper = np.clip((y - lid) / (0.07 * length), 0, 1)
    bottom_taper = np.clip((h - y) / (0.04 * length), 0, 1)
    half = body * (0.84 + 0.16 * top_taper) * (0.9 + 0.1 * bottom_taper)
    half = np.where(y < lid, 0.0, half)
    coverage, xn = _profile_canvas(half, w)

    shade = _cylinder_shade(rng, xn, gloss=rng.uniform(0.6, 1.4))
    silver = np.float32([rng.uniform(170, 225)] * 3)
    art = _print_design(rng, h, w, silver if rng.random() < 0.2 else _saturated_colour(rng))
    rows = y[:, None]
    rims = (rows < lid + 0.06 * length) | (rows > h - 0.05 * length)
    colour = np.where(rims[..., None], silver, art) * shade[..., None]
    # Metal is opaque; the tapered shoulder reads as a darker line below the rim.
    colour = np.where((np.abs(rows - lid - 0.06 * length) < 1.0)[..., None], colour * 0.6, colour)

    if lid > 1.0:
        lid_mask = np.zeros((h, w), np.float32)
        cx = (w - 1) / 2
        axes = (max(1, int(body * 0.84)), max(1, int(lid)))
        cv2.ellipse(lid_mask, (int(cx), int(lid)), axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
        lid_colour = np.empty((h, w, 3), np.float32)
        lid_colour[:] = silver * 0.95
        tab = (int(cx), int(lid * rng.uniform(0.6, 1.2)))
        cv2.ellipse(
            lid_colour,
            tab,
            (max(1, axes[0] // 4), max(1, axes[1] // 3)),
            0,
            0,
            360,
            (60, 60, 60),
            -1,
        )
        colour = colour * (1 - lid_mask[..., None]) + lid_colour * lid_mask[..., None]
        coverage = np.maximum(coverage, lid_mask)
    return Item(colour.astype(np.float32), coverage.copy(), coverage)


def _cup(rng: np.random.Generator, length: float) -> Item:
    top = length / rng.uniform(0.9, 1.5) / 2
    bottom = top * rng.uniform(0.6, 0.8)
    h, w = round(length), int(np.ceil(2 * top)) + 3
    y = np.arange(h, dtype=np.float32) + 0.5
    coverage, xn = _profile_canvas(top + (bottom - top) * y / h, w)
    base = np.float32([235, 235, 235]) if rng.random() < 0.5 else _random_colour(rng)
    colour = (
        _print_design(rng, h, w, base) * (0.75 + 0.25 * _cylinder_shade(rng, xn, 0.2))[..., None]
    )
    rim_h = max(2, int(top * rng.uniform(0.2, 0.4)))
    rim = np.zeros((h, w), np.float32)
    cv2.ellipse(rim, (int((w - 1) / 2), rim_h), (int(top), rim_h), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    colour = np.where((rim > 0.5)[..., None], base * rng.uniform(0.3, 0.6), colour)
    coverage = np.maximum(coverage * (y[:, None] > rim_h), rim)
    return Item(colour.astype(np.float32), coverage.copy(), coverage)


def _box(rng: np.random.Generator, length: float) -> Item:
    fh = length
    fw = length / rng.uniform(1.0, 2.2)
    depth = fw * rng.uniform(0.0, 0.35)
    h, w = round(fh + depth), round(fw + depth) + 2
    base = np.float32([60, 110, 160]) if rng.random() < 0.4 else _random_colour(rng)
    colour = np.empty((h, w, 3), np.float32)
    colour[:] = base
    coverage = np.zeros((h, w), np.float32)
    d = int(depth)
    front = np.int32([[0, d], [int(fw), d], [int(fw), h - 1], [0, h - 1]])
    top = np.int32([[0, d], [d, 0], [w - 1, 0], [int(fw), d]])
    side = np.int32([[int(fw), d], [w - 1, 0], [w - 1, h - 1 - d], [int(fw), h - 1]])
    for poly, gain in ((top, 1.2), (side, 0.7)):
        if d > 0:
            cv2.fillPoly(colour, [poly], (base * gain).tolist(), cv2.LINE_AA)
            cv2.fillPoly(coverage, [poly], 1.0, cv2.LINE_AA)
    art = _print_design(rng, h - d, int(fw), base)
    colour[d:, : int(fw)] = art
    cv2.fillPoly(coverage, [front], 1.0, cv2.LINE_AA)
    return Item(colour, coverage.copy(), coverage)


def _bag(rng: np.random.Generator, length: float) -> Item:
    n = int(rng.integers(10, 20))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = 1 + 0.3 * rng.normal(0, 1, n)
    radii = np.clip(
        np.convolve(np.concatenate([radii[-1:], radii, radii[:1]]), [0.25, 0.5, 0.25], "valid"),
        0.5,
        1.5,
    )
    ry, rx = length / 2, length / 2 / rng.uniform(1.0, 1.8)
    h, w = round(length * 1.2), round(2 * rx * 1.2)
    pts = np.stack(
        [w / 2 + rx * radii * np.cos(angles), h / 2 + ry * radii * np.sin(angles)], axis=1
    )
    coverage = np.zeros((h, w), np.float32)
    cv2.fillPoly(coverage, [np.clip(pts, 0, [w - 1, h - 1]).astype(np.int32)], 1.0, cv2.LINE_AA)
    grid = rng.uniform(0.5, 1.3, (6, 6)).astype(np.float32)
    crumple = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    colour = _random_colour(rng)[None, None, :] * crumple[..., None]
    alpha = coverage * rng.uniform(0.75, 1.0)
    return Item(colour.astype(np.float32), alpha.astype(np.float32), coverage)


def _ball(rng: np.random.Generator, length: float) -> Item:
    size = round(length)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    r = np.sqrt(xx**2 + yy**2) / (size / 2)
    coverage = np.clip((1 - r) * size / 2 + 0.5, 0, 1).astype(np.float32)
    hx, hy = rng.uniform(-0.4, 0.4, 2)
    highlight = np.exp(-(((xx / (size / 2) - hx) ** 2 + (yy / (size / 2) - hy) ** 2) / 0.05))
    shade = 0.5 + 0.5 * np.sqrt(np.clip(1 - r**2, 0, 1)) + 0.6 * highlight
    colour = _saturated_colour(rng)[None, None, :] * shade[..., None]
    return Item(colour.astype(np.float32), coverage.copy(), coverage)


def other(rng: np.random.Generator, length: float) -> Item:
    """A foreign object the machine must refuse: cup, carton, bag or ball."""
    makers = (_cup, _box, _bag, _ball)
    scales = (0.7, 1.0, 1.0, 0.6)
    kind = int(rng.integers(len(makers)))
    return makers[kind](rng, length * scales[kind])

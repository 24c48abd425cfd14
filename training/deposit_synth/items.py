"""Deposit items drawn upright (long axis vertical) on their own small canvas.

Each maker returns an `Item`: colour, compositing alpha and coverage. Coverage is the
item's silhouette; it defines the ground-truth box even where the item is see-through
(a clear PET bottle has low alpha but is still all bottle).

Domain randomisation: what makes a bottle a bottle (a body of revolution with a neck
and usually a cap) stays; everything a renderer happens to choose is drawn from wide
ranges, so the detector cannot key on it. Proportions, neck and shoulder shapes, label
or bare body, clear or coloured plastic, printed or plain cans, and the shading style
itself (smooth, flat, banded, with or without an outline) all vary.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SHADING_STYLES = ("smooth", "flat", "banded", "outlined")
SHADING_WEIGHTS = (0.45, 0.2, 0.15, 0.2)


@dataclass
class Item:
    colour: np.ndarray  # float32 HxWx3 BGR in [0, 255]
    alpha: np.ndarray  # float32 HxW in [0, 1]
    coverage: np.ndarray  # float32 HxW in [0, 1]


def _random_colour(rng: np.random.Generator, lo: float = 20, hi: float = 235) -> np.ndarray:
    return rng.uniform(lo, hi, 3).astype(np.float32)


def _saturated_colour(rng: np.random.Generator) -> np.ndarray:
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(90, 256), rng.integers(80, 256)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _any_colour(rng: np.random.Generator) -> np.ndarray:
    return _saturated_colour(rng) if rng.random() < 0.6 else _random_colour(rng, 5, 250)


def _shading_style(rng: np.random.Generator) -> str:
    return SHADING_STYLES[int(rng.choice(len(SHADING_STYLES), p=SHADING_WEIGHTS))]


def _profile_canvas(half_widths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of a body of revolution given its half-width per row, plus x in [-1, 1]."""
    cx = (width - 1) / 2
    xs = np.arange(width, dtype=np.float32) - cx
    hw = half_widths[:, None]
    coverage = np.clip(hw - np.abs(xs)[None, :] + 0.5, 0, 1).astype(np.float32)
    xn = np.clip(xs[None, :] / np.maximum(hw, 1e-3), -1, 1).astype(np.float32)
    return coverage, xn


def _shade(rng: np.random.Generator, xn: np.ndarray, gloss: float, style: str) -> np.ndarray:
    """Brightness per pixel of a cylinder for one shading style."""
    if style in ("flat", "outlined"):
        return np.full(xn.shape, rng.uniform(0.85, 1.1), np.float32)
    centre = rng.uniform(-0.65, 0.65)
    width = rng.uniform(0.08, 0.25)
    diffuse = 0.45 + 0.55 * np.sqrt(np.clip(1 - (xn - rng.uniform(-0.3, 0.3)) ** 2, 0, 1))
    specular = gloss * np.exp(-(((xn - centre) / width) ** 2))
    shade = (diffuse + specular).astype(np.float32)
    if style == "banded":  # toon shading: a few flat bands
        levels = int(rng.integers(2, 5))
        shade = np.round(shade * levels) / levels + 0.15
    return shade.astype(np.float32)


def _outline(coverage: np.ndarray, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Darken (or lighten) a thin band along the silhouette edge, as a drawn outline."""
    mask = (coverage > 0.5).astype(np.uint8)
    k = int(rng.integers(1, 3))
    inner = cv2.erode(mask, np.ones((2 * k + 1, 2 * k + 1), np.uint8))
    edge = (mask - inner).astype(bool)
    ink = np.float32([rng.uniform(0, 60)] * 3) if rng.random() < 0.8 else _random_colour(rng)
    colour = colour.copy()
    colour[edge] = ink
    return colour


def _print_design(rng: np.random.Generator, h: int, w: int, base: np.ndarray) -> np.ndarray:
    """Label or can artwork: bands, stripes, a logo blob and rows of 'text'."""
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
    if rng.random() < 0.25 and w > 4:  # diagonal stripe
        pts = np.int32([[0, rng.integers(0, h)], [w, rng.integers(0, h)]])
        cv2.line(
            art, tuple(pts[0]), tuple(pts[1]), _saturated_colour(rng).tolist(), int(1 + h // 10)
        )
    if rng.random() < 0.7 and min(h, w) > 6:
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        radius = int(rng.integers(2, max(3, min(h, w) // 2)))
        cv2.circle(art, centre, radius, _saturated_colour(rng).tolist(), -1, cv2.LINE_AA)
    text = _random_colour(rng, 0, 255).tolist()
    for _ in range(int(rng.integers(0, 7))):
        x0, y0 = int(rng.integers(0, max(w, 1))), int(rng.integers(0, max(h, 1)))
        cv2.rectangle(art, (x0, y0), (x0 + int(rng.integers(3, max(4, w // 2))), y0 + 1), text, -1)
    return art


def _bottle_profile(rng: np.random.Generator, length: float) -> tuple[np.ndarray, dict]:
    """Half-width per row of a PET bottle: cap, neck, shoulder, body (maybe waisted), foot."""
    aspect = rng.uniform(1.8, 5.5)
    body = length / aspect / 2
    neck = body * rng.uniform(0.2, 0.55)
    has_cap = rng.random() < 0.88
    cap = neck * rng.uniform(1.0, 1.4)
    cap_len = length * rng.uniform(0.03, 0.1) if has_cap else 0.0
    neck_len = length * rng.uniform(0.02, 0.25)
    shoulder_len = length * rng.uniform(0.03, 0.3)
    h = max(8, round(length))
    y = np.arange(h, dtype=np.float32) + 0.5
    t = np.clip((y - cap_len - neck_len) / max(shoulder_len, 1.0), 0, 1)
    shoulder = int(rng.integers(3))
    if shoulder == 0:  # rounded
        ramp = 0.5 - 0.5 * np.cos(np.pi * t)
    elif shoulder == 1:  # conical
        ramp = t
    else:  # domed: quick rise, then flat
        ramp = np.sqrt(t)
    half = neck + (body - neck) * ramp
    if rng.random() < 0.3:  # a waist, like a contour bottle or a grip
        centre = rng.uniform(0.45, 0.75) * h
        half = half * (1 - rng.uniform(0.05, 0.2) * np.exp(-(((y - centre) / (0.1 * h)) ** 2)))
    if rng.random() < 0.4:  # a neck ring below the cap
        ring = (y > cap_len) & (y < cap_len + max(1.5, 0.02 * length))
        half = np.where(ring, np.maximum(half, neck * 1.25), half)
    half = np.where(y < cap_len, cap, half)
    foot = np.clip((h - y) / (rng.uniform(0.02, 0.08) * length), 0, 1)
    half = half * (rng.uniform(0.75, 0.92) + (1 - 0.83) * np.sqrt(foot))
    return half.astype(np.float32), {
        "cap_len": cap_len,
        "body_top": cap_len + neck_len + shoulder_len,
    }


def pet_bottle(rng: np.random.Generator, length: float) -> Item:
    half, parts = _bottle_profile(rng, length)
    h = len(half)
    w = int(np.ceil(2 * float(half.max()))) + 3
    coverage, xn = _profile_canvas(half, w)
    style = _shading_style(rng)

    tints = [
        (215, 210, 200),
        (230, 230, 230),
        (150, 200, 140),
        (210, 170, 120),
        (60, 110, 150),
        (90, 150, 80),
        (40, 80, 60),
        (200, 200, 240),
    ]
    if rng.random() < 0.8:
        tint = np.float32(tints[rng.integers(len(tints))]) + rng.uniform(-25, 25, 3)
    else:
        tint = _any_colour(rng)
    tint = tint.astype(np.float32)
    clear = rng.random() < 0.5
    base_alpha = rng.uniform(0.25, 0.55) if clear else rng.uniform(0.6, 1.0)
    shade = _shade(rng, xn, rng.uniform(0.2, 1.1), style)
    colour = tint * shade[..., None]
    # Plastic looks denser at grazing angles, so a clear bottle shows its outline.
    alpha = base_alpha + (1 - base_alpha) * rng.uniform(0.3, 0.9) * np.abs(xn) ** 4
    alpha = np.maximum(alpha, np.clip(shade - 1.0, 0, 1))

    rows = np.arange(h, dtype=np.float32)[:, None] + 0.5
    cap_len, body_top = parts["cap_len"], parts["body_top"]
    if cap_len > 0:
        cap_rows = rows < cap_len
        cap_colour = _random_colour(rng) if rng.random() < 0.3 else _saturated_colour(rng)
        ridges = 0.85 + 0.15 * np.cos(np.arange(w, dtype=np.float32) * rng.uniform(1, 2.5))
        if style != "smooth":
            ridges = np.ones_like(ridges)
        colour = np.where(cap_rows[..., None], cap_colour * (shade * ridges)[..., None], colour)
        alpha = np.where(cap_rows, 1.0, alpha)

    if rng.random() < 0.5:
        ribs = (np.sin(rows * rng.uniform(0.3, 1.2)) > 0.8) & (
            rows > body_top + rng.uniform(0.2, 0.6) * (h - body_top)
        )
        colour = np.where(ribs[..., None], colour * rng.uniform(0.7, 0.9), colour)
        alpha = np.where(ribs, np.minimum(alpha + 0.2, 1.0), alpha)
    if rng.random() < 0.7:
        label_h = max(2, int((h - body_top) * rng.uniform(0.2, 0.7)))
        y0 = int(body_top + rng.uniform(0.0, 0.4) * (h - body_top))
        label = _print_design(rng, label_h, w, _any_colour(rng))
        sl = slice(y0, y0 + label_h)
        colour[sl] = label[: len(colour[sl])] * shade[sl, :, None]
        alpha[sl] = 1.0
    if style == "outlined":
        colour = _outline(coverage, colour, rng)
        alpha = np.maximum(alpha, (colour.sum(-1) < 200) * 0.9)
    return Item(colour.astype(np.float32), (alpha * coverage).astype(np.float32), coverage)


def can(rng: np.random.Generator, length: float) -> Item:
    aspect = rng.uniform(1.2, 3.4)
    body = length / aspect / 2
    lid = body * rng.uniform(0.15, 0.5) if rng.random() < 0.35 else 0.0
    h, w = max(6, round(length)), int(np.ceil(2 * body)) + 3
    y = np.arange(h, dtype=np.float32) + 0.5
    neck_frac = rng.uniform(0.75, 0.95)
    top_taper = np.clip((y - lid) / (rng.uniform(0.03, 0.1) * length), 0, 1)
    bottom_taper = np.clip((h - y) / (rng.uniform(0.02, 0.06) * length), 0, 1)
    half = body * (neck_frac + (1 - neck_frac) * top_taper) * (0.88 + 0.12 * bottom_taper)
    half = np.where(y < lid, 0.0, half)
    coverage, xn = _profile_canvas(half, w)
    style = _shading_style(rng)

    shade = _shade(rng, xn, rng.uniform(0.4, 1.4), style)
    silver = np.float32([rng.uniform(150, 230)] * 3) + rng.uniform(-10, 10, 3).astype(np.float32)
    printed = rng.random() < 0.8
    base = _any_colour(rng) if rng.random() < 0.75 else silver
    art = _print_design(rng, h, w, base) if printed else np.broadcast_to(base, (h, w, 3))
    rows = y[:, None]
    rim_top, rim_bottom = rng.uniform(0.03, 0.09) * length, rng.uniform(0.02, 0.07) * length
    rims = (rows < lid + rim_top) | (rows > h - rim_bottom)
    colour = np.where(rims[..., None], silver, art) * shade[..., None]
    # Metal is opaque; the tapered shoulder reads as a darker line below the rim.
    line = (np.abs(rows - lid - rim_top) < 1.0)[..., None]
    colour = np.where(line, colour * rng.uniform(0.5, 0.8), colour)

    if lid > 1.0:
        lid_mask = np.zeros((h, w), np.float32)
        cx = (w - 1) / 2
        axes = (max(1, int(body * neck_frac)), max(1, int(lid)))
        cv2.ellipse(lid_mask, (int(cx), int(lid)), axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
        lid_colour = np.empty((h, w, 3), np.float32)
        lid_colour[:] = silver * rng.uniform(0.8, 1.0)
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
    if style == "outlined":
        colour = _outline(coverage, colour, rng)
    return Item(colour.astype(np.float32), coverage.copy(), coverage)


def _cup(rng: np.random.Generator, length: float) -> Item:
    top = length / rng.uniform(0.8, 1.6) / 2
    bottom = top * rng.uniform(0.55, 0.85)
    h, w = max(6, round(length)), int(np.ceil(2 * top)) + 3
    y = np.arange(h, dtype=np.float32) + 0.5
    coverage, xn = _profile_canvas(top + (bottom - top) * y / h, w)
    base = np.float32([235, 235, 235]) if rng.random() < 0.4 else _any_colour(rng)
    style = _shading_style(rng)
    colour = _print_design(rng, h, w, base) * (0.75 + 0.25 * _shade(rng, xn, 0.2, style))[..., None]
    rim_h = max(2, int(top * rng.uniform(0.15, 0.45)))
    rim = np.zeros((h, w), np.float32)
    cv2.ellipse(rim, (int((w - 1) / 2), rim_h), (int(top), rim_h), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    colour = np.where((rim > 0.5)[..., None], base * rng.uniform(0.3, 0.6), colour)
    coverage = np.maximum(coverage * (y[:, None] > rim_h), rim)
    if style == "outlined":
        colour = _outline(coverage, colour, rng)
    return Item(colour.astype(np.float32), coverage.copy(), coverage)


def _box(rng: np.random.Generator, length: float) -> Item:
    fh = length
    fw = length / rng.uniform(0.7, 2.5)
    depth = fw * rng.uniform(0.0, 0.4)
    h, w = max(4, round(fh + depth)), max(4, round(fw + depth) + 2)
    base = np.float32([60, 110, 160]) if rng.random() < 0.3 else _any_colour(rng)
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
    if h - d > 0 and int(fw) > 0:
        colour[d:, : int(fw)] = _print_design(rng, h - d, int(fw), base)
    cv2.fillPoly(coverage, [front], 1.0, cv2.LINE_AA)
    if rng.random() < 0.3:
        colour = _outline(coverage, colour, rng)
    return Item(colour, coverage.copy(), coverage)


def _bag(rng: np.random.Generator, length: float) -> Item:
    n = int(rng.integers(8, 22))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = 1 + rng.uniform(0.15, 0.4) * rng.normal(0, 1, n)
    radii = np.clip(
        np.convolve(np.concatenate([radii[-1:], radii, radii[:1]]), [0.25, 0.5, 0.25], "valid"),
        0.5,
        1.5,
    )
    ry, rx = length / 2, length / 2 / rng.uniform(0.8, 2.0)
    h, w = max(4, round(length * 1.2)), max(4, round(2 * rx * 1.2))
    pts = np.stack(
        [w / 2 + rx * radii * np.cos(angles), h / 2 + ry * radii * np.sin(angles)], axis=1
    )
    coverage = np.zeros((h, w), np.float32)
    cv2.fillPoly(coverage, [np.clip(pts, 0, [w - 1, h - 1]).astype(np.int32)], 1.0, cv2.LINE_AA)
    grid = rng.uniform(0.5, 1.3, (6, 6)).astype(np.float32)
    crumple = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.3:
        crumple = np.full_like(crumple, 1.0)
    colour = _any_colour(rng)[None, None, :] * crumple[..., None]
    if rng.random() < 0.3:
        colour = colour + _print_design(rng, h, w, np.zeros(3, np.float32)) * 0.5
    alpha = coverage * rng.uniform(0.6, 1.0)
    return Item(colour.astype(np.float32), alpha.astype(np.float32), coverage)


def _ball(rng: np.random.Generator, length: float) -> Item:
    size = max(4, round(length))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    r = np.sqrt(xx**2 + yy**2) / (size / 2)
    coverage = np.clip((1 - r) * size / 2 + 0.5, 0, 1).astype(np.float32)
    hx, hy = rng.uniform(-0.4, 0.4, 2)
    highlight = np.exp(-(((xx / (size / 2) - hx) ** 2 + (yy / (size / 2) - hy) ** 2) / 0.05))
    shade = 0.5 + 0.5 * np.sqrt(np.clip(1 - r**2, 0, 1)) + 0.6 * highlight
    if rng.random() < 0.3:
        shade = np.full_like(shade, 1.0)
    colour = _any_colour(rng)[None, None, :] * shade[..., None]
    if rng.random() < 0.3:  # a seam or panel line
        cv2.ellipse(
            colour,
            (size // 2, size // 2),
            (size // 2, max(1, int(size * rng.uniform(0.1, 0.4)))),
            float(rng.uniform(0, 180)),
            0,
            360,
            (30.0, 30.0, 30.0),
            1,
        )
    return Item(colour.astype(np.float32), coverage.copy(), coverage)


def _pouch(rng: np.random.Generator, length: float) -> Item:
    """A drink pouch or tube: a flat shape with a crimped end and a spout or cap."""
    h = max(6, round(length))
    w = max(4, round(length / rng.uniform(1.2, 2.4)))
    coverage = np.zeros((h, w), np.float32)
    crimp = max(2, int(h * rng.uniform(0.05, 0.12)))
    body = np.int32([[0, crimp], [w - 1, crimp], [w - 1 - w // 8, h - 1], [w // 8, h - 1]])
    cv2.fillPoly(coverage, [body], 1.0, cv2.LINE_AA)
    cv2.rectangle(coverage, (0, 0), (w - 1, crimp), 1.0, -1)
    colour = _print_design(rng, h, w, _any_colour(rng))
    for y in range(0, crimp, 2):
        colour[y] *= 0.7
    return Item(colour.astype(np.float32), coverage.copy(), coverage)


def other(rng: np.random.Generator, length: float) -> Item:
    """A foreign object the machine must refuse: cup, carton, bag, ball or pouch."""
    makers = (_cup, _box, _bag, _ball, _pouch)
    scales = (0.7, 1.0, 1.0, 0.6, 0.8)
    kind = int(rng.integers(len(makers)))
    return makers[kind](rng, length * scales[kind])


def hand(rng: np.random.Generator, length: float) -> Item:
    """A hand reaching in (not a deposit): a palm and four or five fingers, skin toned."""
    h, w = max(8, round(length)), max(8, round(length * rng.uniform(0.6, 0.9)))
    coverage = np.zeros((h, w), np.float32)
    palm_top = int(h * rng.uniform(0.35, 0.55))
    cv2.ellipse(
        coverage, (w // 2, (palm_top + h) // 2), (w // 2 - 1, (h - palm_top) // 2), 0, 0, 360, 1, -1
    )
    fingers = int(rng.integers(4, 6))
    fw = max(2, w // (fingers + 1))
    for i in range(fingers):
        x = int((i + 0.75) * w / (fingers + 0.5))
        top = int(rng.uniform(0.0, 0.3) * palm_top)
        cv2.line(coverage, (x, palm_top + fw), (x, top + fw // 2), 1.0, fw, cv2.LINE_AA)
    tones = [(180, 200, 235), (120, 150, 200), (70, 95, 140), (40, 60, 95)]
    tone = np.float32(tones[rng.integers(len(tones))]) + rng.uniform(-15, 15, 3)
    if rng.random() < 0.25:  # gloved
        tone = _any_colour(rng)
    shade = 0.8 + 0.2 * cv2.GaussianBlur(coverage, (0, 0), max(1.0, w / 10))
    colour = tone[None, None, :] * shade[..., None]
    return Item(colour.astype(np.float32), coverage.copy(), coverage)


def paper(rng: np.random.Generator, length: float) -> Item:
    """A receipt, a leaflet or a scrap of film: thin litter that is not a deposit."""
    h, w = max(4, round(length)), max(4, round(length / rng.uniform(1.0, 4.0)))
    coverage = np.ones((h, w), np.float32)
    base = np.float32([rng.uniform(200, 250)] * 3) if rng.random() < 0.6 else _any_colour(rng)
    colour = np.empty((h, w, 3), np.float32)
    colour[:] = base
    for y in range(2, h - 1, int(rng.integers(3, 6))):
        if rng.random() < 0.7:
            x1 = int(rng.integers(1, max(2, w // 3)))
            cv2.line(colour, (x1, y), (int(rng.integers(x1, w)), y), (60.0, 60.0, 60.0), 1)
    alpha = coverage * (rng.uniform(0.25, 0.5) if rng.random() < 0.3 else 1.0)
    return Item(colour, alpha.astype(np.float32), coverage)


DISTRACTORS = (hand, paper)

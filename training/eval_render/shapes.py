"""Item outlines as polygons in item units (x across, y along the item, origin at its top).

Each shape is a list of parts; a part is a polygon and a tone role (body, cap, label,
rim, print, dark) that the painter turns into a flat colour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Part:
    points: np.ndarray  # (n, 2) float64, item units
    role: str


@dataclass
class Shape:
    cls: int
    parts: list[Part] = field(default_factory=list)
    see_through: bool = False  # a clear bottle: the body shows the floor through it

    def outline(self) -> np.ndarray:
        return np.concatenate([p.points for p in self.parts])


def _mirror(right_side: list[tuple[float, float]]) -> np.ndarray:
    """A symmetric outline from its right half, listed top to bottom."""
    right = np.asarray(right_side, np.float64)
    left = right[::-1] * [-1, 1]
    return np.concatenate([right, left])


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 12):
    t = np.linspace(a0, a1, n)
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in t]


def bottle(rng: np.random.Generator) -> Shape:
    """Length 1. Necks straight, flared or stepped; shoulders sloped, stepped or round."""
    body_w = rng.uniform(0.1, 0.26)  # half width
    neck_w = body_w * rng.uniform(0.25, 0.5)
    cap_h = rng.uniform(0.0, 0.1) if rng.random() < 0.85 else 0.0
    neck_h = rng.uniform(0.04, 0.3)
    shoulder_h = rng.uniform(0.04, 0.25)
    top = cap_h + neck_h
    kind = rng.integers(3)
    side: list[tuple[float, float]] = [(neck_w, cap_h)]
    if rng.random() < 0.5:  # a flared lip or collar on the neck
        side += [
            (neck_w * 1.3, cap_h + 0.01),
            (neck_w * 1.3, cap_h + 0.025),
            (neck_w, cap_h + 0.03),
        ]
    if kind == 0:
        side += [(neck_w, top), (body_w, top + shoulder_h)]
    elif kind == 1:
        mid = (neck_w + body_w) / 2
        side += [
            (neck_w, top),
            (mid, top + 0.01),
            (mid, top + shoulder_h / 2),
            (body_w, top + shoulder_h),
        ]
    else:
        side += [(neck_w, top)]
        side += [
            (neck_w + (body_w - neck_w) * np.sin(a), top + shoulder_h * (1 - np.cos(a)))
            for a in np.linspace(0.2, np.pi / 2, 6)
        ]
    if rng.random() < 0.35:  # a grip waist
        y = rng.uniform(0.5, 0.75)
        side += [(body_w, y - 0.08), (body_w * rng.uniform(0.75, 0.9), y), (body_w, y + 0.08)]
    foot = rng.uniform(0.01, 0.05)
    side += [(body_w, 1 - foot), (body_w * rng.uniform(0.7, 0.9), 1.0)]
    shape = Shape(0, see_through=rng.random() < 0.5)
    shape.parts.append(Part(_mirror(side), "body"))
    if cap_h > 0:
        cw = neck_w * rng.uniform(1.05, 1.35)
        shape.parts.append(Part(np.array([[-cw, 0], [cw, 0], [cw, cap_h], [-cw, cap_h]]), "cap"))
    if rng.random() < 0.65:
        y0 = rng.uniform(top + shoulder_h, max(top + shoulder_h, 0.6))
        y1 = min(0.95, y0 + rng.uniform(0.12, 0.35))
        lw = body_w * 0.98
        shape.parts.append(Part(np.array([[-lw, y0], [lw, y0], [lw, y1], [-lw, y1]]), "label"))
    return shape


def can(rng: np.random.Generator) -> Shape:
    """Length 1: a cylinder seen from the side, with elliptic ends and a necked top."""
    half = rng.uniform(0.16, 0.42)
    end = half * rng.uniform(0.05, 0.3)  # the ellipse of the ends, seen at an angle
    neck = half * rng.uniform(0.75, 0.92)
    side = [(neck, end), (half, end + 0.06), (half, 1 - end - 0.03), (half * 0.9, 1 - end)]
    bottom = _arc(0, 1 - end, half * 0.9, end, 0, np.pi)
    right = np.asarray(side, np.float64)
    body = np.concatenate([right, np.asarray(bottom[1:-1]), right[::-1] * [-1, 1]])
    shape = Shape(1)
    shape.parts.append(Part(body, "body"))
    shape.parts.append(Part(np.asarray(_arc(0, end, neck, end, 0, 2 * np.pi, 20)), "rim"))
    if rng.random() < 0.7:
        y0 = rng.uniform(0.2, 0.5)
        y1 = y0 + rng.uniform(0.1, 0.35)
        shape.parts.append(
            Part(np.array([[-half, y0], [half, y0], [half, y1], [-half, y1]]), "print")
        )
    return shape


def cup(rng: np.random.Generator) -> Shape:
    top = rng.uniform(0.3, 0.55)
    bottom = top * rng.uniform(0.55, 0.85)
    rim = top * rng.uniform(0.08, 0.3)
    body = np.array([[-top, rim], [top, rim], [bottom, 1.0], [-bottom, 1.0]])
    shape = Shape(2)
    shape.parts.append(Part(body, "body"))
    shape.parts.append(Part(np.asarray(_arc(0, rim, top, rim, 0, 2 * np.pi, 20)), "dark"))
    return shape


def carton(rng: np.random.Generator) -> Shape:
    w = rng.uniform(0.2, 0.4)
    gable = rng.uniform(0.08, 0.2)
    body = np.array([[-w, gable], [0, 0.0], [w, gable], [w, 1.0], [-w, 1.0]])
    shape = Shape(2)
    shape.parts.append(Part(body, "body"))
    shape.parts.append(
        Part(np.array([[-w, gable], [w, gable], [w, gable + 0.05], [-w, gable + 0.05]]), "print")
    )
    if rng.random() < 0.7:
        shape.parts.append(
            Part(
                np.array([[-w * 0.7, 0.4], [w * 0.7, 0.4], [w * 0.7, 0.7], [-w * 0.7, 0.7]]),
                "label",
            )
        )
    return shape


def ball(rng: np.random.Generator) -> Shape:
    r = 0.5
    shape = Shape(2)
    shape.parts.append(Part(np.asarray(_arc(0, 0.5, r, r, 0, 2 * np.pi, 32)), "body"))
    if rng.random() < 0.6:
        shape.parts.append(
            Part(
                np.asarray(
                    _arc(0, 0.5, r * 0.35, r, -np.pi / 2, np.pi / 2, 10)
                    + _arc(0, 0.5, r * 0.15, r, np.pi / 2, -np.pi / 2, 10)
                ),
                "print",
            )
        )
    return shape


def bag(rng: np.random.Generator) -> Shape:
    n = int(rng.integers(9, 16))
    a = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(-0.15, 0.15, n)
    rad = rng.uniform(0.75, 1.0, n)
    w = rng.uniform(0.3, 0.5)
    pts = np.stack([w * rad * np.cos(a), 0.5 + 0.5 * rad * np.sin(a)], 1)
    shape = Shape(2)
    shape.parts.append(Part(pts, "body"))
    if rng.random() < 0.5:  # handles
        hx = w * 0.5
        shape.parts.append(
            Part(np.array([[-hx, 0.02], [-hx * 0.6, 0.02], [-hx * 0.6, 0.12], [-hx, 0.12]]), "dark")
        )
        shape.parts.append(
            Part(np.array([[hx * 0.6, 0.02], [hx, 0.02], [hx, 0.12], [hx * 0.6, 0.12]]), "dark")
        )
    return shape


MAKERS = {0: (bottle,), 1: (can,), 2: (cup, carton, ball, bag)}

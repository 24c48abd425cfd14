"""One evaluation frame: a tiled chute with rails and seams, vector items, a plain camera."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .shapes import MAKERS, Shape

WIDTH, HEIGHT = 320, 240
# Item length as a fraction of frame height, per class.
LENGTHS = {0: (0.45, 0.9), 1: (0.28, 0.55), 2: (0.28, 0.7)}
CLASS_P = (0.4, 0.35, 0.25)
COUNT_P = (0.05, 0.75, 0.2)  # 0, 1 or 2 items

# A palette of its own: muted industrial tones for chutes, print colours for items.
CHUTE_TONES = np.array(
    [[96, 96, 92], [150, 150, 146], [60, 64, 70], [175, 170, 160], [80, 110, 135], [40, 40, 44]],
    np.float64,
)
PRINT_TONES = np.array(
    [
        [30, 30, 200],
        [30, 160, 30],
        [200, 60, 20],
        [20, 200, 230],
        [160, 40, 160],
        [240, 240, 240],
        [20, 20, 20],
        [0, 120, 255],
    ],
    np.float64,
)
PET_TONES = np.array(
    [[210, 220, 215], [120, 190, 110], [90, 140, 190], [60, 100, 60], [235, 235, 235]], np.float64
)


@dataclass(frozen=True)
class Label:
    cls: int
    x1: float
    y1: float
    x2: float
    y2: float


def _chute(rng: np.random.Generator) -> np.ndarray:
    tone = CHUTE_TONES[rng.integers(len(CHUTE_TONES))] + rng.uniform(-12, 12, 3)
    img = np.empty((HEIGHT, WIDTH, 3), np.float64)
    img[:] = tone
    # A vertical light falloff along the chute.
    img *= np.linspace(rng.uniform(0.8, 1.1), rng.uniform(0.8, 1.1), HEIGHT)[:, None, None]
    panel = int(rng.integers(50, 130))
    for x in range(int(rng.integers(0, panel)), WIDTH, panel):  # tiled panels: seams
        img[:, x : x + 2] = tone * 0.45
        img[:, x + 2 : x + 3] = np.minimum(tone * 1.5, 255)
    if rng.random() < 0.6:
        for y in range(int(rng.integers(0, panel)), HEIGHT, panel):
            img[y : y + 2] = tone * 0.45
    if rng.random() < 0.7:  # two guide rails along the chute
        rail = int(rng.integers(8, 22))
        for x0 in (int(rng.integers(0, 25)), WIDTH - rail - int(rng.integers(0, 25))):
            grad = np.abs(np.linspace(-1, 1, rail))
            img[:, x0 : x0 + rail] = (rng.uniform(170, 235) * (1 - 0.55 * grad))[None, :, None]
            for y in range(int(rng.integers(5, 30)), HEIGHT, int(rng.integers(30, 70))):  # bolts
                cv2.circle(img, (x0 + rail // 2, y), max(2, rail // 4), (40, 40, 40), -1)
    if rng.random() < 0.35:  # rollers across the chute
        pitch = int(rng.integers(25, 60))
        for y in range(0, HEIGHT, pitch):
            band = np.linspace(0.6, 1.25, pitch // 2)
            img[y : y + len(band)] *= band[: HEIGHT - y, None, None]
    return img


def _homography(rng: np.random.Generator, shape: Shape, length: float, centre, angle: float):
    """Item units -> frame pixels: scale to length, rotate, move, then a slight tilt."""
    c, s = np.cos(angle), np.sin(angle)
    a = np.array([[c * length, -s * length, 0], [s * length, c * length, 0], [0, 0, 1]])
    a[:2, 2] = np.asarray(centre) - a[:2, :2] @ np.array([0.0, 0.5])
    tilt = np.eye(3)
    tilt[2, :2] = rng.uniform(-0.0015, 0.0015, 2)
    return tilt @ a


def _project(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.hstack([pts, np.ones((len(pts), 1))]) @ h.T
    return p[:, :2] / p[:, 2:3]


def _mask(points: np.ndarray) -> np.ndarray:
    m = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.fillPoly(m, [np.round(points * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return m.astype(np.float64) / 255


def _paint(rng: np.random.Generator, img: np.ndarray, shape: Shape, hom: np.ndarray) -> np.ndarray:
    """Draw the item; returns its silhouette mask in the frame."""
    body_tone = (
        PET_TONES[rng.integers(len(PET_TONES))]
        if shape.cls == 0
        else PRINT_TONES[rng.integers(len(PRINT_TONES))]
    )
    if shape.cls == 1 and rng.random() < 0.35:
        body_tone = np.array([190.0, 190, 195])  # bare aluminium
    body_tone = np.clip(body_tone + rng.uniform(-20, 20, 3), 0, 255)
    tones = {
        "body": body_tone,
        "cap": PRINT_TONES[rng.integers(len(PRINT_TONES))],
        "label": PRINT_TONES[rng.integers(len(PRINT_TONES))],
        "print": PRINT_TONES[rng.integers(len(PRINT_TONES))],
        "rim": np.array([200.0, 200, 205]),
        "dark": body_tone * 0.4,
    }
    cel = rng.random() < 0.6  # two-tone cel shading, else plain flat colour
    silhouette = np.zeros((HEIGHT, WIDTH))
    outline = shape.outline()
    half = float(np.abs(outline[:, 0]).max())
    for part in shape.parts:
        m = _mask(_project(hom, part.points))
        opacity = 0.35 if (shape.see_through and part.role == "body") else 1.0
        colour = tones[part.role]
        img[:] = img * (1 - m[..., None] * opacity) + colour * m[..., None] * opacity
        if cel and part.role in ("body", "label", "print"):
            # The shadowed side: a band on one side of the item, in item units.
            side = rng.choice([-1.0, 1.0])
            x0, x1 = side * half * 0.35, side * half * 1.1
            band = np.array([[x0, -0.1], [x1, -0.1], [x1, 1.1], [x0, 1.1]])
            shade = _mask(_project(hom, band)) * m
            img[:] = img * (1 - 0.35 * shade[..., None])
        silhouette = np.maximum(silhouette, m)
    if rng.random() < 0.5:  # ink outline
        pts = np.round(_project(hom, shape.parts[0].points)).astype(np.int32)
        cv2.polylines(img, [pts], True, (25, 25, 25), int(rng.integers(1, 3)), cv2.LINE_AA)
    return silhouette


def _camera(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    r2 = ((xx - WIDTH / 2) / WIDTH) ** 2 + ((yy - HEIGHT / 2) / HEIGHT) ** 2
    img = img * (1 - rng.uniform(0.0, 0.6) * r2)[..., None]
    temperature = rng.uniform(-0.12, 0.12)  # warm or cool white balance
    img = img * np.array([1 - temperature, 1.0, 1 + temperature]) * rng.uniform(0.75, 1.2)
    if rng.random() < 0.5:
        img = cv2.blur(img, (3, 3))
    gain = rng.uniform(0.3, 1.5)  # shot noise: photons per grey level
    img = np.clip(img, 0, 255)
    img = rng.poisson(img / gain) * gain
    return np.clip(img, 0, 255).astype(np.uint8)


def render_frame(rng: np.random.Generator) -> tuple[np.ndarray, list[Label]]:
    """A BGR uint8 320x240 frame and its labels (boxes in pixels)."""
    img = _chute(rng)
    labels: list[Label] = []
    for _ in range(int(rng.choice(3, p=COUNT_P))):
        cls = int(rng.choice(3, p=CLASS_P))
        makers = MAKERS[cls]
        shape = makers[int(rng.integers(len(makers)))](rng)
        length = rng.uniform(*LENGTHS[cls]) * HEIGHT * (0.8 if labels else 1.0)
        for _attempt in range(10):
            angle = rng.uniform(0, 2 * np.pi)
            centre = (rng.uniform(0.15, 0.85) * WIDTH, rng.uniform(0.15, 0.85) * HEIGHT)
            hom = _homography(rng, shape, length, centre, angle)
            pts = _project(hom, shape.outline())
            x1, y1 = pts.min(0)
            x2, y2 = pts.max(0)
            inside = x1 >= 0 and y1 >= 0 and x2 <= WIDTH and y2 <= HEIGHT
            clear = all(x2 < b.x1 or x1 > b.x2 or y2 < b.y1 or y1 > b.y2 for b in labels)
            if inside and clear:
                break
        else:
            continue
        silhouette = _paint(rng, img, shape, hom)
        ys, xs = np.nonzero(silhouette > 0.5)
        if len(xs):
            labels.append(Label(cls, xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0))
    return _camera(rng, img), labels

"""Image <-> model input geometry, exactly as Ultralytics' LetterBox does it.

Parity with Ultralytics' predictions depends on the same rounding: resize to
the largest size that fits, pad evenly with grey 114, and map boxes back with
the per-axis gains of the rounded resize.

`LetterboxBuffer` is the per-frame path: the model input lives in one buffer
allocated once per camera frame size, whose padding is written once; each
frame is resized straight into a preallocated image-sized buffer, split into
its three planes (contiguous copies, cheaper than reading HWC strided) and
each plane divided by 255 straight into its RGB plane of the input's image
region. Nothing is allocated per frame and the padding is never touched again.
`letterbox` is the same computation returning a fresh tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """How an original image was placed into the model input."""

    gain_x: float
    gain_y: float
    left: int
    top: int
    width: int  # original image
    height: int
    new_w: int = 0  # the resized image inside the input
    new_h: int = 0

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Map xyxy boxes in input pixels to original pixels (in place), clipped to the image."""
        np.subtract(boxes, (self.left, self.top, self.left, self.top), out=boxes)
        np.divide(boxes, (self.gain_x, self.gain_y, self.gain_x, self.gain_y), out=boxes)
        np.clip(boxes, 0, (self.width, self.height, self.width, self.height), out=boxes)
        return boxes


def geometry(h: int, w: int, size_hw: tuple[int, int]) -> Letterbox:
    """Where an h x w image goes in the model input (Ultralytics' rounding)."""
    out_h, out_w = size_hw
    r = min(out_h / h, out_w / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (out_w - new_w) / 2, (out_h - new_h) / 2
    top, left = round(dh - 0.1), round(dw - 0.1)
    return Letterbox(new_w / w, new_h / h, left, top, w, h, new_w, new_h)


class LetterboxBuffer:
    """Reusable model input for frames of one size at a time (re-planned when it changes).

    The returned tensor is this object's buffer: it is overwritten by the next call.
    """

    def __init__(self, size_hw: tuple[int, int], dtype: np.dtype | type = np.float32) -> None:
        self.size_hw = (int(size_hw[0]), int(size_hw[1]))
        self.dtype = np.dtype(dtype)
        self.tensor = np.empty((1, 3, *self.size_hw), self.dtype)
        self._geo: Letterbox | None = None
        self._resized = np.empty((0, 0, 3), np.uint8)
        self._planes: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []

    def _plan(self, h: int, w: int) -> Letterbox:
        geo = geometry(h, w, self.size_hw)
        self.tensor.fill(self.dtype.type(PAD_VALUE) / self.dtype.type(255))
        self._resized = np.empty((geo.new_h, geo.new_w, 3), np.uint8)
        self._planes = [np.empty((geo.new_h, geo.new_w), np.uint8) for _ in range(3)]
        rows = slice(geo.top, geo.top + geo.new_h)
        cols = slice(geo.left, geo.left + geo.new_w)
        # BGR -> RGB: blue (plane 0) goes to input channel 2.
        self._targets = [self.tensor[0, 2 - c, rows, cols] for c in range(3)]
        self._geo = geo
        return geo

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """BGR uint8 HxWx3 -> the 1x3xHxW RGB 0..1 input buffer, and the geometry to undo it."""
        h, w = image.shape[:2]
        geo = self._geo
        if geo is None or (geo.height, geo.width) != (h, w):
            geo = self._plan(h, w)
        if (geo.new_w, geo.new_h) != (w, h):
            cv2.resize(image, (geo.new_w, geo.new_h), self._resized, 0, 0, cv2.INTER_LINEAR)
            src = self._resized
        else:
            src = image
        cv2.split(src, self._planes)
        scale = self.dtype.type(255)
        for plane, target in zip(self._planes, self._targets, strict=True):
            # uint8 -> float, / 255 as Ultralytics does it (a division, not a multiply).
            np.divide(plane, scale, out=target, casting="unsafe")
        return self.tensor, geo


def letterbox(image: np.ndarray, size_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """BGR uint8 HxWx3 -> a new float32 1x3xHxW RGB in 0..1, and the geometry to undo it."""
    tensor, geo = LetterboxBuffer(size_hw)(image)
    return tensor, geo

"""Image <-> model input geometry, exactly as Ultralytics' LetterBox does it.

Parity with Ultralytics' predictions depends on the same rounding: resize to
the largest size that fits, pad evenly with grey 114, and map boxes back with
the per-axis gains of the rounded resize.
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

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Map xyxy boxes in input pixels to original pixels (in place), clipped to the image."""
        boxes[:, [0, 2]] -= self.left
        boxes[:, [1, 3]] -= self.top
        boxes[:, [0, 2]] /= self.gain_x
        boxes[:, [1, 3]] /= self.gain_y
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, self.width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, self.height)
        return boxes


def letterbox(image: np.ndarray, size_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """BGR uint8 HxWx3 -> float32 1x3xHxW RGB in 0..1, and the geometry to undo it."""
    h, w = image.shape[:2]
    out_h, out_w = size_hw
    r = min(out_h / h, out_w / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (out_w - new_w) / 2, (out_h - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    if (w, h) != (new_w, new_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if top or bottom or left or right:
        image = cv2.copyMakeBorder(
            image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
        )
    # One pass for BGR->RGB, HWC->CHW, uint8->float32 and the 1/255 scale.
    tensor = cv2.dnn.blobFromImage(image, scalefactor=1 / 255, swapRB=True)
    return tensor, Letterbox(new_w / w, new_h / h, left, top, w, h)

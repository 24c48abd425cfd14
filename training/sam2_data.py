"""Deposit frames with each item's exact mask, for training and measuring SAM2.

The frames, boxes and masks are `deposit_synth.scene.render_with_masks`: the detector's
own generator (domain-randomised), so SAM2 is trained and measured on the scenes the
detector sees, and each mask is the item's visible silhouette that defines its box.

    sample(seed, split, index) -> (bgr uint8 HxWx3, [Box], [bool HxW mask])
"""

from __future__ import annotations

import numpy as np
from deposit_synth.scene import FRAME_H, FRAME_W, Box, render_with_masks

# Splits of their own: the SAM2 frames never coincide with the detector's train/val.
SPLITS = ("sam2-train", "sam2-val")
DEFAULT_SEED = 20251212


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    return np.random.default_rng([seed, 100 + SPLITS.index(split), index])


def sample(seed: int, split: str, index: int) -> tuple[np.ndarray, list[Box], list[np.ndarray]]:
    """One frame (BGR uint8), its boxes and masks: a pure function of its arguments."""
    # The held-out frame size (4:3): SAM2 sees every frame at its own input size anyway.
    return render_with_masks(sample_rng(seed, split, index), FRAME_W, FRAME_H)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union

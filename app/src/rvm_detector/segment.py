"""Segmentation: masks for the detected items of a deposit.

No segmentation model (SAM2 with box prompts) is wired in yet: `NoSegmenter`
returns no masks and keeps the call in place (deposits only, never the
continuous scan), so the pipeline does not change shape when one is added.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from rvm_detector.records import Detection


class Segmenter(Protocol):
    def segment(self, image: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
        """One boolean HxW mask per detection, in the same order; may be empty."""


class NoSegmenter:
    def segment(self, image: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
        return []

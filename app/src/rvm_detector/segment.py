"""Segmentation seam: masks for the detected items of a deposit.

SAM2 with box prompts arrives in a later issue; until then `NoSegmenter`
keeps the call in place (deposits only, never the continuous scan) so the
pipeline shape does not change when it lands.
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

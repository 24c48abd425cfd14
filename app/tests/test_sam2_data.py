"""training/sam2_data.py: the detector's frames, unchanged, plus each item's exact mask."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from detector_fixtures import TRAINING


@pytest.fixture(scope="module")
def modules():
    sys.path.insert(0, str(TRAINING))
    try:
        import sam2_data
        from deposit_synth.scene import render
    finally:
        sys.path.remove(str(TRAINING))
    return sam2_data, render


def test_frames_and_boxes_are_the_detector_generators_own(modules) -> None:
    """SAM2 learns on the detector's scenes: what `render` draws, with the same boxes."""
    sam2_data, render = modules
    for i in range(10):
        image, boxes = render(sam2_data.sample_rng(sam2_data.DEFAULT_SEED, "sam2-val", i), 320, 240)
        image2, boxes2, masks = sam2_data.sample(sam2_data.DEFAULT_SEED, "sam2-val", i)
        assert np.array_equal(image, image2), f"frame {i} differs from deposit_synth's"
        assert boxes == boxes2
        assert len(masks) == len(boxes)


def test_each_mask_is_its_items_visible_silhouette_spanning_its_box(modules) -> None:
    sam2_data, _ = modules
    items = 0
    for i in range(40):
        image, boxes, masks = sam2_data.sample(sam2_data.DEFAULT_SEED, "sam2-train", i)
        for box, mask in zip(boxes, masks, strict=True):
            items += 1
            assert mask.shape == image.shape[:2] and mask.dtype == bool and mask.any()
            # The visible silhouette is what defines the box, so it spans it exactly.
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (
                box.x1,
                box.y1,
                box.x2,
                box.y2,
            )
            # An item fills part of its (rotated) box, never all of it or nearly none.
            assert 0.1 < mask.sum() / ((box.x2 - box.x1) * (box.y2 - box.y1)) <= 1.0
    assert items >= 40
    # Pure functions of (seed, split, index); the splits differ.
    a = sam2_data.sample(1, "sam2-val", 3)
    b = sam2_data.sample(1, "sam2-val", 3)
    c = sam2_data.sample(1, "sam2-train", 3)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])

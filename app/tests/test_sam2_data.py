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
    sam2_data, render = modules
    for i in range(25):
        image, boxes = render(np.random.default_rng([7, i]))
        image2, boxes2, masks = sam2_data.render_with_masks(np.random.default_rng([7, i]))
        assert np.array_equal(image, image2), f"frame {i} differs from deposit_synth's"
        assert boxes == boxes2
        assert len(masks) == len(boxes)


def test_each_mask_is_its_items_silhouette_inside_its_box(modules) -> None:
    sam2_data, _ = modules
    seen_single = 0
    for i in range(40):
        image, boxes, masks = sam2_data.sample(sam2_data.DEFAULT_SEED, "sam2-train", i)
        for box, mask in zip(boxes, masks, strict=True):
            assert mask.shape == image.shape[:2] and mask.dtype == bool and mask.any()
            ys, xs = np.nonzero(mask)
            assert xs.min() >= box.x1 and xs.max() + 1 <= box.x2
            assert ys.min() >= box.y1 and ys.max() + 1 <= box.y2
            if len(boxes) == 1:
                # Alone in the frame, the silhouette spans its box exactly.
                seen_single += 1
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (
                    box.x1,
                    box.y1,
                    box.x2,
                    box.y2,
                )
                # A bottle or can fills part of its (rotated) box, never all or nearly none.
                assert 0.15 < mask.sum() / ((box.x2 - box.x1) * (box.y2 - box.y1)) <= 1.0
    assert seen_single >= 20
    # Pure functions of (seed, split, index); the splits differ.
    a = sam2_data.sample(1, "sam2-val", 3)
    b = sam2_data.sample(1, "sam2-val", 3)
    c = sam2_data.sample(1, "sam2-train", 3)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])

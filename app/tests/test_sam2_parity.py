"""The SAM2 export against the PyTorch model on the same inputs (needs the ML stack).

Runs where torch and sam2 are installed (`make setup-ml`): exports SAM2.1 hiera-tiny with
training/export_sam2.py's own functions, runs the graphs through the detector's runtime
(`rvm_detector.segment`) and the PyTorch model through the same pre/post-processing, and
compares the masks. Weights: training/runs/sam2/ckpt.pt when `make sam2` made one,
else a seeded random init (parity is about the export, not about accuracy).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from detector_fixtures import TRAINING

pytest.importorskip("sam2")
torch = pytest.importorskip("torch")

SIZE = 128  # small and quick; the export path is the same at every size


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    sys.path.insert(0, str(TRAINING))
    try:
        import export_sam2
        import sam2_data
        import sam2_model
    finally:
        sys.path.remove(str(TRAINING))
    from rvm_detector.segment import Sam2Segmenter

    ckpt = TRAINING / "runs" / "sam2" / "ckpt.pt"
    torch.manual_seed(0)
    sam = sam2_model.build(SIZE, ckpt if ckpt.is_file() else None)
    out = tmp_path_factory.mktemp("sam2")
    enc32, dec = export_sam2.export_graphs(sam, SIZE, out / "fp32")
    enc8 = out / "encoder.int8.onnx"
    export_sam2.quantize_int8(enc32, enc8)
    common = {"image_size": SIZE, "weights_sha256": "test", "version": "test"}
    segs = {}
    for precision, enc in (("fp32", enc32), ("int8", enc8)):
        pair = []
        for src, task in ((enc, "sam2-encoder"), (dec, "sam2-decoder")):
            d = out / precision / task
            d.mkdir(parents=True)
            (d / "model.onnx").write_bytes(src.read_bytes())
            export_sam2._write_manifest(d, task, "test", common, {})
            pair.append(d / "model.onnx")
        segs[precision] = Sam2Segmenter(*pair)
    frames = [sam2_data.sample(sam2_data.DEFAULT_SEED, "sam2-val", i) for i in range(6)]
    return export_sam2.TorchRef(sam, SIZE), segs, [f for f in frames if f[1]]


def _compare(ref, seg, frames) -> list[float]:
    from rvm_detector.records import Detection

    ious = []
    for image, boxes, _ in frames:
        dets = [Detection("item", 1.0, (b.x1, b.y1, b.x2, b.y2)) for b in boxes]
        onnx_masks = seg.segment(image, dets)
        torch_masks = ref.segment(image, [d.box for d in dets])
        for a, b in zip(onnx_masks, torch_masks, strict=True):
            union = np.count_nonzero(a | b)
            ious.append(1.0 if union == 0 else np.count_nonzero(a & b) / union)
            # A parity check on empty or full masks would prove nothing.
            assert 0 < np.count_nonzero(b) < b.size
    return ious


def test_fp32_graphs_give_the_pytorch_masks(exported) -> None:
    ref, segs, frames = exported
    ious = _compare(ref, segs["fp32"], frames)
    assert min(ious) >= 0.99, ious


def test_int8_encoder_stays_within_the_parity_bar(exported) -> None:
    ref, segs, frames = exported
    ious = _compare(ref, segs["int8"], frames)
    assert np.mean(ious) >= 0.99, ious

"""INT8 for TensorRT, made at export time: an explicitly quantised (Q/DQ) ONNX of a detection
model, calibrated on a fixed, hashed set of training frames, and measured.

    python training/quantize.py                      # models/deposit-yolo11n
    python training/quantize.py --calib-count 512 --method percentile

1. Calibration frames: the training generator's *train* split at its own seed (never the
   held-out split, never the independent renderer), written to training/data/calibration and
   hashed (names and contents) into the manifest.
2. Each frame goes through the detector's own letterbox (rvm_detector's Detector.prepare),
   so the scales are those of what the device feeds the model.
3. ONNX Runtime's quantize_static writes Q/DQ nodes in TensorRT's form: INT8, symmetric
   activations and weights, weights per output channel.
4. The Q/DQ model is evaluated like the FP32 one (training/evaluate.py, Ultralytics'
   validator, both evaluation sets), and the manifest's `int8_qdq` records the file, its
   sha256, the calibration and both figures beside the FP32 ones. The tensorrt_engine role
   builds it with `trtexec --int8 --fp16`; the gate checks it again on each device.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime
from evaluate import DEFAULT_EVAL_COUNT, DEFAULT_MODEL_DIR, evaluate_both
from generate_dataset import DEFAULT_SEED, write_dataset
from offline import TRAINING_DIR
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)
from rvm_detector.detector import load_detector, sha256_file

CALIB_ROOT = TRAINING_DIR / "data" / "calibration"
CALIB_SEED = 20251129
QDQ_FILE = "model.qdq.onnx"
METHODS = {
    "entropy": CalibrationMethod.Entropy,
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
}


def calibration_frames(count: int, seed: int) -> tuple[list[Path], str]:
    """The frames and one sha256 over their names and contents (the set, reproducibly)."""
    write_dataset(CALIB_ROOT, {"train": count, "val": 0}, seed, 2)
    frames = sorted((CALIB_ROOT / "images" / "train").glob("*.jpg"))
    if len(frames) != count:
        raise RuntimeError(f"expected {count} calibration frames, found {len(frames)}")
    h = hashlib.sha256()
    for p in frames:
        h.update(f"{p.name} {sha256_file(p)}\n".encode())
    return frames, h.hexdigest()


class Frames(CalibrationDataReader):
    """The detector's own model input for each calibration frame."""

    def __init__(self, model: Path, frames: list[Path]) -> None:
        self.detector = load_detector(model, "onnxruntime")
        self.name = onnx.load(str(model)).graph.input[0].name
        self.frames = iter(frames)

    def get_next(self) -> dict[str, np.ndarray] | None:
        path = next(self.frames, None)
        if path is None:
            return None
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        tensor, _ = self.detector.prepare(image)
        return {self.name: tensor}


def float_nodes(model: Path) -> list[str]:
    """The head's nodes kept in float: DFL, the class branch, the box branch's output conv."""
    names = [n.name for n in onnx.load(str(model)).graph.node]
    return [
        n
        for n in names
        if "/dfl/" in n or "/model.23/cv3" in n or re.search(r"/model\.23/cv2\.\d/cv2\.\d\.2/", n)
    ]


def quantize(model: Path, out: Path, frames: list[Path], method: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            Frames(model, frames),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=METHODS[method],
            # The convolutions only, and not the head's outputs: the decode (DFL, box
            # arithmetic, the final Concat of pixel boxes with 0..1 scores) stays in float, or
            # one INT8 scale for pixels and probabilities rounds every score to zero; the
            # class branch (cv3) and the box branch's last convolution stay in float too, as
            # the scores decide each deposit (measured: docs/benchmarks.md, INT8).
            op_types_to_quantize=["Conv"],
            nodes_to_exclude=float_nodes(model),
            # TensorRT's explicit quantisation: symmetric, zero point 0.
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
    # Ultralytics and the detector read the class names and size from the metadata.
    fp32, qdq = onnx.load(str(model)), onnx.load(str(out))
    del qdq.metadata_props[:]
    qdq.metadata_props.extend(fp32.metadata_props)
    onnx.save(qdq, str(out))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--calib-count", type=int, default=512)
    p.add_argument("--calib-seed", type=int, default=CALIB_SEED)
    p.add_argument("--method", choices=sorted(METHODS), default="percentile")
    args = p.parse_args(argv)
    if args.calib_count < 500:
        p.error(f"--calib-count {args.calib_count}: at least 500 frames")

    manifest_path = args.model_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    model = args.model_dir / manifest["file"]
    out = args.model_dir / QDQ_FILE
    start = time.monotonic()
    frames, frames_sha = calibration_frames(args.calib_count, args.calib_seed)
    print(f"quantize: {len(frames)} calibration frames ({frames_sha[:12]})", flush=True)
    quantize(model, out, frames, args.method)
    print(f"quantize: {out} written ({time.monotonic() - start:.0f}s); evaluating", flush=True)
    held = manifest["heldout_metrics"]
    metrics = evaluate_both(
        out,
        manifest["image_size"],
        held.get("frames", 500),
        held.get("seed", DEFAULT_SEED),
        manifest["independent_metrics"].get("frames", DEFAULT_EVAL_COUNT),
        manifest["independent_metrics"]["seed"],
    )
    manifest["int8_qdq"] = {
        "file": QDQ_FILE,
        "sha256": sha256_file(out),
        "size_bytes": out.stat().st_size,
        "format": "ONNX Q/DQ, INT8, symmetric activations and weights, weights per channel",
        "tool": f"onnxruntime.quantization {onnxruntime.__version__} (training/quantize.py)",
        "calibration": {
            "generator": "training/generate_dataset.py",
            "split": "train",
            "seed": args.calib_seed,
            "frames": len(frames),
            "frames_sha256": frames_sha,
            "method": args.method,
            "preprocessing": "rvm_detector Detector.prepare (the detector's own letterbox)",
        },
        "heldout_map50": metrics["heldout_metrics"]["map50"],
        "independent_map50": metrics["independent_metrics"]["map50"],
        "map50_change": {
            "heldout": round(metrics["heldout_metrics"]["map50"] - held["map50"], 4),
            "independent": round(
                metrics["independent_metrics"]["map50"] - manifest["independent_metrics"]["map50"],
                4,
            ),
        },
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest["int8_qdq"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

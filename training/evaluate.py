"""Accuracy of an exported ONNX model on two evaluation sets, by Ultralytics' own validator.

    python training/evaluate.py                       # the committed model, per its manifest
    python training/evaluate.py --model M.onnx --imgsz 256 --val 500 --seed 20250101

1. heldout: the held-out (val) split of the training generator (`deposit_synth`),
   regenerated from the seed (never committed, never trained on);
2. independent: frames of `training/eval_render`, a second renderer that shares no
   drawing code with the training generator and is never used for training.

Both are written into their own folders so that evaluating can never touch a training set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from eval_render.dataset import DEFAULT_EVAL_SEED, renderer_sha256, write_eval_set
from generate_dataset import DEFAULT_SEED, write_dataset
from offline import TRAINING_DIR, import_ultralytics

REPO_DIR = TRAINING_DIR.parent
DEFAULT_MODEL_DIR = REPO_DIR / "models" / "deposit-yolo11n"
HELDOUT_ROOT = TRAINING_DIR / "data" / "heldout"
INDEPENDENT_ROOT = TRAINING_DIR / "data" / "eval_render"
DEFAULT_EVAL_COUNT = 500
VALIDATOR = "Ultralytics DetectionValidator on the ONNX (conf 0.001, IoU 0.7), training/evaluate.py"


def regenerate_heldout(val_count: int, seed: int, root: Path = HELDOUT_ROOT) -> Path:
    """Write only the held-out split and return its data.yaml."""
    return write_dataset(root, {"train": 0, "val": val_count}, seed, os.cpu_count() or 1)


def evaluate_both(
    model: Path,
    imgsz: int,
    val_count: int,
    seed: int,
    eval_count: int = DEFAULT_EVAL_COUNT,
    eval_seed: int = DEFAULT_EVAL_SEED,
) -> dict[str, dict]:
    """The manifest's `heldout_metrics` and `independent_metrics` for an ONNX model."""
    heldout = evaluate_onnx(model, regenerate_heldout(val_count, seed), imgsz)
    independent_yaml = write_eval_set(INDEPENDENT_ROOT, eval_count, eval_seed)
    independent = evaluate_onnx(model, independent_yaml, imgsz)
    return {
        "heldout_metrics": {
            "split": "val",
            "renderer": "training/deposit_synth (the training generator), held-out split",
            "seed": seed,
            "frames": val_count,
            "validator": VALIDATOR,
            **heldout,
        },
        "independent_metrics": {
            "renderer": "training/eval_render (independent; never used for training)",
            "renderer_sha256": renderer_sha256(),
            "seed": eval_seed,
            "frames": eval_count,
            "validator": VALIDATOR,
            **independent,
        },
    }


def evaluate_onnx(model: Path, data_yaml: Path, imgsz: int) -> dict[str, float]:
    """mAP50 and mAP50-95 of the ONNX model on the data set's val split."""
    if not model.is_file():
        raise FileNotFoundError(
            f"no model at {model}: train one with training/train.py or pass --model"
        )
    ultralytics = import_ultralytics()
    yolo = ultralytics.YOLO(str(model), task="detect")
    # A static-shape ONNX takes one image at a time; plots would try to fetch a font.
    metrics = yolo.val(
        data=str(data_yaml),
        imgsz=imgsz,
        batch=1,
        device="cpu",
        plots=False,
        split="val",
        project=str(TRAINING_DIR / "runs"),
        name="evaluate",
        exist_ok=True,
        verbose=False,
    )
    per_class = {
        str(yolo.names[int(c)]): round(float(ap), 4)
        for c, ap in zip(metrics.ap_class_index, metrics.box.ap50, strict=True)
    }
    return {
        "map50": round(float(metrics.box.map50), 4),
        "map50_95": round(float(metrics.box.map), 4),
        "map50_per_class": per_class,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MODEL_DIR / "manifest.json")
    parser.add_argument("--model", type=Path, help="ONNX file (default: beside the manifest)")
    parser.add_argument("--imgsz", type=int, help="input size (default: the manifest's)")
    parser.add_argument("--val", type=int, help="held-out frames (default: the manifest's)")
    parser.add_argument(
        "--seed", type=int, help=f"data seed (default: the manifest's, else {DEFAULT_SEED})"
    )
    parser.add_argument("--eval-count", type=int, help="independent frames (default: manifest's)")
    parser.add_argument("--eval-seed", type=int, help="independent renderer's seed")
    args = parser.parse_args(argv)

    manifest: dict = {}
    if args.manifest.is_file():
        manifest = json.loads(args.manifest.read_text())
    elif None in (args.model, args.imgsz, args.val):
        parser.error(f"{args.manifest} not found: pass --model, --imgsz and --val, or a --manifest")
    model = args.model or args.manifest.parent / "model.onnx"
    imgsz = args.imgsz or manifest["image_size"]
    val_count = args.val or manifest["training_data"]["counts"]["val"]
    seed = (
        args.seed
        if args.seed is not None
        else manifest.get("training_data", {}).get("seed", DEFAULT_SEED)
    )

    independent = manifest.get("independent_metrics", {})
    eval_count = args.eval_count or independent.get("frames", DEFAULT_EVAL_COUNT)
    eval_seed = args.eval_seed or independent.get("seed", DEFAULT_EVAL_SEED)
    result = evaluate_both(model, imgsz, val_count, seed, eval_count, eval_seed)
    print(
        json.dumps(
            {
                "model": str(model),
                "imgsz": imgsz,
                "heldout": {
                    k: result["heldout_metrics"][k] for k in ("frames", "seed", "map50", "map50_95")
                },
                "independent": {
                    k: result["independent_metrics"][k]
                    for k in ("frames", "seed", "map50", "map50_95")
                },
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

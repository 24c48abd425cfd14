"""Held-out accuracy of an exported ONNX model, measured by Ultralytics' own validator.

    python training/evaluate.py                       # the committed model, per its manifest
    python training/evaluate.py --model M.onnx --imgsz 256 --val 300 --seed 20250101

The held-out split is regenerated from the seed (it is never committed), into its own
folder so that evaluating can never touch a training set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from generate_dataset import DEFAULT_SEED, write_dataset
from offline import TRAINING_DIR, import_ultralytics

REPO_DIR = TRAINING_DIR.parent
DEFAULT_MODEL_DIR = REPO_DIR / "models" / "deposit-yolo11n"
HELDOUT_ROOT = TRAINING_DIR / "data" / "heldout"


def regenerate_heldout(val_count: int, seed: int, root: Path = HELDOUT_ROOT) -> Path:
    """Write only the held-out split and return its data.yaml."""
    return write_dataset(root, {"train": 0, "val": val_count}, seed)


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
    return {
        "map50": round(float(metrics.box.map50), 4),
        "map50_95": round(float(metrics.box.map), 4),
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

    data_yaml = regenerate_heldout(val_count, seed)
    result = evaluate_onnx(model, data_yaml, imgsz)
    print(
        json.dumps(
            {"model": str(model), "imgsz": imgsz, "val_frames": val_count, "seed": seed, **result}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

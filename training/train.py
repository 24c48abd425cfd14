"""Build the deposit model from nothing: data set -> YOLO11n from scratch -> ONNX -> manifest.

    nice -n 15 .venv/bin/python training/train.py

runs the whole recipe with the committed defaults and writes
models/deposit-yolo11n/{model.onnx,manifest.json}. Training is on CPU, seeded and in
deterministic mode; no pretrained weights are used and nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from deposit_synth import CLASS_NAMES
from deposit_synth.scene import FRAME_H, FRAME_W
from evaluate import DEFAULT_MODEL_DIR, REPO_DIR, evaluate_onnx
from generate_dataset import DEFAULT_SEED, generator_sha256, write_dataset
from offline import TRAINING_DIR, import_ultralytics
from onnx_artifact import ONNX_OPSET, describe, pin_ir_version, sha256_file

MODEL_NAME = "deposit-yolo11n"
PYTHON = ".venv/bin/python"


def _train_command(args: argparse.Namespace) -> str:
    """The command line that repeats this run, with every recipe argument spelled out."""
    recipe = ("train", "val", "seed", "epochs", "imgsz", "batch", "lr0", "workers", "version")
    flags = " ".join(f"--{k} {getattr(args, k)}" for k in recipe)
    return f"nice -n 15 {PYTHON} training/train.py {flags}"


def train_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Ultralytics train() arguments; recorded verbatim in the manifest."""
    return {
        "epochs": args.epochs,
        "imgsz": args.imgsz,
        "batch": args.batch,
        "workers": args.workers,
        "device": "cpu",
        "seed": args.seed,
        "deterministic": True,
        "pretrained": False,
        "amp": False,  # the AMP check would download yolo11n.pt
        "plots": False,  # plotting would download a font
        "cache": "ram",
        "optimizer": "AdamW",
        # Ultralytics accumulates gradients up to a nominal batch of 64 by default; on a
        # CPU budget every optimizer step counts, so step once per batch.
        "nbs": args.batch,
        "lr0": args.lr0,
        "cos_lr": True,
        "warmup_epochs": 1,
        "close_mosaic": max(1, args.epochs // 5),
        # The chute has no up or down, so vertical flips are as valid as horizontal ones.
        "flipud": 0.5,
        "patience": args.epochs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=2000, help="training frames")
    parser.add_argument("--val", type=int, default=300, help="held-out frames")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr0", type=float, default=0.002)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--version", default="1.0.0", help="model version written to the manifest")
    parser.add_argument("--data", type=Path, default=TRAINING_DIR / "data" / "deposits")
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--name", default="deposit-yolo11n", help="run folder under training/runs")
    args = parser.parse_args(argv)

    started = time.monotonic()
    data_yaml = write_dataset(args.data, {"train": args.train, "val": args.val}, args.seed)
    generated = time.monotonic()

    ultralytics = import_ultralytics()
    import torch

    settings = train_settings(args)
    model = ultralytics.YOLO("yolo11n.yaml")  # architecture only: random initial weights
    model.train(
        data=str(data_yaml),
        project=str(TRAINING_DIR / "runs"),
        name=args.name,
        exist_ok=True,
        **settings,
    )
    trained = time.monotonic()

    # The last epoch's weights, not the best on val: the val split is the held-out one.
    last = TRAINING_DIR / "runs" / args.name / "weights" / "last.pt"
    exported = Path(
        ultralytics.YOLO(str(last)).export(
            format="onnx",
            imgsz=args.imgsz,
            opset=ONNX_OPSET,
            simplify=False,
            dynamic=False,
            nms=False,
            device="cpu",
        )
    )
    pin_ir_version(exported)
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "model.onnx"
    shutil.copyfile(exported, onnx_path)

    metrics = evaluate_onnx(onnx_path, data_yaml, args.imgsz)
    io = describe(onnx_path)
    rel_out = onnx_path.resolve().relative_to(REPO_DIR)
    manifest = {
        "name": MODEL_NAME,
        "version": args.version,
        "file": onnx_path.name,
        "sha256": sha256_file(onnx_path),
        "size_bytes": onnx_path.stat().st_size,
        "architecture": "YOLO11n (yolo11n.yaml), trained from scratch, no pretrained weights",
        "task": "detect",
        "class_names": list(CLASS_NAMES),
        "image_size": args.imgsz,
        "input": {
            **io["inputs"][0],
            "dtype": "float32",
            "layout": "NCHW, RGB, 0..1, letterboxed to image_size with pad value 114/255",
        },
        "output": {
            **io["outputs"][0],
            "dtype": "float32",
            "layout": "(batch, 4 + num_classes, anchors): cx, cy, w, h in input pixels, then "
            "per-class scores after sigmoid; no NMS inside the model",
        },
        "onnx": {"opset": io["opset"], "ir_version": io["ir_version"], "metadata": io["metadata"]},
        "training_data": {
            "generator": "training/generate_dataset.py",
            "generator_sha256": generator_sha256(),
            "seed": args.seed,
            "counts": {"train": args.train, "val": args.val},
            "frame_size": [FRAME_W, FRAME_H],
        },
        "training": {
            **settings,
            "ultralytics": ultralytics.__version__,
            "torch": torch.__version__,
            "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
            "data_generation_s": round(generated - started, 1),
            "training_wall_s": round(trained - generated, 1),
        },
        "heldout_metrics": {
            "split": "val",
            "frames": args.val,
            "validator": "Ultralytics DetectionValidator on the ONNX, training/evaluate.py",
            **metrics,
        },
        "reproduce": {
            "train": _train_command(args),
            "evaluate": f"{PYTHON} training/evaluate.py --manifest {rel_out.parent}/manifest.json",
        },
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(
        json.dumps(
            {
                "model": str(onnx_path),
                **metrics,
                "training_wall_s": manifest["training"]["training_wall_s"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

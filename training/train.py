"""Build the deposit model from nothing: data set -> YOLO11n from scratch -> ONNX -> manifest.

    nice -n 15 .venv/bin/python training/train.py

runs the whole recipe with the committed defaults and writes
models/deposit-yolo11n/{model.onnx,manifest.json}: on the first CUDA GPU when there is
one (`--device cpu` forces the CPU, which takes hours for the committed recipe), seeded
and in deterministic mode; no pretrained weights are used and nothing is downloaded.
The manifest records both evaluation figures (training/evaluate.py): the held-out split
of the training generator and the independent renderer's frames.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from deposit_synth import CLASS_NAMES
from deposit_synth.scene import FRAME_H, FRAME_W, WIDE_FRAME, WIDE_SHARE
from evaluate import DEFAULT_EVAL_COUNT, DEFAULT_MODEL_DIR, REPO_DIR, evaluate_both
from generate_dataset import (
    DEFAULT_SEED,
    generator_sha256,
    write_dataset,
    write_heldout_images,
)
from offline import TRAINING_DIR, import_ultralytics
from onnx_artifact import ONNX_OPSET, describe, pin_ir_version, sha256_file

MODEL_NAME = "deposit-yolo11n"
PYTHON = ".venv/bin/python"


def _train_command(args: argparse.Namespace) -> str:
    """The command line that repeats this run, with every recipe argument spelled out."""
    recipe = (
        "train",
        "val",
        "seed",
        "epochs",
        "imgsz",
        "batch",
        "lr0",
        "workers",
        "device",
        "version",
    )
    flags = " ".join(f"--{k} {getattr(args, k)}" for k in recipe)
    if args.init:
        flags += (
            f" --init {args.init} --warmup-epochs {args.warmup_epochs}"
            f" --close-mosaic {args.close_mosaic} --mosaic {args.mosaic} --reuse-data"
        )
    if args.package_only:
        flags += " --package-only"
    return f"nice -n 15 {PYTHON} training/train.py {flags}"


def _previous_stage(init: Path | None) -> dict[str, Any] | None:
    """The manifest's training section of the weights this run continued from, if known."""
    if init is None or not (init.parent / "manifest.json").is_file():
        return None
    earlier = json.loads((init.parent / "manifest.json").read_text())
    return {k: earlier[k] for k in ("version", "training", "reproduce") if k in earlier}


def _default_device() -> str:
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def _has_data(root: Path, counts: dict[str, int]) -> bool:
    """A data set of these counts is there (frames are a pure function of seed and index)."""
    return (root / "data.yaml").is_file() and all(
        len(list((root / "images" / split).glob("*.jpg"))) == n for split, n in counts.items()
    )


def _epochs_done(run_dir: Path) -> int:
    """Epochs that finished (rows of Ultralytics' results.csv)."""
    with (run_dir / "results.csv").open() as f:
        return sum(1 for _ in csv.DictReader(f))


def _machine(device: str, threads: int) -> str:
    import torch

    cpu = f"{platform.machine()} CPU, {os.cpu_count()} cores"
    if device != "cpu" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} GPU, {cpu}"
    return f"{cpu}, {threads} torch threads"


CHECK_FRAMES = 24
CHECK_ARCHIVE = "check_frames.tar"


def write_check_frames(out_dir: Path, seed: int) -> dict[str, Any]:
    """The TensorRT gate's frames beside the model, and their manifest entry.

    The first CHECK_FRAMES held-out frames, labels dropped, in a tar whose bytes depend on the
    frames only (fixed owner, mode and time), so the same generator gives the same sha256.
    """
    archive = out_dir / CHECK_ARCHIVE
    with tempfile.TemporaryDirectory() as tmp:
        frames = write_heldout_images(tmp, CHECK_FRAMES, seed)
        with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tar:
            for frame in frames:
                info = tarfile.TarInfo(f"./{frame.name}")
                info.size, info.mode, info.mtime = frame.stat().st_size, 0o644, 0
                with frame.open("rb") as f:
                    tar.addfile(info, f)
    return {
        "archive": CHECK_ARCHIVE,
        "sha256": sha256_file(archive),
        "count": CHECK_FRAMES,
        "made_by": f"training/train.py write_check_frames: generate_dataset.write_heldout_images"
        f"(out, {CHECK_FRAMES}) (val split, seed {seed}), labels dropped",
        "use": "the TensorRT engine gate: rvm-detector gate compares the engine with this ONNX "
        "model on these frames (the role unpacks the archive into check_frames/ beside "
        "model.onnx)",
    }


def train_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Ultralytics train() arguments; recorded verbatim in the manifest."""
    settings: dict[str, Any] = {
        "epochs": args.epochs,
        "imgsz": args.imgsz,
        "batch": args.batch,
        "workers": args.workers,
        "device": args.device,
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
        "warmup_epochs": args.warmup_epochs,
        "mosaic": args.mosaic,
        "close_mosaic": (
            args.close_mosaic if args.close_mosaic is not None else max(1, min(5, args.epochs // 5))
        ),
        # The chute has no up or down, so vertical flips are as valid as horizontal ones.
        "flipud": 0.5,
        "patience": max(args.epochs, 100),
    }
    if args.time:
        # Wall-clock budget in hours: Ultralytics re-sizes the epoch count (and the LR
        # schedule) after the first epoch so that training ends in time.
        settings["time"] = args.time
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=12000, help="training frames")
    parser.add_argument("--val", type=int, default=500, help="held-out frames")
    parser.add_argument("--eval-count", type=int, default=DEFAULT_EVAL_COUNT, help="independent")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--time", type=float, help="stop after this many hours (overrides --epochs)"
    )
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr0", type=float, default=0.002)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--device", help="cpu, or a CUDA device index (default: 0 if CUDA)")
    parser.add_argument("--version", default="2.0.0", help="model version written to the manifest")
    parser.add_argument(
        "--init",
        type=Path,
        help="continue from these weights (.pt, or an exported .onnx) instead of random ones",
    )
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--mosaic", type=float, default=1.0, help="mosaic probability")
    parser.add_argument("--close-mosaic", type=int, help="default: epochs // 5, at most 5")
    parser.add_argument(
        "--reuse-data",
        action="store_true",
        help="keep an existing data set of the same counts under --data instead of redrawing it",
    )
    parser.add_argument(
        "--package-only",
        action="store_true",
        help="no training: take the --init ONNX as the model, evaluate it and write the manifest",
    )
    parser.add_argument("--data", type=Path, default=TRAINING_DIR / "data" / "deposits")
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--name", default="deposit-yolo11n", help="run folder under training/runs")
    args = parser.parse_args(argv)
    if args.package_only and not (args.init and args.init.suffix == ".onnx"):
        parser.error("--package-only needs --init with an exported .onnx")

    args.device = args.device or _default_device()
    started = time.monotonic()
    counts = {"train": args.train, "val": args.val}
    data_yaml = args.data / "data.yaml"
    if not (args.package_only or (args.reuse_data and _has_data(args.data, counts))):
        data_yaml = write_dataset(args.data, counts, args.seed, os.cpu_count() or 1)
    generated = time.monotonic()

    ultralytics = import_ultralytics()
    import torch

    settings = train_settings(args)
    if args.init and not args.package_only:
        init = args.init
        if init.suffix == ".onnx":
            from onnx_to_checkpoint import convert

            init = convert(init, TRAINING_DIR / "runs" / f"{args.name}-init.pt")
        model = ultralytics.YOLO(str(init))  # earlier weights of this same recipe
        settings["pretrained"] = True  # i.e. start from `init`; still no external weights
    elif not args.package_only:
        model = ultralytics.YOLO("yolo11n.yaml")  # architecture only: random initial weights
    threads = os.cpu_count() or 1
    if args.device == "cpu" and not args.package_only:
        # Ultralytics trains on cores - 1 threads (one on a 2-core machine) and loads data on
        # the main thread in between; all cores take a batch in 0.53 s instead of 0.92 s
        # (YOLO11n, 16 frames at 256, 2 cores). Set after Ultralytics picks the device; its
        # export resets the count, so the manifest records this figure, not a late reading.
        model.add_callback("on_pretrain_routine_start", lambda _: torch.set_num_threads(threads))
    if args.package_only:
        trained = time.monotonic()
        epochs_done = 0
        args.out.mkdir(parents=True, exist_ok=True)
        onnx_path = args.out / "model.onnx"
        shutil.copyfile(args.init, onnx_path)
    else:
        model.train(
            data=str(data_yaml),
            project=str(TRAINING_DIR / "runs"),
            name=args.name,
            exist_ok=True,
            **settings,
        )
        trained = time.monotonic()
        run_dir = TRAINING_DIR / "runs" / args.name
        epochs_done = _epochs_done(run_dir)

        # The last epoch's weights, not the best on val: the val split is the held-out one.
        last = run_dir / "weights" / "last.pt"
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

    exported_at = time.monotonic()
    metrics = evaluate_both(onnx_path, args.imgsz, args.val, args.seed, args.eval_count)
    io = describe(onnx_path)
    try:
        rel_out = onnx_path.resolve().parent.relative_to(REPO_DIR)
    except ValueError:  # written outside the repository (e.g. on a training machine)
        rel_out = Path("models") / MODEL_NAME
    recipe = argparse.Namespace(
        **{**vars(args), "epochs": epochs_done, "close_mosaic": settings["close_mosaic"]}
    )
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
            "wide_frame_size": list(WIDE_FRAME),
            "wide_share": WIDE_SHARE,
        },
        "training": {
            **settings,
            "epochs_done": epochs_done,
            "ultralytics": ultralytics.__version__,
            "torch": torch.__version__,
            "machine": _machine(args.device, threads),
            "data_generation_s": round(generated - started, 1),
            "training_wall_s": round(trained - generated, 1),
            "export_s": round(exported_at - trained, 1),
            "command": " ".join(["training/train.py", *(argv or sys.argv[1:])]),
            "continued_from": _previous_stage(args.init),
            "package_only": args.package_only,
        },
        **metrics,
        "check_frames": write_check_frames(args.out, args.seed),
        "reproduce": {
            "train": _train_command(recipe),
            "evaluate": f"{PYTHON} training/evaluate.py --manifest {rel_out}/manifest.json",
        },
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(
        json.dumps(
            {
                "model": str(onnx_path),
                "heldout_map50": metrics["heldout_metrics"]["map50"],
                "independent_map50": metrics["independent_metrics"]["map50"],
                "epochs_done": epochs_done,
                "training_wall_s": manifest["training"]["training_wall_s"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`rvm-detector bench`: where per-frame time goes, contenders side by side in one run.

(a) the raw inference call on an already prepared tensor, (b) our end-to-end
`Detector.detect` (letterbox + inference + decode/NMS), and optionally (c)
Ultralytics' `predict` on the same model file. Calls are interleaved in a
rotating order so background load hits every contender alike. `--rss` also
starts `rvm-detector run` on the same model and reads its resident memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rvm_detector.detector import Detector, load_detector


def synthetic_frames(n: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Camera-sized frames with a few coloured shapes, when no images are given."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        img = np.full((480, 640, 3), rng.integers(40, 200), np.uint8)
        for _ in range(3):
            x, y = int(rng.integers(0, 560)), int(rng.integers(0, 400))
            color = tuple(int(c) for c in rng.integers(0, 255, 3))
            cv2.rectangle(img, (x, y), (x + 80, y + 80), color, -1)
        frames.append(img)
    return frames


def _ultralytics_predict(detector: Detector, model: Path) -> Callable[[np.ndarray], Any]:
    os.environ.setdefault("YOLO_OFFLINE", "1")  # never reach for the hub
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    # Its info lines ("Loading ...") go to stdout, which belongs to --json.
    LOGGER.setLevel(logging.WARNING)
    yolo = YOLO(str(model), task="detect")
    h, w = detector.info.input_hw

    def predict(image: np.ndarray) -> Any:
        return yolo.predict(
            image,
            conf=detector.conf,
            iou=detector.iou,
            max_det=detector.max_det,
            imgsz=(h, w),
            verbose=False,
        )

    return predict


def time_interleaved(
    contenders: dict[str, Callable[[int], Any]], runs: int, warmup: int
) -> dict[str, list[float]]:
    """Per-call seconds for each contender; call i of every contender uses input i."""
    names = list(contenders)
    for i in range(warmup):
        for name in names:
            contenders[name](i)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(runs):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            contenders[name](i)
            times[name].append(time.perf_counter() - start)
    return times


def summarize(times: list[float]) -> dict[str, float]:
    ms = np.asarray(times) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "n": len(times),
    }


def measure_run_rss(model: Path, images: list[np.ndarray], settle_s: float = 5.0) -> dict[str, Any]:
    """Start `rvm-detector run` on `model` in continuous mode; its RSS once detecting."""
    with tempfile.TemporaryDirectory(prefix="rvm-bench-") as tmp:
        root = Path(tmp)
        frames = root / "frames"
        frames.mkdir()
        for i, img in enumerate(images):
            cv2.imwrite(str(frames / f"{i:04d}.jpg"), img)
        key = root / "api_key"
        key.write_text("rvm_" + "0" * 60)
        key.chmod(0o600)
        config = root / "config.yaml"
        config.write_text(
            json.dumps(
                {
                    "camera": {"source": str(frames), "fps": 10},
                    "model": {"path": str(model.resolve())},
                    "platform": {"base_url": "http://127.0.0.1:9", "api_key_file": str(key)},
                    "spool": {"dir": str(root / "spool")},
                    "http": {"listen": "127.0.0.1:0"},
                    "trigger": {"mode": "continuous", "fps": 10},
                    "verdict": {"accept": {}},
                }
            )
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "rvm_detector.cli", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if "model loaded" in line or "model not usable" in line:
                    break
            deadline = time.monotonic() + settle_s
            peak_rss = 0
            while time.monotonic() < deadline and proc.poll() is None:
                peak_rss = max(peak_rss, _status_kb(proc.pid, "VmRSS"))
                time.sleep(0.2)
            hwm = _status_kb(proc.pid, "VmHWM")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
    return {"rss_mb": round(peak_rss / 1024, 1), "hwm_mb": round(hwm / 1024, 1)}


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run_bench(args: argparse.Namespace) -> int:
    detector = load_detector(args.model, args.backend, args.conf, args.iou, args.max_det)
    if args.images:
        images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in args.images]
        bad = [str(p) for p, img in zip(args.images, images, strict=True) if img is None]
        if bad:
            print(f"error: not readable images: {', '.join(bad)}", file=sys.stderr)
            return 2
    else:
        images = synthetic_frames()
    n = len(images)
    tensors = [detector.prepare(img)[0] for img in images]
    contenders: dict[str, Callable[[int], Any]] = {
        "a_raw_inference": lambda i: detector.backend.infer(tensors[i % n]),
        "b_end_to_end": lambda i: detector.detect(images[i % n]),
    }
    if args.compare_ultralytics:
        predict = _ultralytics_predict(detector, args.model)
        contenders["c_ultralytics_predict"] = lambda i: predict(images[i % n])
    times = time_interleaved(contenders, args.runs, args.warmup)
    result: dict[str, Any] = {
        "model": str(args.model),
        "backend": detector.info.backend,
        "input_hw": list(detector.info.input_hw),
        "image_hw": sorted({tuple(img.shape[:2]) for img in images}),
        "images": n,
        "cpu_count": os.cpu_count(),
        **{name: summarize(t) for name, t in times.items()},
    }
    a, b = result["a_raw_inference"], result["b_end_to_end"]
    result["ratio_b_over_a"] = {k: round(b[k] / a[k], 3) for k in ("p50_ms", "p95_ms")}
    if "c_ultralytics_predict" in result:
        c = result["c_ultralytics_predict"]
        result["ratio_b_over_c"] = {k: round(b[k] / c[k], 3) for k in ("p50_ms", "p95_ms")}
    if args.rss:
        result["run_memory"] = measure_run_rss(args.model, images)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(result)
    return 0


def _print_table(r: dict[str, Any]) -> None:
    print(f"model {r['model']} ({r['backend']}), input {r['input_hw']}, {r['images']} images")
    print(f"{'contender':<24} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
    for name in ("a_raw_inference", "b_end_to_end", "c_ultralytics_predict"):
        if name in r:
            s = r[name]
            print(f"{name:<24} {s['p50_ms']:>8.2f} {s['p95_ms']:>8.2f} {s['mean_ms']:>8.2f}")
    for key in ("ratio_b_over_a", "ratio_b_over_c"):
        if key in r:
            print(f"{key:<24} p50 {r[key]['p50_ms']:.3f}  p95 {r[key]['p95_ms']:.3f}")
    if "run_memory" in r:
        m = r["run_memory"]
        print(f"rvm-detector run: RSS {m['rss_mb']} MB (peak {m['hwm_mb']} MB)")

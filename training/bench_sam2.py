"""The SAM2 budget on this machine: what ships beside SAM2 at full size, one run each.

    nice -n 15 python training/bench_sam2.py --checkpoint training/runs/sam2/ckpt.pt

Contenders, all the same weights:
- shipped: models/sam2-tiny-{encoder,decoder} (256 px, int8 encoder),
- 256 px fp32 encoder (same export, not quantised),
- full size: 1024 px fp32, SAM2's own input size.
Figures: segmentation of one deposit frame (encoder + one decoder per item) p50/p90 with the
runtime's `Sam2Segmenter`; `POST /deposit` p50/p99 through a real `rvm-detector run`
(segmentation off / shipped / full size); the service's RSS (VmHWM) with both models loaded.
Prints one JSON object; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "app" / "src"))

import sam2_data  # noqa: E402
from rvm_detector.records import Detection  # noqa: E402
from rvm_detector.segment import Sam2Segmenter  # noqa: E402


def export_pair(checkpoint: Path, size: int, encoder: str, out: Path) -> tuple[Path, Path]:
    import export_sam2
    import sam2_model
    import torch

    torch.manual_seed(0)
    sam = sam2_model.build(size, checkpoint)
    enc, dec = export_sam2.export_graphs(sam, size, out / "raw")
    if encoder == "int8":
        q = out / "raw" / "encoder.int8.onnx"
        export_sam2.quantize_int8(enc, q)
        enc = q
    common = {"image_size": size, "weights_sha256": "bench", "version": f"bench-{size}-{encoder}"}
    pair = []
    for src, task in ((enc, "sam2-encoder"), (dec, "sam2-decoder")):
        d = out / task
        d.mkdir(parents=True, exist_ok=True)
        (d / "model.onnx").write_bytes(src.read_bytes())
        export_sam2._write_manifest(d, task, "bench", common, {})
        pair.append(d / "model.onnx")
    return pair[0], pair[1]


def time_segment(pair: tuple[Path, Path], frames, threads: int) -> dict:
    seg = Sam2Segmenter(*pair, threads=threads)
    times = []
    for k, (image, boxes, _) in enumerate(frames):
        dets = [Detection("item", 1.0, (b.x1, b.y1, b.x2, b.y2)) for b in boxes]
        t = time.perf_counter()
        seg.segment(image, dets)
        if k >= 3:  # warm-up
            times.append(time.perf_counter() - t)
    return {
        "segment_s_p50": round(float(np.percentile(times, 50)), 3),
        "segment_s_p90": round(float(np.percentile(times, 90)), 3),
        "frames": len(times),
        "encoder_mb": round(pair[0].stat().st_size / 2**20, 1),
        "decoder_mb": round(pair[1].stat().st_size / 2**20, 1),
    }


def _vm(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def time_deposits(tmp: Path, pair, frames, n: int, threads: int) -> dict:
    """`rvm-detector run` with a video camera; n sequential POST /deposit."""
    import httpx
    import yaml

    video = tmp / "chute.avi"
    h, w = frames[0][0].shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (w, h))
    for image, _, _ in frames:
        writer.write(image)
    writer.release()
    key = tmp / "key"
    key.write_text("rvm_" + "b" * 60)
    key.chmod(0o600)
    config = {
        "camera": {"source": str(video), "fps": 30},
        "model": {"path": str(ROOT / "models/deposit-yolo11n/model.onnx"), "threads": threads},
        "platform": {"base_url": "http://127.0.0.1:9", "api_key_file": str(key)},
        "spool": {"dir": str(tmp / "spool")},
        "http": {"listen": "127.0.0.1:0"},
    }
    if pair is not None:
        config["segment"] = {"encoder": str(pair[0]), "decoder": str(pair[1]), "threads": threads}
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "rvm_detector.cli", "run", "--config", str(tmp / "config.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = None
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") == "http listening":
            url = f"http://{entry['host']}:{entry['port']}"
            break
    assert url, "the service did not start"
    try:
        deadline = time.monotonic() + 120
        while httpx.get(url + "/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.2)
        detail = httpx.get(url + "/readyz", timeout=10).json()["checks"]["segmentation"]["detail"]
        times = []
        for i in range(n):
            t = time.perf_counter()
            r = httpx.post(url + "/deposit", json={"session_id": f"b-{i}"}, timeout=60)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
        rss, hwm = _vm(proc.pid, "VmRSS"), _vm(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "segmentation": detail[:60],
        "deposits": n,
        "deposit_s_p50": round(float(np.percentile(times, 50)), 3),
        "deposit_s_p99": round(float(np.percentile(times, 99)), 3),
        "rss_mb": round(rss, 1),
        "rss_peak_mb": round(hwm, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "training/runs/sam2/ckpt.pt")
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--deposits", type=int, default=60)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args(argv)

    frames = []
    i = 0
    while len(frames) < args.frames:
        f = sam2_data.sample(sam2_data.DEFAULT_SEED, "sam2-val", i)
        i += 1
        if f[1]:
            frames.append(f)
    shipped = (
        ROOT / "models/sam2-tiny-encoder/model.onnx",
        ROOT / "models/sam2-tiny-decoder/model.onnx",
    )
    out: dict = {"machine": f"{os.cpu_count()} CPUs, onnxruntime threads={args.threads}"}
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        fp32 = export_pair(args.checkpoint, 256, "fp32", tmpd / "s256")
        full = export_pair(args.checkpoint, 1024, "fp32", tmpd / "s1024")
        out["segment"] = {
            "shipped_256_int8": time_segment(shipped, frames, args.threads),
            "256_fp32": time_segment(fp32, frames, args.threads),
            "full_1024_fp32": time_segment(full, frames, args.threads),
        }
        print(json.dumps(out, indent=1), flush=True)
        out["deposit"] = {}
        for name, pair, n in (
            ("segmentation_off", None, args.deposits),
            ("shipped_256_int8", shipped, args.deposits),
            ("full_1024_fp32", full, max(20, args.deposits // 3)),
        ):
            d = tmpd / f"run-{name}"
            d.mkdir()
            out["deposit"][name] = time_deposits(d, pair, frames, n, args.threads)
            print(json.dumps({name: out["deposit"][name]}), flush=True)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

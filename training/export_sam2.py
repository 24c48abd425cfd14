"""Export SAM2.1 hiera-tiny (box prompts) to two ONNX graphs, check them, write manifests.

    python training/export_sam2.py --checkpoint training/runs/sam2/ckpt.pt
    python training/export_sam2.py --checkpoint sam2.1_hiera_tiny.pt --image-size 1024 \\
        --out models --name sam2.1-tiny-meta          # Meta's official weights (models/README.md)

Writes `<out>/<name>-encoder/{model.onnx,manifest.json}` and `<out>/<name>-decoder/...`
(opset 17). The encoder is dynamically quantised to int8 (`--encoder int8`, the
default) or kept fp32 (`--encoder fp32`). Before the manifests are written the shipped
graphs are run through the detector's own runtime (`rvm_detector.segment`) on held-out
generator frames and compared with the PyTorch model on the same inputs:

- parity: mask IoU of ONNX vs PyTorch masks (must be >= --min-parity, default 0.99),
- accuracy: mask IoU against the generator's exact masks with ground-truth box prompts,
  and with the boxes of the detector (`--detector`, models/deposit-yolo11n).
Each figure lands in both manifests under `heldout_metrics`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "app" / "src"))

import sam2_data  # noqa: E402
import sam2_model  # noqa: E402
from onnx_artifact import ONNX_OPSET, describe, pin_ir_version, sha256_file  # noqa: E402
from rvm_detector.records import Detection  # noqa: E402
from rvm_detector.segment import Sam2Segmenter  # noqa: E402


def export_graphs(sam: torch.nn.Module, size: int, out: Path) -> tuple[Path, Path]:
    """encoder.onnx and decoder.onnx (fp32) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    enc, dec = sam2_model.ImageEncoder(sam).eval(), sam2_model.BoxDecoder(sam).eval()
    image = torch.rand(1, 3, size, size)
    with torch.no_grad():
        feats = enc(image)
    enc_path, dec_path = out / "encoder.onnx", out / "decoder.onnx"
    torch.onnx.export(
        enc,
        (image,),
        str(enc_path),
        input_names=["image"],
        output_names=["image_embed", "high_res_0", "high_res_1"],
        opset_version=ONNX_OPSET,
        dynamo=False,
    )
    boxes = torch.tensor([[size * 0.2, size * 0.25, size * 0.7, size * 0.8]])
    torch.onnx.export(
        dec,
        (*feats, boxes),
        str(dec_path),
        input_names=["image_embed", "high_res_0", "high_res_1", "boxes"],
        output_names=["mask_logits", "iou"],
        dynamic_axes={"boxes": {0: "n"}, "mask_logits": {0: "n"}, "iou": {0: "n"}},
        opset_version=ONNX_OPSET,
        dynamo=False,
    )
    for p in (enc_path, dec_path):
        pin_ir_version(p)
    return enc_path, dec_path


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 weights for the encoder's MatMul/Gemm (activations stay float)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
    )


class TorchRef:
    """The PyTorch model with the runtime's exact pre/post-processing."""

    def __init__(self, sam: torch.nn.Module, size: int) -> None:
        self.enc = sam2_model.ImageEncoder(sam).eval()
        self.dec = sam2_model.BoxDecoder(sam).eval()
        self.size = size

    @torch.no_grad()
    def segment(self, image: np.ndarray, boxes: list[tuple[float, float, float, float]]):
        import cv2

        h, w = image.shape[:2]
        rgb = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (self.size, self.size))
        x = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)[None]
        feats = self.enc(x)
        out = []
        for x1, y1, x2, y2 in boxes:
            s = self.size
            b = torch.tensor([[x1 * s / w, y1 * s / h, x2 * s / w, y2 * s / h]])
            logits, _ = self.dec(*feats, b)
            out.append(cv2.resize(logits[0, 0].numpy(), (w, h)) > 0)
        return out


def evaluate(
    seg: Sam2Segmenter,
    ref: TorchRef | None,
    frames: int,
    seed: int,
    detector_path: Path | None,
) -> dict:
    """Mean mask IoUs on held-out frames (split sam2-val)."""
    detector = None
    if detector_path is not None:
        from rvm_detector.detector import load_detector

        detector = load_detector(detector_path, "onnxruntime", 0.25, 0.7, 300)
    gt_ious, det_ious, parity, enc_s = [], [], [], []
    gt_items = matched = 0
    for i in range(frames):
        image, boxes, masks = sam2_data.sample(seed, "sam2-val", i)
        if not boxes:
            continue
        dets = [Detection(str(b.cls), 1.0, (b.x1, b.y1, b.x2, b.y2)) for b in boxes]
        t = time.perf_counter()
        pred = seg.segment(image, dets)
        enc_s.append(time.perf_counter() - t)
        gt_ious += [sam2_data.mask_iou(p, m) for p, m in zip(pred, masks, strict=True)]
        if ref is not None:
            tp = ref.segment(image, [d.box for d in dets])
            parity += [sam2_data.mask_iou(p, q) for p, q in zip(pred, tp, strict=True)]
        if detector is not None:
            found = detector.detect(image)
            gt_items += len(boxes)
            used: set[int] = set()
            for b, m in zip(boxes, masks, strict=True):
                best, best_iou = None, 0.5
                for k, d in enumerate(found):
                    if k in used:
                        continue
                    iou = _box_iou((b.x1, b.y1, b.x2, b.y2), d.box)
                    if iou >= best_iou:
                        best, best_iou = k, iou
                if best is None:
                    continue
                used.add(best)
                matched += 1
                (pm,) = seg.segment(image, [found[best]])
                det_ious.append(sam2_data.mask_iou(pm, m))
    out = {
        "split": "sam2-val",
        "seed": seed,
        "frames": frames,
        "items": len(gt_ious),
        "mask_iou_gt_boxes": round(float(np.mean(gt_ious)), 4),
        "segment_s_p50": round(float(np.median(enc_s)), 4),
    }
    if parity:
        out["parity_mask_iou_vs_pytorch"] = round(float(np.mean(parity)), 4)
        out["parity_mask_iou_vs_pytorch_min"] = round(float(np.min(parity)), 4)
    if detector is not None:
        out["mask_iou_detector_boxes"] = round(float(np.mean(det_ious)), 4)
        out["detector_items_matched"] = f"{matched}/{gt_items}"
    return out


def _box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--checkpoint",
        type=Path,
        help="SAM2.1 hiera-tiny weights (ours or Meta's); none = random init",
    )
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--out", type=Path, default=ROOT / "models")
    ap.add_argument("--name", default="sam2-tiny")
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--encoder", choices=["int8", "fp32"], default="int8")
    ap.add_argument("--frames", type=int, default=300, help="held-out frames to measure on")
    ap.add_argument("--seed", type=int, default=sam2_data.DEFAULT_SEED)
    ap.add_argument("--detector", type=Path, default=ROOT / "models/deposit-yolo11n/model.onnx")
    ap.add_argument("--no-detector", action="store_true")
    ap.add_argument("--min-parity", type=float, default=0.99)
    ap.add_argument(
        "--training-log", type=Path, help="train_sam2.py's log, summarised into the manifest"
    )
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    size = args.image_size
    sam = sam2_model.build(size, args.checkpoint)
    weights_sha = sha256_file(args.checkpoint) if args.checkpoint else "random-init-seed-0"
    ref = TorchRef(sam, size)
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        enc32, dec = export_graphs(sam, size, tmpd)
        enc = enc32
        if args.encoder == "int8":
            enc = tmpd / "encoder.int8.onnx"
            quantize_int8(enc32, enc)
        enc_dir = args.out / f"{args.name}-encoder"
        dec_dir = args.out / f"{args.name}-decoder"
        for d, src in ((enc_dir, enc), (dec_dir, dec)):
            d.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, d / "model.onnx")
        common = {
            "version": args.version,
            "architecture": "SAM2.1 hiera-tiny (sam2 1.1.0 configs/sam2.1/sam2.1_hiera_t.yaml), "
            "image encoder + prompt encoder + mask decoder, box prompts, single mask",
            "image_size": size,
            "weights": str(args.checkpoint) if args.checkpoint else None,
            "weights_sha256": weights_sha,
            "preprocess": "BGR->RGB, resize (not letterbox) to image_size x image_size with "
            "INTER_LINEAR, 0..1 float32 NCHW; ImageNet mean/std inside the graph",
            "postprocess": "mask_logits [N,1,S/4,S/4] resized bilinearly to the frame, > 0",
        }
        # Provisional manifests so the runtime's checks (sha, task, pair) run on the export.
        for d, task in ((enc_dir, "sam2-encoder"), (dec_dir, "sam2-decoder")):
            _write_manifest(d, task, args.name, common, {})
        seg = Sam2Segmenter(enc_dir / "model.onnx", dec_dir / "model.onnx")
        detector = None if args.no_detector else args.detector
        metrics = evaluate(seg, ref, args.frames, args.seed, detector)
        metrics["encoder_precision"] = args.encoder
        metrics["runtime"] = "rvm_detector.segment.Sam2Segmenter (onnxruntime CPU)"
        if args.training_log and args.training_log.is_file():
            lines = [json.loads(x) for x in args.training_log.read_text().splitlines() if x.strip()]
            done = [x for x in lines if x.get("event") == "done"]
            if done:
                common["training"] = {
                    k: done[-1][k] for k in ("steps", "images_seen", "loop_s", "args")
                }
                common["training"]["val_mask_iou_gt_boxes_pytorch"] = done[-1][
                    "val_mask_iou_gt_boxes"
                ]
        for d, task in ((enc_dir, "sam2-encoder"), (dec_dir, "sam2-decoder")):
            _write_manifest(d, task, args.name, common, metrics)
    print(json.dumps(metrics, indent=1))
    parity = metrics.get("parity_mask_iou_vs_pytorch", 1.0)
    if parity < args.min_parity:
        print(f"error: ONNX vs PyTorch mask IoU {parity} < {args.min_parity}", file=sys.stderr)
        return 1
    return 0


def _write_manifest(d: Path, task: str, name: str, common: dict, metrics: dict) -> None:
    model = d / "model.onnx"
    info = describe(model)
    manifest = {
        "name": d.name,
        "task": task,
        "pair": name,
        "file": "model.onnx",
        "sha256": sha256_file(model),
        "size_bytes": model.stat().st_size,
        **common,
        "onnx": {"opset": info["opset"], "ir_version": info["ir_version"]},
        "inputs": info["inputs"],
        "outputs": info["outputs"],
        "heldout_metrics": metrics,
        "reproduce": {
            "train": "make sam2   (training/train_sam2.py; see models/README.md)",
            "export": "python training/export_sam2.py --checkpoint training/runs/sam2/ckpt.pt",
        },
    }
    (d / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())

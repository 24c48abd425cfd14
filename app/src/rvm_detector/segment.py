"""Segmentation of a deposit's items: SAM2 (box prompts) on ONNX Runtime.

Deposits only, never the continuous scan: one encoder pass per deposit frame, then
one decoder pass per detected item, prompted with the item's box. The two graphs
come from `training/export_sam2.py` (see models/README.md), each in a directory with
its `manifest.json`; the manifests are checked before a session is made (sha256 of
the file, the graph's role and input size, and that encoder and decoder were
exported from the same weights), so a wrong or damaged file is refused with the
reason instead of producing nonsense masks.

`Sam2Segmenter.segment()` returns one boolean mask per detection in the original
image's pixels; `describe()` turns a mask into what the deposit record carries
(polygons, area, fill ratio of the box) and `mask_png()` / `overlay_jpeg()` make the
images `POST /edge/upload-image` takes. Nothing here imports torch or sam2.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from rvm_detector.detector import sha256_file
from rvm_detector.metrics import REGISTRY
from rvm_detector.records import Detection, MaskInfo

log = logging.getLogger(__name__)

# The platform refuses a mask_image above 1 MiB (platform-api.md).
MAX_MASK_PNG = 1024 * 1024

SEGMENTATION_ENABLED = Gauge(
    "rvm_segmentation_enabled",
    "1 while SAM2 segmentation is loaded and used for deposits, 0 when it is off",
    registry=REGISTRY,
)
SEGMENTATION_SECONDS = Histogram(
    "rvm_segmentation_seconds",
    "SAM2 time per deposit frame: encoder once plus the decoder per item",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0),
    registry=REGISTRY,
)
SEGMENTATION_FAILURES = Counter(
    "rvm_segmentation_failures_total",
    "Deposits kept without masks, by reason (model: SAM2 not loadable; inference: a run "
    "failed; encode: the mask image could not be made)",
    ["reason"],
    registry=REGISTRY,
)
for _reason in ("model", "inference", "encode"):
    SEGMENTATION_FAILURES.labels(_reason)


class SegmentationError(Exception):
    """SAM2 cannot be used or a run failed; the message says why."""


class Segmenter(Protocol):
    def segment(self, image: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
        """One boolean HxW mask per detection, in the same order; may be empty."""


class NoSegmenter:
    """Segmentation off: deposits carry no masks."""

    def __init__(self, reason: str = "segmentation not configured") -> None:
        self.reason = reason

    def segment(self, image: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
        return []


def describe(mask: np.ndarray, box: tuple[float, float, float, float]) -> MaskInfo:
    """Polygons (outer contours, simplified to about a pixel), area and fill of one mask."""
    m = mask.astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for c in sorted(contours, key=cv2.contourArea, reverse=True):
        c = cv2.approxPolyDP(c, 0.7, True)
        if len(c) >= 3:
            polygons.append(tuple(float(v) for v in c.reshape(-1)))
    area = int(np.count_nonzero(m))
    x1, y1, x2, y2 = box
    box_area = max((x2 - x1) * (y2 - y1), 1e-6)
    return MaskInfo(tuple(polygons), area, area / box_area)


def mask_png(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> bytes:
    """One 8-bit PNG for the frame: 0 background, k for the k-th detected item (1-based).

    Raises SegmentationError when it cannot be made or exceeds the platform's 1 MiB.
    """
    if len(masks) > 255:
        raise SegmentationError(f"{len(masks)} masks do not fit an 8-bit label image")
    labels = np.zeros(shape[:2], np.uint8)
    for k, m in enumerate(masks, start=1):
        if m.shape != labels.shape:
            raise SegmentationError(f"mask {k} is {m.shape}, the frame {labels.shape}")
        labels[m] = k
    ok, png = cv2.imencode(".png", labels, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise SegmentationError("OpenCV could not encode the mask PNG")
    if len(png) > MAX_MASK_PNG:
        raise SegmentationError(f"mask PNG is {len(png)} bytes, above the platform's 1 MiB")
    return png.tobytes()


_COLOURS = np.array([(0, 200, 255), (255, 120, 0), (80, 220, 80), (200, 80, 255)], np.float32)


def overlay_jpeg(
    image: np.ndarray, masks: Sequence[np.ndarray], detections: Sequence[Detection], quality: int
) -> bytes:
    """The frame with each mask tinted and its box drawn: the `processed_image`."""
    out = image.astype(np.float32)
    for k, m in enumerate(masks):
        colour = _COLOURS[k % len(_COLOURS)]
        out[m] = out[m] * 0.45 + colour * 0.55
    out = out.astype(np.uint8)
    for k, d in enumerate(detections):
        x1, y1, x2, y2 = (round(float(v)) for v in d.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), _COLOURS[k % len(_COLOURS)].tolist(), 1)
    ok, jpeg = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise SegmentationError("OpenCV could not encode the processed JPEG")
    return jpeg.tobytes()


# -- SAM2 on ONNX Runtime ---------------------------------------------------------

ENCODER_INPUTS = {"image"}
ENCODER_OUTPUTS = ("image_embed", "high_res_0", "high_res_1")
DECODER_INPUTS = {"image_embed", "high_res_0", "high_res_1", "boxes"}
DECODER_OUTPUTS = ("mask_logits", "iou")


def _manifest(model: Path, task: str) -> dict[str, Any]:
    path = model.parent / "manifest.json"
    if not model.is_file():
        raise SegmentationError(f"SAM2 {task} {model} does not exist")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SegmentationError(f"{path}: not a readable manifest ({e})") from None
    if not isinstance(data, dict) or data.get("task") != task:
        raise SegmentationError(
            f"{path}: task is {data.get('task') if isinstance(data, dict) else None!r}, "
            f"expected {task!r}; is this the other half of the SAM2 pair?"
        )
    actual = sha256_file(model)
    if data.get("sha256") != actual:
        raise SegmentationError(
            f"{model}: sha256 {actual} does not match its manifest ({data.get('sha256')}); "
            "the file is damaged or not the one the manifest describes: place it again"
        )
    return data


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    # The exporter's shape hints for Hiera's padding make ORT warn on every load; harmless.
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise SegmentationError(f"{path}: ONNX Runtime cannot load it: {e}") from None


def find_pair(directory: Path) -> tuple[Path, Path]:
    """The encoder and decoder under `directory`: either the two model dirs themselves
    (`<dir>/<name>/manifest.json` with task sam2-encoder / sam2-decoder), e.g. models/."""
    found: dict[str, list[Path]] = {"sam2-encoder": [], "sam2-decoder": []}
    for manifest in sorted(Path(directory).glob("*/manifest.json")):
        try:
            task = json.loads(manifest.read_text()).get("task")
        except (OSError, ValueError, AttributeError):
            continue
        if task in found:
            found[task].append(manifest.parent / "model.onnx")
    enc, dec = found["sam2-encoder"], found["sam2-decoder"]
    if len(enc) != 1 or len(dec) != 1:
        raise SegmentationError(
            f"{directory}: expected one SAM2 encoder and one decoder model directory "
            f"(manifest task sam2-encoder / sam2-decoder), found {len(enc)} and {len(dec)}"
        )
    return enc[0], dec[0]


class Sam2Segmenter:
    """SAM2 box-prompt segmentation with two ONNX Runtime sessions."""

    def __init__(self, encoder: Path, decoder: Path, threads: int | None = None) -> None:
        self.encoder_path, self.decoder_path = Path(encoder), Path(decoder)
        enc_m = _manifest(self.encoder_path, "sam2-encoder")
        dec_m = _manifest(self.decoder_path, "sam2-decoder")
        if enc_m.get("weights_sha256") != dec_m.get("weights_sha256"):
            raise SegmentationError(
                f"{self.encoder_path} and {self.decoder_path} were exported from different "
                "weights (manifest weights_sha256 differs); place a matching pair"
            )
        size = enc_m.get("image_size")
        if not isinstance(size, int) or size % 16 or dec_m.get("image_size") != size:
            raise SegmentationError(
                f"SAM2 manifests disagree on image_size ({size} vs {dec_m.get('image_size')})"
            )
        self.size = size
        self.manifest = enc_m
        self.version = str(enc_m.get("version", "?"))
        self.encoder = _session(self.encoder_path, threads)
        self.decoder = _session(self.decoder_path, threads)
        self._check_graphs()

    def _check_graphs(self) -> None:
        s = self.size
        ins = {i.name: i.shape for i in self.encoder.get_inputs()}
        outs = tuple(o.name for o in self.encoder.get_outputs())
        if set(ins) != ENCODER_INPUTS or list(ins["image"]) != [1, 3, s, s]:
            raise SegmentationError(
                f"{self.encoder_path}: inputs {ins}, expected image [1, 3, {s}, {s}]"
            )
        if outs != ENCODER_OUTPUTS:
            raise SegmentationError(
                f"{self.encoder_path}: outputs {outs}, expected {ENCODER_OUTPUTS}"
            )
        dins = {i.name for i in self.decoder.get_inputs()}
        douts = tuple(o.name for o in self.decoder.get_outputs())
        if dins != DECODER_INPUTS or douts != DECODER_OUTPUTS:
            raise SegmentationError(
                f"{self.decoder_path}: inputs {sorted(dins)} outputs {douts}, expected "
                f"{sorted(DECODER_INPUTS)} -> {DECODER_OUTPUTS}"
            )

    @property
    def detail(self) -> str:
        return (
            f"SAM2 {self.manifest.get('name', 'sam2')} {self.version} at {self.size}px, "
            f"encoder sha256:{self.manifest.get('sha256', '')[:12]}"
        )

    def encode(self, image: np.ndarray) -> dict[str, np.ndarray]:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        x = cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        x = (x.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        outs = self.encoder.run(None, {"image": np.ascontiguousarray(x)})
        return dict(zip(ENCODER_OUTPUTS, outs, strict=True))

    def decode(
        self, features: dict[str, np.ndarray], box: Sequence[float], hw: tuple[int, int]
    ) -> np.ndarray:
        h, w = hw
        sx, sy = self.size / w, self.size / h
        x1, y1, x2, y2 = box
        boxes = np.array([[x1 * sx, y1 * sy, x2 * sx, y2 * sy]], np.float32)
        logits, _ = self.decoder.run(None, {**features, "boxes": boxes})
        full = cv2.resize(logits[0, 0], (w, h), interpolation=cv2.INTER_LINEAR)
        return full > 0

    def segment(self, image: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
        if not detections:
            return []
        try:
            features = self.encode(image)
            return [self.decode(features, d.box, image.shape[:2]) for d in detections]
        except SegmentationError:
            raise
        except Exception as e:  # onnxruntime/OpenCV errors: report, never crash the deposit
            raise SegmentationError(f"SAM2 inference failed: {e}") from e


def load_segmenter(
    encoder: Path | None, decoder: Path | None, threads: int | None = None
) -> tuple[Segmenter, str]:
    """The segmenter and a /readyz detail; NoSegmenter (with the reason) when SAM2 is off."""
    if encoder is None or decoder is None:
        SEGMENTATION_ENABLED.set(0)
        return NoSegmenter(), "off: not configured (segment.encoder / segment.decoder)"
    try:
        seg = Sam2Segmenter(encoder, decoder, threads)
        seg.segment(
            np.zeros((seg.size, seg.size, 3), np.uint8), [Detection("warmup", 1.0, (8, 8, 64, 64))]
        )
    except SegmentationError as e:
        SEGMENTATION_ENABLED.set(0)
        SEGMENTATION_FAILURES.labels("model").inc()
        log.error(
            "segmentation off: SAM2 not usable; deposits go without masks",
            extra={"problem": str(e)},
        )
        return NoSegmenter(str(e)), f"off: {e}"
    SEGMENTATION_ENABLED.set(1)
    log.info("segmentation on", extra={"model": seg.detail})
    return seg, f"on: {seg.detail}"

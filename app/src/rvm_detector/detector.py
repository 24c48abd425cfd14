"""YOLO detection on one image: letterbox -> backend -> decode -> original pixels.

`load_detector` checks at load time that the model fits (one RGB image input,
a detection head whose width matches the class names) so a wrong model fails
at start-up with a clear message, never mid-run.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rvm_detector.backends import InferenceBackend, ModelError, open_backend
from rvm_detector.letterbox import LetterboxBuffer
from rvm_detector.records import Detection, ModelId
from rvm_detector.yolo_decode import decode_candidates


@dataclass(frozen=True)
class ModelInfo:
    id: ModelId
    class_names: tuple[str, ...]
    input_hw: tuple[int, int]
    backend: str


class Detector:
    def __init__(
        self,
        backend: InferenceBackend,
        info: ModelInfo,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = 300,
    ) -> None:
        self.backend = backend
        self.info = info
        self.conf, self.iou, self.max_det = conf, iou, max_det
        # The model input is written in place, frame after frame: one caller at a time.
        self._input = LetterboxBuffer(info.input_hw, backend.input_dtype)
        self._lock = threading.Lock()

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, Any]:
        """The model input for `image` (a new array) and the geometry to map boxes back."""
        with self._lock:
            tensor, geometry = self._input(image)
            return tensor.copy(), geometry

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections in `image` (BGR uint8, HxWx3), highest confidence first."""
        if image is None or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
            raise ValueError(
                f"expected a BGR image HxWx3, got {getattr(image, 'shape', type(image))}"
            )
        with self._lock:
            tensor, geometry = self._input(image)
            output = self.backend.infer(tensor)
        kept = decode_candidates(output, self.conf, self.iou, self.max_det)
        # Back to original pixels (clipped to the image), in plain Python: a few boxes.
        left, top, gx, gy = geometry.left, geometry.top, geometry.gain_x, geometry.gain_y
        w, h = geometry.width, geometry.height
        names = self.info.class_names
        return [
            Detection(
                names[c],
                s,
                (
                    min(max((x1 - left) / gx, 0.0), w),
                    min(max((y1 - top) / gy, 0.0), h),
                    min(max((x2 - left) / gx, 0.0), w),
                    min(max((y2 - top) / gy, 0.0), h),
                ),
            )
            for s, c, x1, y1, x2, y2 in kept
        ]

    def warmup(self) -> None:
        """One inference on a blank frame: allocations and lazy kernel setup happen here."""
        h, w = self.info.input_hw
        self.detect(np.full((h, w, 3), 114, np.uint8))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_manifest(model_path: Path) -> dict[str, Any]:
    manifest = model_path.parent / "manifest.json"
    if not manifest.is_file() and model_path.parent.parent.name == "engines":
        # An engine built on the device: <sha256>/engines/<key>/model.engine beside the
        # ONNX model's <sha256>/manifest.json (a trtexec plan carries no class names).
        manifest = model_path.parents[2] / "manifest.json"
    if not manifest.is_file():
        return {}
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{manifest} is not valid JSON ({e}); fix or remove it") from None
    return data if isinstance(data, dict) else {}


def _class_names(meta: dict[str, Any], manifest: dict[str, Any], path: Path) -> tuple[str, ...]:
    names = meta.get("names")
    if isinstance(names, dict):
        return tuple(str(names[i]) for i in sorted(names))
    if isinstance(names, list):
        return tuple(str(n) for n in names)
    if isinstance(manifest.get("class_names"), list):
        return tuple(str(n) for n in manifest["class_names"])
    raise ModelError(
        f"{path} carries no class names: export it with Ultralytics (which embeds them) "
        'or put a manifest.json with "class_names": [...] beside it'
    )


def _input_hw(backend: InferenceBackend, meta: dict[str, Any], path: Path) -> tuple[int, int]:
    shape = backend.input_shape
    if len(shape) != 4 or shape[1] != 3 or (isinstance(shape[0], int) and shape[0] != 1):
        raise ModelError(
            f"{path} takes input {list(shape)}; a YOLO detection model takes one RGB "
            "image as [1, 3, height, width]. Export it with batch 1 for detection"
        )
    h, w = shape[2], shape[3]
    if not (isinstance(h, int) and isinstance(w, int)):
        imgsz = meta.get("imgsz")
        if not (isinstance(imgsz, list | tuple) and len(imgsz) == 2):
            raise ModelError(
                f"{path} has a dynamic input size and no imgsz metadata; "
                "export with a fixed image size (dynamic=False)"
            )
        h, w = int(imgsz[0]), int(imgsz[1])
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise ModelError(f"{path} input size {h}x{w} is not a positive multiple of 32")
    return h, w


def _check_output(backend: InferenceBackend, n_classes: int, path: Path) -> None:
    shape = backend.output_shape
    if len(shape) != 3 or shape[1] != 4 + n_classes:
        raise ModelError(
            f"{path} output is {list(shape)}, but a YOLO detection head for {n_classes} "
            f"classes gives [1, {4 + n_classes}, anchors] (box + one score per class). "
            "Is this a segmentation/pose model or an export with NMS inside? "
            "Export a plain detection model (nms=False)"
        )


def load_detector(
    path: Path,
    backend: str = "auto",
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    threads: int | None = None,
) -> Detector:
    """Open and check a YOLO detection model; raises ModelError with what to do."""
    path = Path(path)
    engine = open_backend(path, backend, threads)
    manifest = _read_manifest(path)
    names = _class_names(engine.metadata, manifest, path)
    hw = _input_hw(engine, engine.metadata, path)
    _check_output(engine, len(names), path)
    model_id = ModelId(
        name=str(manifest.get("name") or path.stem),
        version=str(manifest.get("version") or "unversioned"),
        sha256=sha256_file(path),
    )
    info = ModelInfo(model_id, names, hw, engine.name)
    if engine.name.endswith("(CPUExecutionProvider)"):
        # ONNX Runtime's intra-op threads own the cores; OpenCV's own pool (letterbox
        # resize, JPEG work) would only wake threads that compete with them.
        cv2.setNumThreads(1)
    return Detector(engine, info, conf, iou, max_det)

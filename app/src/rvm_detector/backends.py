"""Inference backends: run one prepared tensor through a model file.

A backend knows nothing about images or boxes; `detector.Detector` does the
pre/post-processing around it. ONNX Runtime runs everywhere (TensorRT/CUDA
execution providers are used when the installed build has them); native
TensorRT engines are used when the `tensorrt` module imports (Jetson).
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class ModelError(Exception):
    """The model file cannot be used; the message says why and what to do."""


class InferenceBackend(Protocol):
    name: str
    input_shape: tuple[int, ...]  # as declared by the model; ints, or str for dynamic dims
    input_dtype: np.dtype
    output_shape: tuple[int | str, ...]
    metadata: dict[str, Any]  # the model's own metadata (Ultralytics: names, imgsz, ...)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Run one input tensor and return the first output."""


def parse_ultralytics_metadata(raw: dict[str, str]) -> dict[str, Any]:
    """ONNX metadata values are strings; Ultralytics writes dicts/lists as Python literals."""
    out: dict[str, Any] = dict(raw)
    for key in ("names", "imgsz", "stride", "batch"):
        if key in raw:
            try:
                out[key] = ast.literal_eval(raw[key])
            except (ValueError, SyntaxError):
                raise ModelError(
                    f"model metadata {key!r} is not readable ({raw[key][:80]!r}); "
                    "re-export the model with Ultralytics"
                ) from None
    return out


class OrtBackend:
    """ONNX Runtime session, tuned for one low-latency request at a time."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One frame at a time: parallelism belongs inside operators, not between them.
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3  # ORT's warnings go to stderr unstructured
        try:
            self.session = ort.InferenceSession(
                str(path), opts, providers=_ort_providers(ort.get_available_providers(), path)
            )
        except Exception as e:  # ORT raises its own untyped errors for bad files
            raise ModelError(
                f"ONNX Runtime cannot load {path}: {e}. Is it a complete ONNX export "
                "(e.g. `yolo export format=onnx`)? Re-copy or re-export it."
            ) from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ModelError(
                f"{path} has {len(inputs)} inputs and {len(outputs)} outputs; a YOLO "
                "detection model has exactly one image input and a detection output"
            )
        self._input_name = inputs[0].name
        self._output_name = outputs[0].name
        self.input_shape = tuple(inputs[0].shape)
        self.input_dtype = np.dtype(np.float16 if "float16" in inputs[0].type else np.float32)
        self.output_shape = tuple(outputs[0].shape)
        self.metadata = parse_ultralytics_metadata(self.session.get_modelmeta().custom_metadata_map)
        self.name = f"onnxruntime ({self.session.get_providers()[0]})"

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self.session.run([self._output_name], {self._input_name: tensor})[0]


def _ort_providers(available: list[str], model_path: Path) -> list[Any]:
    """GPU execution providers first where this ONNX Runtime build has them."""
    providers: list[Any] = []
    if "TensorrtExecutionProvider" in available:
        # Without a cache TensorRT rebuilds its engine (minutes) at every start.
        cache = model_path.parent / "ort-trt-cache"
        options: dict[str, Any] = {"trt_fp16_enable": True}
        if os.access(model_path.parent, os.W_OK):
            cache.mkdir(exist_ok=True)
            options |= {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
        providers.append(("TensorrtExecutionProvider", options))
    if "CUDAExecutionProvider" in available:
        providers.append("CUDAExecutionProvider")
    providers.append("CPUExecutionProvider")
    return providers


def split_engine_file(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Split a TensorRT engine file into (metadata, plan).

    Ultralytics writes a 4-byte little-endian JSON length, the JSON metadata,
    then the plan; a plain `trtexec` plan has no header. A plan's first bytes
    read as a length are either too large or not followed by JSON.
    """
    if len(data) >= 4:
        n = int.from_bytes(data[:4], "little")
        if 0 < n <= len(data) - 4:
            try:
                meta = json.loads(data[4 : 4 + n].decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                meta = None
            if isinstance(meta, dict):
                return meta, data[4 + n :]
    return {}, data


def _json_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    # JSON turns Ultralytics' {0: "name"} into {"0": "name"}.
    names = meta.get("names")
    if isinstance(names, dict):
        meta = {**meta, "names": {int(k): v for k, v in names.items()}}
    return meta


@dataclass(frozen=True)
class TensorInfo:
    """One of an engine's named I/O tensors, as TensorRT 10 describes it."""

    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: np.dtype


def select_bindings(tensors: Sequence[TensorInfo], path: Path) -> tuple[TensorInfo, TensorInfo]:
    """The image input and the detection output of a YOLO engine.

    One input; the output Ultralytics names `output0`, else the first output. Shapes must
    be fixed: the buffers are allocated once, before the first frame.
    """
    inputs = [t for t in tensors if t.is_input]
    outputs = [t for t in tensors if not t.is_input]
    if len(inputs) != 1 or not outputs:
        raise ModelError(
            f"{path} has {len(inputs)} inputs and {len(outputs)} outputs; a YOLO detection "
            "engine has exactly one image input and a detection output"
        )
    output = next((t for t in outputs if t.name == "output0"), outputs[0])
    for t in (inputs[0], output):
        if not t.shape or min(t.shape) < 0:
            raise ModelError(
                f"{path}: tensor {t.name!r} has dynamic shape {list(t.shape)}; build the "
                "engine with a fixed input size (trtexec --shapes=images:1x3xHxW)"
            )
    return inputs[0], output


class TensorRTBackend:
    """A serialized TensorRT engine on the TensorRT 10 API: named I/O tensors, device buffers
    bound with set_tensor_address, execute_async_v3 on one CUDA stream (NVIDIA's
    "Python API: Performing Inference"). Only these calls need a GPU; everything around
    them (header, binding choice) is plain Python tested with fakes.
    """

    def __init__(self, path: Path) -> None:
        import tensorrt as trt

        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
        self._cudart = cudart
        meta, plan = split_engine_file(path.read_bytes())
        self.metadata = _json_metadata(meta)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise ModelError(
                f"TensorRT cannot deserialize {path}: engines only run on the TensorRT "
                "version and GPU they were built for; rebuild it on this device"
            )
        self._context = self._engine.create_execution_context()
        tensors = []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            tensors.append(
                TensorInfo(
                    name,
                    self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                    tuple(self._engine.get_tensor_shape(name)),
                    np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))),
                )
            )
        inp, out = select_bindings(tensors, path)
        self.input_shape, self.output_shape = inp.shape, out.shape
        self.input_dtype = inp.dtype
        self._out_host = np.empty(out.shape, out.dtype)
        self._stream = self._check(cudart.cudaStreamCreate())
        # Every I/O tensor needs an address, also outputs this backend does not read.
        self._buffers: dict[str, tuple[int, int]] = {}
        for t in tensors:
            if min(t.shape) < 0:
                raise ModelError(f"{path}: tensor {t.name!r} has dynamic shape {list(t.shape)}")
            nbytes = int(np.prod(t.shape)) * t.dtype.itemsize
            self._buffers[t.name] = (self._check(cudart.cudaMalloc(nbytes)), nbytes)
            self._context.set_tensor_address(t.name, self._buffers[t.name][0])
        self._input, self._output = inp.name, out.name
        self.name = "tensorrt"

    def _check(self, result: tuple[Any, ...]) -> Any:
        err, *values = result
        if int(err) != 0:
            raise ModelError(f"CUDA call failed: {err}")
        return values[0] if values else None

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        rt = self._cudart
        tensor = np.ascontiguousarray(tensor, dtype=self.input_dtype)
        ptr, nbytes = self._buffers[self._input]
        h2d = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(rt.cudaMemcpyAsync(ptr, tensor.ctypes.data, nbytes, h2d, self._stream))
        if not self._context.execute_async_v3(self._stream):
            raise ModelError("TensorRT inference failed (see the TensorRT log above)")
        out_ptr, out_nbytes = self._buffers[self._output]
        self._check(
            rt.cudaMemcpyAsync(self._out_host.ctypes.data, out_ptr, out_nbytes, d2h, self._stream)
        )
        self._check(rt.cudaStreamSynchronize(self._stream))
        return self._out_host.copy()


def open_backend(path: Path, kind: str = "auto", threads: int | None = None) -> InferenceBackend:
    """Load `path` with the backend `kind` (auto: .engine/.plan -> tensorrt, else onnxruntime)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; check model.path / --model")
    if path.stat().st_size == 0:
        raise ModelError(f"model file {path} is empty; re-copy or re-export it")
    if kind == "auto":
        kind = "tensorrt" if path.suffix in (".engine", ".plan") else "onnxruntime"
    if kind == "tensorrt":
        try:
            return TensorRTBackend(path)
        except ImportError as e:
            raise ModelError(
                f"{path} is a TensorRT engine but TensorRT is not usable here ({e}); "
                "install tensorrt and cuda-python (JetPack ships them) or use the .onnx model"
            ) from None
    return OrtBackend(path, threads)

"""Read what a user of the exported ONNX relies on: io shapes and Ultralytics metadata."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from typing import Any

import onnx

# opset 17 + IR 8 load in onnxruntime >= 1.17 and in the TensorRT 8.6 of JetPack 6.
ONNX_OPSET = 17
ONNX_IR_VERSION = 8


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pin_ir_version(path: Path) -> None:
    """Lower the IR version the exporter wrote so older onnxruntime builds accept the file."""
    model = onnx.load(str(path))
    if model.ir_version > ONNX_IR_VERSION:
        model.ir_version = ONNX_IR_VERSION
        onnx.checker.check_model(model)
        onnx.save(model, str(path))


def _shape(value_info: onnx.ValueInfoProto) -> list[int | str]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]


def describe(path: Path) -> dict[str, Any]:
    """Inputs, outputs, opset, IR version and the metadata Ultralytics embedded."""
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    return {
        "inputs": [{"name": i.name, "shape": _shape(i)} for i in model.graph.input],
        "outputs": [{"name": o.name, "shape": _shape(o)} for o in model.graph.output],
        "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "ir_version": model.ir_version,
        "metadata": meta,
    }


def embedded_names(metadata: dict[str, str]) -> list[str]:
    """Class names in index order from Ultralytics' `names` metadata ("{0: 'a', ...}")."""
    names = ast.literal_eval(metadata["names"])
    return [names[i] for i in sorted(names)]


def embedded_imgsz(metadata: dict[str, str]) -> list[int]:
    return list(ast.literal_eval(metadata["imgsz"]))

"""The manifest beside a model file: what a deployable model must declare about itself.

A model built by this repository's `training/train.py` ships with `manifest.json`
beside `model.onnx`. When that file is there, `check-config` (and `run`) read it
and refuse a model whose manifest

- is not readable JSON,
- lacks `class_names`, or either evaluation figure (`heldout_metrics.map50`:
  the training generator's held-out split; `independent_metrics.map50`: the
  independent renderer's frames, never trained on),
- or whose classes do not include every class the verdict accepts.

A model without a manifest (an operator's own export) is not checked here; its
class names come from the model file when it is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
REQUIRED_METRICS = ("heldout_metrics", "independent_metrics")


def read_manifest(model_path: Path) -> tuple[Path, dict[str, Any] | None, str | None]:
    """(manifest path, its content or None when absent, a problem or None)."""
    path = Path(model_path).parent / MANIFEST_NAME
    if not path.is_file():
        return path, None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return path, None, f"{path} is not readable JSON ({e}); fix it or remove it"
    if not isinstance(data, dict):
        return path, None, f"{path} is not a JSON object; fix it or remove it"
    return path, data, None


def _metric(manifest: dict[str, Any], key: str) -> float | None:
    section = manifest.get(key)
    value = section.get("map50") if isinstance(section, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        return None
    return float(value)


def manifest_problems(model_path: Path, accepted: Iterable[str]) -> list[str]:
    """Why the model's manifest refuses this configuration; empty when it does not."""
    path, manifest, problem = read_manifest(model_path)
    if problem:
        return [problem]
    if manifest is None:
        return []
    model = f"model {manifest.get('name', Path(model_path).name)!s}"
    if manifest.get("version"):
        model += f" {manifest['version']}"
    problems = []
    missing = [f"{key}.map50" for key in REQUIRED_METRICS if _metric(manifest, key) is None]
    names = manifest.get("class_names")
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        missing.insert(0, "class_names")
        names = None
    if missing:
        problems.append(
            f"{model} ({path}) lacks {', '.join(missing)}: a model must carry its measured "
            "accuracy on both evaluation sets; measure it with training/evaluate.py (or "
            "build it with training/train.py) before deploying it"
        )
    if names is not None:
        unknown = sorted(set(accepted) - set(names))
        if unknown:
            problems.append(
                f"verdict.accept names {', '.join(unknown)}, which {model} ({path}) does not "
                f"detect; its classes are {', '.join(names)}: accept only those, or deploy a "
                "model trained for these classes"
            )
    return problems

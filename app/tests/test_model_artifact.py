"""The committed model is what its manifest says, and its data recipe is reproducible.

These are the checks a user of models/deposit-yolo11n relies on before pointing
`model.path` at it; nothing here trains or needs torch.
"""

from __future__ import annotations

import ast
import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "models" / "deposit-yolo11n"
TRAINING = REPO / "training"
sys.path.insert(0, str(TRAINING))

import generate_dataset  # noqa: E402  (lives in training/, not an installed package)
from eval_render.dataset import DEFAULT_EVAL_SEED, renderer_sha256  # noqa: E402


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((MODEL_DIR / "manifest.json").read_text())


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return ort.InferenceSession(str(MODEL_DIR / "model.onnx"), providers=["CPUExecutionProvider"])


def test_manifest_sha256_matches_committed_onnx(manifest: dict) -> None:
    onnx_bytes = (MODEL_DIR / manifest["file"]).read_bytes()
    assert hashlib.sha256(onnx_bytes).hexdigest() == manifest["sha256"]
    assert len(onnx_bytes) == manifest["size_bytes"]


def test_embedded_metadata_matches_manifest(manifest: dict, session: ort.InferenceSession) -> None:
    meta = session.get_modelmeta().custom_metadata_map
    names = ast.literal_eval(meta["names"])
    assert [names[i] for i in sorted(names)] == manifest["class_names"]
    assert manifest["class_names"] == ["pet_bottle", "can", "other"]
    assert list(ast.literal_eval(meta["imgsz"])) == [manifest["image_size"]] * 2
    assert int(meta["stride"]) == 32
    assert meta["task"] == "detect"


def test_onnx_runs_with_declared_shapes(manifest: dict, session: ort.InferenceSession) -> None:
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    size = manifest["image_size"]
    assert inp.shape == manifest["input"]["shape"] == [1, 3, size, size]
    assert out.shape == manifest["output"]["shape"]

    tensor = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    (pred,) = session.run(None, {inp.name: tensor})
    num_classes = len(manifest["class_names"])
    # One row per anchor on strides 8, 16 and 32, no NMS inside the graph.
    anchors = sum((size // s) ** 2 for s in (8, 16, 32))
    assert pred.shape == (1, 4 + num_classes, anchors)
    scores = pred[0, 4:]
    assert np.all((scores >= 0) & (scores <= 1)), "class scores must be post-sigmoid"


def test_manifest_recipe_matches_generator_in_tree(manifest: dict) -> None:
    # A changed generator means the committed model no longer follows from the recipe:
    # retrain with the manifest's reproduce.train command.
    assert manifest["training_data"]["generator_sha256"] == generate_dataset.generator_sha256()


def test_manifest_records_both_evaluations_and_commands(manifest: dict) -> None:
    heldout, independent = manifest["heldout_metrics"], manifest["independent_metrics"]
    for metrics in (heldout, independent):
        assert 0 < metrics["map50_95"] <= metrics["map50"] <= 1
        assert set(metrics["map50_per_class"]) == set(manifest["class_names"])
        assert metrics["frames"] > 0
    # What the committed model measured (docs/benchmarks.md); a retrained model must not
    # quietly fall below it.
    assert heldout["map50"] >= 0.8, "held-out mAP50 of the committed model fell"
    assert independent["map50"] >= 0.8, "independent-renderer mAP50 of the committed model fell"
    assert heldout["frames"] == manifest["training_data"]["counts"]["val"]
    assert independent["renderer_sha256"] == renderer_sha256()
    assert "training/train.py" in manifest["reproduce"]["train"]
    assert "training/evaluate.py" in manifest["reproduce"]["evaluate"]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_independent_renderer_shares_no_code_with_training() -> None:
    renderer = sorted((TRAINING / "eval_render").glob("*.py"))
    assert renderer
    for path in renderer:
        assert not _imports(path) & {"deposit_synth", "generate_dataset", "train"}, path
    # ... and nothing that trains reads it: only the evaluation does.
    trainers = [TRAINING / "train.py", TRAINING / "generate_dataset.py"]
    trainers += sorted((TRAINING / "deposit_synth").glob("*.py"))
    for path in trainers:
        assert "eval_render" not in _imports(path), path


def test_independent_renderer_is_reproducible(tmp_path: Path) -> None:
    from eval_render.dataset import eval_sample, write_eval_images

    paths = write_eval_images(tmp_path, 3)
    for i, p in enumerate(paths):
        jpeg, labels = eval_sample(DEFAULT_EVAL_SEED, i)
        assert p.read_bytes() == jpeg
        assert p.with_suffix(".txt").read_text() == labels
        for line in labels.splitlines():
            cls, *box = line.split()
            assert int(cls) in (0, 1, 2) and all(0.0 <= float(v) <= 1.0 for v in box)


def test_generator_is_byte_identical_across_processes() -> None:
    seed = generate_dataset.DEFAULT_SEED
    picks = [(split, i) for split in ("train", "val") for i in (0, 7)]
    here = [generate_dataset.render_sample(seed, split, i) for split, i in picks]
    # A fresh interpreter proves nothing leaks in from process state (global RNGs, caches).
    script = (
        "import sys, pickle; sys.path.insert(0, sys.argv[1]); import generate_dataset as g;"
        "sys.stdout.buffer.write(pickle.dumps([g.render_sample(int(sys.argv[2]), s, i)"
        " for s in ('train', 'val') for i in (0, 7)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(TRAINING), str(seed)], capture_output=True, check=True
    ).stdout
    assert pickle.loads(out) == here
    assert generate_dataset.render_sample(seed + 1, "val", 0) != here[2]
    assert here[0] != here[2], "train and val must not share frames"


def test_heldout_writer_reproduces_val_split(tmp_path: Path) -> None:
    seed = generate_dataset.DEFAULT_SEED
    paths = generate_dataset.write_heldout_images(tmp_path / "heldout", 3, seed=seed)
    assert [p.name for p in paths] == ["val_00000.jpg", "val_00001.jpg", "val_00002.jpg"]
    split_root = generate_dataset.write_dataset(tmp_path / "ds", {"val": 3}, seed, workers=1).parent
    for p in paths:
        assert p.read_bytes() == (split_root / "images" / "val" / p.name).read_bytes()
        labels = p.with_suffix(".txt").read_text()
        assert labels == (split_root / "labels" / "val" / p.with_suffix(".txt").name).read_text()
        for line in labels.splitlines():
            cls, *box = line.split()
            assert int(cls) in (0, 1, 2)
            assert all(0.0 <= float(v) <= 1.0 for v in box)


def test_unknown_split_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="use one of train, val"):
        generate_dataset.render_sample(1, "test", 0)


def test_shipped_check_frames_are_what_training_writes(tmp_path: Path, manifest: dict) -> None:
    # The TensorRT gate's frames are rebuilt by `make model`, byte for byte: a retrained model
    # ships the same check frames, and the manifest entry names the archive beside it.
    import train  # training/train.py (torch and Ultralytics are imported only to train)

    entry = train.write_check_frames(tmp_path, manifest["training_data"]["seed"])
    assert entry == manifest["check_frames"]
    shipped = MODEL_DIR / entry["archive"]
    assert (tmp_path / entry["archive"]).read_bytes() == shipped.read_bytes()

"""check-config reads the manifest beside the model and refuses what a deployable model lacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from detector_fixtures import check_config, committed_model, write_config
from rvm_detector.configfile import ConfigError, load_config
from rvm_detector.model_manifest import REQUIRED_METRICS, manifest_problems

GOOD = {
    "name": "deposit-test",
    "version": "9.9.9",
    "class_names": ["pet_bottle", "can", "other"],
    "heldout_metrics": {"map50": 0.97, "map50_95": 0.8},
    "independent_metrics": {"map50": 0.9, "map50_95": 0.7},
}


def model_dir(tmp_path: Path, manifest: dict | str | None) -> Path:
    folder = tmp_path / "models" / "deposit-test"
    folder.mkdir(parents=True)
    model = folder / "model.onnx"
    model.write_bytes(b"onnx stand-in: check-config does not load the model")
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        (folder / "manifest.json").write_text(text)
    return model


def test_committed_model_manifest_passes() -> None:
    assert manifest_problems(committed_model(), ["pet_bottle", "can"]) == []


def test_good_manifest_and_no_manifest_pass(tmp_path: Path) -> None:
    assert manifest_problems(model_dir(tmp_path / "a", GOOD), ["can"]) == []
    # An operator's own export without a manifest: nothing to check here.
    assert manifest_problems(model_dir(tmp_path / "b", None), ["anything"]) == []


@pytest.mark.parametrize("key", REQUIRED_METRICS)
def test_missing_evaluation_figure_is_refused_naming_model_and_key(
    tmp_path: Path, key: str
) -> None:
    manifest = {k: v for k, v in GOOD.items() if k != key}
    model = model_dir(tmp_path, manifest)
    config = write_config(tmp_path, model, tmp_path / "frames")
    result = check_config(config)
    assert result.returncode == 2
    assert "model.path: model deposit-test 9.9.9" in result.stderr
    assert f"lacks {key}.map50" in result.stderr
    assert "training/evaluate.py" in result.stderr


def test_metric_must_be_a_fraction(tmp_path: Path) -> None:
    bad = {**GOOD, "independent_metrics": {"map50": "high"}}
    problems = manifest_problems(model_dir(tmp_path, bad), ["can"])
    assert len(problems) == 1 and "lacks independent_metrics.map50" in problems[0]


def test_verdict_classes_the_model_lacks_are_refused(tmp_path: Path) -> None:
    model = model_dir(tmp_path, GOOD)
    config = write_config(
        tmp_path, model, tmp_path / "frames", verdict={"accept": {"glass_bottle": 0.5, "can": 0.5}}
    )
    with pytest.raises(ConfigError) as err:
        load_config(config)
    (problem,) = err.value.problems
    assert "verdict.accept names glass_bottle, which model deposit-test 9.9.9" in problem
    assert "its classes are pet_bottle, can, other" in problem


def test_default_verdict_is_checked_too(tmp_path: Path) -> None:
    other_classes = {**GOOD, "class_names": ["cup", "bag"]}
    model = model_dir(tmp_path, other_classes)
    result = check_config(write_config(tmp_path, model, tmp_path / "frames"))
    assert result.returncode == 2
    assert "verdict.accept names can, pet_bottle" in result.stderr


def test_unreadable_manifest_is_refused(tmp_path: Path) -> None:
    model = model_dir(tmp_path, "{not json")
    problems = manifest_problems(model, ["can"])
    assert len(problems) == 1 and "is not readable JSON" in problems[0]

"""The configuration file: malformed files are reported with key path, line and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from detector_fixtures import check_config, committed_model, write_config
from rvm_detector.configfile import ConfigError, load_config


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return write_config(tmp_path, committed_model(), tmp_path / "frames")


def replace_line(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


def line_of(path: Path, needle: str) -> int:
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(needle)


def test_valid_config_passes_check_config(good: Path) -> None:
    result = check_config(good)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    cfg = load_config(good)
    assert cfg.http.port == 0 and cfg.trigger.mode == "deposit"


def test_unknown_key_names_path_line_and_allowed_keys(good: Path) -> None:
    replace_line(good, "  stale_after_s: 2", "  stale_after_s: 2\n  sorce: /dev/video0")
    result = check_config(good)
    assert result.returncode == 2
    line = line_of(good, "sorce")
    assert f"{good}:{line}: camera.sorce: unknown key" in result.stderr
    assert "allowed here: source, name, fps" in result.stderr


def test_missing_required_key_points_at_its_section(good: Path) -> None:
    text = good.read_text()
    good.write_text("\n".join(ln for ln in text.splitlines() if "base_url" not in ln) + "\n")
    result = check_config(good)
    assert result.returncode == 2
    assert f"{good}:{line_of(good, 'platform:')}: platform.base_url: required key is missing" in (
        result.stderr
    )


def test_wrong_values_are_all_reported_with_lines(good: Path) -> None:
    replace_line(good, "  listen: 127.0.0.1:0", "  listen: localhost")
    with good.open("a") as f:
        f.write("trigger:\n  mode: sometimes\n  fps: -1\n")
    with pytest.raises(ConfigError) as err:
        load_config(good)
    problems = "\n".join(err.value.problems)
    assert f":{line_of(good, 'listen:')}: http.listen: 'localhost' is not host:port" in problems
    assert (
        f":{line_of(good, 'mode: sometimes')}: trigger.mode: Input should be 'continuous' or "
        "'deposit'" in problems
    )
    assert f":{line_of(good, 'fps: -1')}: trigger.fps: Input should be greater than 0" in problems


def test_yaml_syntax_error_has_line(good: Path) -> None:
    good.write_text(good.read_text() + "verdict: [unclosed\n")
    result = check_config(good)
    assert result.returncode == 2
    assert f"{good}:" in result.stderr and "YAML syntax error" in result.stderr


def test_duplicate_section_is_an_error(good: Path) -> None:
    good.write_text(good.read_text() + "camera:\n  source: /dev/video1\n")
    with pytest.raises(ConfigError) as err:
        load_config(good)
    assert any("camera: duplicate key" in p for p in err.value.problems)


def test_missing_model_file_is_a_clear_error(good: Path, tmp_path: Path) -> None:
    replace_line(good, str(committed_model()), str(tmp_path / "nope.onnx"))
    result = check_config(good)
    assert result.returncode == 2
    assert f"model.path: model file {tmp_path / 'nope.onnx'} does not exist" in result.stderr
    run = subprocess.run(
        [sys.executable, "-m", "rvm_detector.cli", "run", "--config", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "does not exist" in run.stderr


def test_verdict_confidence_out_of_range(good: Path) -> None:
    good.write_text(good.read_text() + "verdict:\n  accept: {can: 1.5}\n")
    with pytest.raises(ConfigError) as err:
        load_config(good)
    assert "verdict.accept: confidences must be between 0 and 1" in err.value.problems[0]


def test_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "must be a YAML mapping" in str(err.value)

"""roles/tensorrt_engine/files/build_engine.py, the device's engine builder, against a fake
trtexec: what an operator relies on (reuse, no half-written engine under a key, failures
recorded and not retried, the timeout) without a device.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILDER = REPO / "roles/tensorrt_engine/files/build_engine.py"

FAKE_TRTEXEC = """#!/bin/sh
# A fake trtexec: $MODE (ok, fail, hang, empty) from the file beside it.
mode=$(cat "$(dirname "$0")/mode")
echo "$@" >> "$(dirname "$0")/calls"
for a in "$@"; do case "$a" in --saveEngine=*) out=${a#--saveEngine=};; esac; done
case "$mode" in
  fail) echo "[E] could not parse the model" >&2; exit 1;;
  hang) sleep 600;;
  empty) exit 0;;
esac
printf 'PLAN' > "$out"
"""


@pytest.fixture
def env(tmp_path: Path) -> dict:
    tool = tmp_path / "bin" / "trtexec"
    tool.parent.mkdir()
    tool.write_text(FAKE_TRTEXEC)
    tool.chmod(0o755)
    (tmp_path / "bin" / "mode").write_text("ok")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    return {"tmp": tmp_path, "tool": tool, "onnx": onnx, "engines": tmp_path / "engines"}


def run(env: dict, *extra: str, key: str = "trt10.3-t234-sm87-fp16-abc", mode: str = "ok") -> dict:
    (env["tmp"] / "bin" / "mode").write_text(mode)
    argv = [
        sys.executable, str(BUILDER), "--onnx", str(env["onnx"]), "--engines", str(env["engines"]),
        "--key", key, "--describe", '{"precision": "fp16"}', "--trtexec", str(env["tool"]),
        "--timing-cache", str(env["tmp"] / "cache" / "t.cache"), "--lock", str(env["tmp"] / "lock"),
        *extra, "--", "--fp16",
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def calls(env: dict) -> int:
    f = env["tmp"] / "bin" / "calls"
    return len(f.read_text().splitlines()) if f.exists() else 0


def test_builds_once_then_reuses(env: dict) -> None:
    first = run(env)
    assert first["status"] == "built" and first["changed"]
    engine = Path(first["engine"])
    assert engine.read_bytes() == b"PLAN"
    key = json.loads((engine.parent / "key.json").read_text())
    assert key["precision"] == "fp16" and key["key"] == engine.parent.name
    assert "--fp16" in key["trtexec"]
    again = run(env)
    assert again == {**again, "status": "reused", "changed": False}
    assert calls(env) == 1
    # Nothing but the engine directory: the temporary build directory was renamed.
    assert sorted(p.name for p in env["engines"].iterdir()) == [engine.parent.name]


def test_failure_is_recorded_not_retried_and_leaves_no_engine(env: dict) -> None:
    failed = run(env, mode="fail")
    assert failed["status"] == "failed" and failed["changed"]
    assert (
        "trtexec exited 1" in failed["reason"] and "could not parse the model" in failed["reason"]
    )
    assert [p.name for p in env["engines"].iterdir()] == [".failed-trt10.3-t234-sm87-fp16-abc.json"]
    again = run(env, mode="ok")
    assert again["status"] == "failed" and not again["changed"]
    assert again["reason"] == failed["reason"]  # the host's record does not change
    assert calls(env) == 1
    retried = run(env, "--retry-failed", mode="ok")
    assert retried["status"] == "built"
    assert not (env["engines"] / ".failed-trt10.3-t234-sm87-fp16-abc.json").exists()


def test_an_empty_result_is_a_failure(env: dict) -> None:
    result = run(env, mode="empty")
    assert result["status"] == "failed" and "wrote no engine" in result["reason"]


def test_timeout_kills_trtexec_and_leaves_no_half_written_engine(env: dict) -> None:
    result = run(env, "--timeout", "1", mode="hang")
    assert result["status"] == "failed"
    assert "did not finish within 1s and was killed" in result["reason"]
    assert not any(
        p.name.startswith("trt") or p.name.startswith(".build") for p in env["engines"].iterdir()
    )
    assert subprocess.run(["pgrep", "-f", str(env["tool"])], capture_output=True).returncode == 1


def test_an_interrupted_builds_leftovers_are_removed(env: dict) -> None:
    stale = env["engines"] / ".build-trt10.3-t234-sm87-fp16-abc-999"
    stale.mkdir(parents=True)
    (stale / "model.engine").write_bytes(b"HALF")
    assert run(env)["status"] == "built"
    assert not stale.exists()


def test_too_little_memory_skips_without_a_record(env: dict) -> None:
    result = run(env, "--min-free-mb", str(10**9))
    assert result["status"] == "skipped" and not result["changed"]
    assert "tensorrt_engine_min_free_mb=1000000000" in result["reason"]
    assert calls(env) == 0 and not env["engines"].exists()


def test_check_mode_builds_nothing(env: dict) -> None:
    assert run(env, "--check")["status"] == "would-build"
    assert calls(env) == 0


def test_a_missing_trtexec_is_named(env: dict) -> None:
    env["tool"].unlink()
    result = run(env)
    assert result["status"] == "failed" and f"no trtexec at {env['tool']}" in result["reason"]

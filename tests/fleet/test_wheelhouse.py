"""The detector_app role's controller build: the wheelhouse resolves for the lab and for
JetPack 6 (aarch64, CPython 3.10), is complete and pinned, and is cached by its inputs.

Needs PyPI (the controller is the only machine that reaches it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "roles" / "detector_app" / "files" / "build_wheelhouse.py"
RUNTIME = {
    "numpy",
    "opencv-python-headless",
    "onnxruntime",
    "httpx",
    "pydantic",
    "prometheus-client",
}


def build(cache: Path, platform: str, python: str, app: Path = REPO / "app", *extra: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(BUILD), "--app", str(app), "--cache", str(cache),
         "--platform", platform, "--python-version", python, *extra],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize(
    ("platform", "python", "arch", "abi"),
    [
        ("manylinux_2_35_aarch64", "3.10", "aarch64", "cp310"),  # JetPack 6 (Ubuntu 22.04)
        ("manylinux_2_35_x86_64", "3.11", "x86_64", "cp311"),  # the lab (Debian bookworm)
    ],
    ids=["jetpack6-aarch64-py310", "lab-x86_64-py311"],
)
def test_wheelhouse_resolves_for_the_target(tmp_path, platform, python, arch, abi) -> None:
    result = build(tmp_path, platform, python)
    out = Path(result["dir"])
    wheels = sorted(p.name for p in out.glob("*.whl"))
    names = {r.split("==")[0] for r in result["requirements"]}
    assert RUNTIME | {"rvm-detector"} <= names
    assert not {"torch", "ultralytics"} & names, "the device runtime must not pull torch"
    for w in wheels:
        tags = w[:-4].split("-")[-3:]
        assert tags[2] == "any" or arch in tags[2], f"{w} is not for {arch}"
        assert tags[1] in (abi, "abi3", "none"), f"{w} is not for CPython {python}"
    # The archive the devices get: complete, wheelhouse.json last.
    members = subprocess.run(
        ["tar", "-tf", str(out / "wheelhouse.tar")], capture_output=True, text=True, check=True
    ).stdout.split()
    assert members[-1].endswith("/wheelhouse.json")
    assert len(members) == len(wheels) + 2
    meta = json.loads((out / "wheelhouse.json").read_text())
    assert set(meta["wheels"]) == set(wheels)


def test_the_build_is_cached_by_source_and_platform(tmp_path) -> None:
    app = tmp_path / "app"
    shutil.copytree(
        REPO / "app", app, ignore=shutil.ignore_patterns("tests", "benchmarks", "*.egg-info")
    )
    first = build(tmp_path / "cache", "manylinux_2_35_x86_64", "3.11", app)
    assert first["changed"]
    again = build(tmp_path / "cache", "manylinux_2_35_x86_64", "3.11", app)
    assert not again["changed"] and again["dir"] == first["dir"]
    (app / "src" / "rvm_detector" / "__init__.py").write_text('__version__ = "0.1.0"\n# changed\n')
    changed = build(tmp_path / "cache", "manylinux_2_35_x86_64", "3.11", app)
    assert changed["changed"] and changed["key"] != first["key"]
    assert changed["source"] != first["source"]


def test_a_device_that_is_its_own_controller_reuses_its_installed_wheelhouse(tmp_path) -> None:
    """Pull mode: the device has the wheelhouse of its release unpacked and no package
    index. A wheelhouse with the key is used where it is; pip is never called (an unusable
    --python proves it); another key still needs a build."""
    built = build(tmp_path / "controller", "manylinux_2_35_x86_64", "3.11")
    installed = tmp_path / "device-wheelhouses"
    installed.mkdir()
    subprocess.run(["tar", "-xf", str(Path(built["dir"]) / "wheelhouse.tar"), "-C", str(installed)],
                   check=True)  # fmt: skip
    no_pip = ("--installed", str(installed), "--python", "/nonexistent/python")
    reused = build(tmp_path / "cache", "manylinux_2_35_x86_64", "3.11", REPO / "app", *no_pip)
    assert reused["dir"] == str(installed / built["key"]) and not reused["changed"]
    assert reused["requirements"] == built["requirements"]
    proc = subprocess.run(
        [sys.executable, str(BUILD), "--app", str(REPO / "app"), "--cache", str(tmp_path / "c2"),
         "--platform", "manylinux_2_35_aarch64", "--python-version", "3.10", *no_pip],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode != 0, "a wheelhouse this device does not have must be built"

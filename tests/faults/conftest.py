"""Fixtures for the upload fault tests: the platform stand-in, loaded from its file."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

STANDIN = Path(__file__).resolve().parents[2] / "lab" / "platform_standin.py"
API_KEY = "rvm_" + "f" * 60


def _standin_module():
    name = "rvm_platform_standin"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, STANDIN)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def standin(tmp_path: Path) -> Iterator:
    server = _standin_module().StandinServer(tmp_path / "platform.db", [API_KEY], seed=42)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "api_key"
    path.write_text(API_KEY)
    path.chmod(0o600)
    return path

"""Shared helpers for the upload tests: the platform stand-in and deposit records.

The stand-in lives in lab/platform_standin.py as a standalone program
(an Ansible role copies that one file to the lab's platform host), so it is
loaded here by path rather than installed as a package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

from rvm_detector.config import UploadConfig

REPO = Path(__file__).resolve().parents[2]
STANDIN_PATH = REPO / "lab" / "platform_standin.py"


def load_standin():
    """The stand-in's module (`StandinServer`, `Faults`, ...)."""
    name = "rvm_platform_standin"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, STANDIN_PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


API_KEY = "rvm_" + "k" * 60

# Fast retry settings so tests finish in seconds; the logic is the production one.
FAST_UPLOAD = UploadConfig(
    min_concurrency=1,
    max_concurrency=4,
    backoff_base_s=0.02,
    backoff_max_s=0.3,
    retry_after_max_s=2.0,
    auth_error_log_interval_s=60.0,
)


def jpeg_for(uuid: str, size: int = 2048) -> bytes:
    """A deterministic JPEG-tagged payload per uuid, so corruption is detectable."""
    seed = hashlib.sha256(uuid.encode()).digest()
    body = (seed * (size // len(seed) + 1))[: size - 4]
    return b"\xff\xd8\xff\xe0" + body

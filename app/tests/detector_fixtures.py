"""Shared helpers for the detector tests: the committed model, held-out frames,
config files, and `rvm-detector run` as a real subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "models" / "deposit-yolo11n"
MODEL = MODEL_DIR / "model.onnx"
TRAINING = REPO / "training"


def committed_model() -> Path:
    if not MODEL.is_file():
        pytest.skip(f"the committed model {MODEL} is missing (produced by training/train.py)")
    return MODEL


def is_smoke_model() -> bool:
    """The 1-epoch smoke model committed before training finished detects nothing."""
    return "smoke" in json.loads((MODEL_DIR / "manifest.json").read_text()).get("version", "")


def trained_model() -> Path:
    model = committed_model()
    if is_smoke_model():
        pytest.skip("the committed model is the 1-epoch smoke model; this needs the trained one")
    return model


def heldout_images(out_dir: Path, n: int) -> list[Path]:
    """The first n held-out frames of the training data set (not seen in training)."""
    sys.path.insert(0, str(TRAINING))
    try:
        from generate_dataset import write_heldout_images
    finally:
        sys.path.remove(str(TRAINING))
    return write_heldout_images(out_dir, n)


def independent_images(out_dir: Path, n: int) -> list[Path]:
    """The first n frames of the independent evaluation renderer (never used for training)."""
    sys.path.insert(0, str(TRAINING))
    try:
        from eval_render.dataset import write_eval_images
    finally:
        sys.path.remove(str(TRAINING))
    return write_eval_images(out_dir, n)


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), "OpenCV cannot write MJPG AVI here"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_config(tmp_path: Path, model: Path, source: Path | str, **sections: Any) -> Path:
    key = tmp_path / "api_key"
    key.write_text("rvm_" + "k" * 60)
    key.chmod(0o600)
    base = {
        "camera": {"source": str(source), "stale_after_s": 2},
        "model": {"path": str(model)},
        # Loopback port 9 (discard) refuses: the detector must work without its platform.
        "platform": {"base_url": "http://127.0.0.1:9", "api_key_file": str(key)},
        "spool": {"dir": str(tmp_path / "spool")},
        "http": {"listen": "127.0.0.1:0"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_merge(base, sections)))
    return path


def read_records(spool_dir: Path) -> list[dict[str, Any]]:
    """Deposit records committed to the spool: the record's JSON plus its JPEG's decoded shape.

    Read-only SQLite, so it is safe while the service runs (the platform in these
    tests is unreachable, so nothing is uploaded and removed).
    """
    db = sqlite3.connect(f"file:{spool_dir / 'spool.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT data, image_name FROM deposits ORDER BY seq").fetchall()
    finally:
        db.close()
    out = []
    for data, image_name in rows:
        d = json.loads(data)
        assert d.pop("client_ref") == d["uuid"]
        jpeg = (spool_dir / "images" / image_name).read_bytes()
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        d["image_shape"] = None if image is None else image.shape
        out.append(d)
    return out


class RunningDetector:
    """`rvm-detector run --config C` as a child process, its JSON log lines collected."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rvm_detector.cli", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.logs: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._new: queue.Queue[None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.raw.append(line)
            with contextlib.suppress(ValueError):
                self.logs.append(json.loads(line))
            self._new.put(None)

    def wait_log(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for entry in list(self.logs):
                if pred(entry):
                    return entry
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"process exited {self.proc.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no such log line within {timeout}s:\n{self.output}")
            with contextlib.suppress(queue.Empty):
                self._new.get(timeout=0.2)

    def wait_msg(self, msg: str, timeout: float = 60) -> dict:
        return self.wait_log(lambda e: e.get("msg") == msg, timeout)

    @property
    def output(self) -> str:
        return "".join(self.raw)[-6000:]

    @property
    def url(self) -> str:
        entry = self.wait_msg("http listening")
        return f"http://{entry['host']}:{entry['port']}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)

    def post(self, path: str, body: Any = None, timeout: float = 30) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=timeout)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.get("/readyz").status_code != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"never ready: {self.get('/readyz').text}\n{self.output}")
            time.sleep(0.2)

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        return code


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """`rvm-detector check-config` on a config file, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "rvm_detector.cli", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )

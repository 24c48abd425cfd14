"""Camera capture: one thread per camera feeding a small drop-oldest queue.

The thread owns the source: it opens it, reads frames, and on any failure
closes it and reopens with exponential backoff (with jitter, so a fleet that
lost its cameras together does not retry in lockstep). Video files and image
directories are first-class sources, paced to a frame rate like a camera.
"""

from __future__ import annotations

import collections
import enum
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import cv2
import numpy as np

from rvm_detector import metrics
from rvm_detector.config import CameraConfig

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
DEFAULT_DIR_FPS = 10.0


@dataclass(frozen=True)
class Frame:
    image: np.ndarray
    seq: int
    mono: float  # time.monotonic() at capture, for ordering within the process
    captured_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


class SourceError(Exception):
    """The source cannot be opened or has failed; the capture thread retries."""


class Read(enum.Enum):
    INVALID = "invalid"  # a corrupt/empty frame: skip it, the source is fine
    ENDED = "ended"  # a file or directory has no more frames


class FrameSource(Protocol):
    # Files and directories are paced by us; live sources pace themselves.
    paced_fps: float | None

    def read(self) -> np.ndarray | Read:
        """The next BGR frame, Read.INVALID or Read.ENDED; raises SourceError on failure."""

    def close(self) -> None: ...


def _as_bgr(image: np.ndarray | None) -> np.ndarray | Read:
    if image is None or image.size == 0 or image.ndim not in (2, 3):
        return Read.INVALID
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image if image.shape[2] == 3 else Read.INVALID


class VideoSource:
    """Anything cv2.VideoCapture opens: V4L2 device, GStreamer pipeline, stream, file."""

    def __init__(
        self, cap: cv2.VideoCapture, description: str, is_file: bool, fps: float | None
    ) -> None:
        self._cap = cap
        self._description = description
        self._is_file = is_file
        self.paced_fps = None
        if is_file:
            file_fps = cap.get(cv2.CAP_PROP_FPS)
            self.paced_fps = fps or (file_fps if 0 < file_fps <= 240 else 25.0)

    def read(self) -> np.ndarray | Read:
        ok, image = self._cap.read()
        if not ok:
            # A file that stops delivering has ended; a live source has failed.
            if self._is_file:
                return Read.ENDED
            raise SourceError(f"{self._description} stopped delivering frames")
        return _as_bgr(image)

    def close(self) -> None:
        self._cap.release()


class ImageDirSource:
    """The images of a directory in name order, one per frame."""

    def __init__(self, directory: Path, fps: float | None) -> None:
        self._files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise SourceError(
                f"image directory {directory} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        self._next = 0
        self._directory = directory
        self.paced_fps = fps or DEFAULT_DIR_FPS

    def read(self) -> np.ndarray | Read:
        if self._next >= len(self._files):
            return Read.ENDED
        path = self._files[self._next]
        self._next += 1
        if not path.exists():
            raise SourceError(f"{path} vanished from {self._directory}")
        image = _as_bgr(cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
        if image is Read.INVALID:
            log.warning("skipping unreadable image", extra={"path": str(path)})
        return image

    def close(self) -> None:
        self._files = []


def open_source(cfg: CameraConfig) -> FrameSource:
    """Open `camera.source`; raises SourceError saying what failed."""
    src = cfg.source
    if isinstance(src, int) or src.isdigit():
        cap, is_file = cv2.VideoCapture(int(src), cv2.CAP_V4L2), False
    elif src.startswith("/dev/"):
        cap, is_file = cv2.VideoCapture(src, cv2.CAP_V4L2), False
    elif "!" in src:
        cap, is_file = cv2.VideoCapture(src, cv2.CAP_GSTREAMER), False
    elif urlsplit(src).scheme in ("rtsp", "rtsps", "rtmp", "http", "https"):
        ms = int(cfg.stream_timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap, is_file = cv2.VideoCapture(src, cv2.CAP_FFMPEG, params), False
    else:
        path = Path(src)
        if path.is_dir():
            return ImageDirSource(path, cfg.fps)
        if not path.is_file():
            raise SourceError(f"{src} does not exist (expected a video file or image directory)")
        cap, is_file = cv2.VideoCapture(str(path)), True
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"cannot open camera source {src!r}")
    return VideoSource(cap, str(src), is_file, cfg.fps)


class FrameQueue:
    """Bounded FIFO that drops the oldest frame when full: the detector wants fresh frames."""

    def __init__(self, maxsize: int, camera: str) -> None:
        self._items: collections.deque[Frame] = collections.deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self._dropped = metrics.FRAMES_DROPPED.labels(camera)
        self._depth = metrics.QUEUE_DEPTH.labels("frames")

    def put(self, frame: Frame) -> None:
        with self._cond:
            if len(self._items) >= self._maxsize:
                self._items.popleft()
                self._dropped.inc()
            self._items.append(frame)
            self._depth.set(len(self._items))
            self._cond.notify()

    def get(self, timeout: float) -> Frame | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            frame = self._items.popleft()
            self._depth.set(len(self._items))
            return frame

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class Capture(threading.Thread):
    """Keeps one camera open and its frames flowing into `queue`, until stopped."""

    def __init__(self, cfg: CameraConfig, queue: FrameQueue) -> None:
        super().__init__(name=f"capture-{cfg.name}", daemon=True)
        self.cfg = cfg
        self.queue = queue
        self._stop_event = threading.Event()
        # Set when a non-looping file/directory source is used up.
        self.finished = threading.Event()
        self._last_frame: float | None = None
        self._seq = 0
        labels = (cfg.name,)
        self._captured = metrics.FRAMES_CAPTURED.labels(*labels)
        self._invalid = metrics.FRAMES_INVALID.labels(*labels)
        self._reconnects = metrics.CAMERA_RECONNECTS.labels(*labels)

    def stop(self) -> None:
        self._stop_event.set()

    def frame_age(self) -> float | None:
        """Seconds since the last good frame; None if none yet."""
        last = self._last_frame
        return None if last is None else time.monotonic() - last

    def is_live(self) -> bool:
        age = self.frame_age()
        return age is not None and age < self.cfg.stale_after_s

    def run(self) -> None:
        delay = self.cfg.reconnect_initial_s
        first = True
        while not self._stop_event.is_set():
            if not first:
                self._reconnects.inc()
            first = False
            try:
                source = open_source(self.cfg)
            except (SourceError, cv2.error, OSError) as e:
                delay = self._back_off(f"camera source cannot be opened: {e}", delay)
                continue
            log.info("camera source opened", extra={"camera": self.cfg.name})
            seq_before = self._seq
            try:
                outcome: Read | str | None = self._pump(source)
            except (SourceError, cv2.error, OSError) as e:
                outcome = str(e)
            finally:
                source.close()
            delivered = self._seq > seq_before
            if delivered:
                delay = self.cfg.reconnect_initial_s
            if outcome is Read.ENDED and delivered:
                if not self.cfg.loop:
                    log.info("camera source ended", extra={"camera": self.cfg.name})
                    self.finished.set()
                    return
                first = True  # starting a file over is not a reconnect
            elif outcome is Read.ENDED:
                # Without this a file of undecodable frames would reopen in a tight loop.
                delay = self._back_off("camera source ended without a usable frame", delay)
            elif isinstance(outcome, str):
                delay = self._back_off(f"camera source failed: {outcome}", delay)

    def _back_off(self, why: str, delay: float) -> float:
        wait = delay * random.uniform(0.75, 1.25)
        log.warning(why, extra={"camera": self.cfg.name, "retry_in_s": round(wait, 2)})
        self._stop_event.wait(wait)
        return min(delay * 2, self.cfg.reconnect_max_s)

    def _pump(self, source: FrameSource) -> Read | None:
        """Read until the source ends (Read.ENDED) or we are stopped (None)."""
        period = 1 / source.paced_fps if source.paced_fps else 0.0
        due = time.monotonic()
        while not self._stop_event.is_set():
            image = source.read()
            if image is Read.ENDED:
                return Read.ENDED
            if image is Read.INVALID:
                self._invalid.inc()
            else:
                now = time.monotonic()
                self._last_frame = now
                self._seq += 1
                self._captured.inc()
                self.queue.put(Frame(image, self._seq, now))
            if period:
                due = max(due + period, time.monotonic() - period)
                self._stop_event.wait(max(0.0, due - time.monotonic()))
        return None

"""Capture: a source that dies and comes back, corrupt frames, the drop-oldest queue."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from rvm_detector import metrics
from rvm_detector.capture import Capture, Frame, FrameQueue
from rvm_detector.config import CameraConfig


def value(counter, *labels: str) -> float:
    return counter.labels(*labels)._value.get()


def wait_until(cond: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture
def capture():
    started: list[Capture] = []

    def start(cfg: CameraConfig) -> tuple[Capture, FrameQueue]:
        q = FrameQueue(cfg.queue_size, cfg.name)
        cap = Capture(cfg, q)
        cap.start()
        started.append(cap)
        return cap, q

    yield start
    for cap in started:
        cap.stop()
        cap.join(timeout=10)
        assert not cap.is_alive()


def write_frames(d: Path, n: int) -> None:
    d.mkdir()
    for i in range(n):
        cv2.imwrite(str(d / f"{i:03d}.png"), np.full((48, 64, 3), i * 20, np.uint8))


def test_source_that_dies_and_comes_back(tmp_path: Path, capture) -> None:
    frames = tmp_path / "frames"
    write_frames(frames, 3)
    cfg = CameraConfig(
        source=str(frames),
        name="dies",
        fps=50,
        stale_after_s=0.5,
        reconnect_initial_s=0.05,
        reconnect_max_s=0.2,
    )
    cap, q = capture(cfg)
    wait_until(cap.is_live)
    reconnects = value(metrics.CAMERA_RECONNECTS, "dies")

    frames.rename(tmp_path / "gone")  # the camera disappears
    wait_until(lambda: not cap.is_live())
    wait_until(lambda: value(metrics.CAMERA_RECONNECTS, "dies") >= reconnects + 3)
    # Backoff, not a tight loop: a few attempts per second at most (cap 0.2 s + jitter).
    before, t0 = value(metrics.CAMERA_RECONNECTS, "dies"), time.monotonic()
    time.sleep(1.0)
    rate = (value(metrics.CAMERA_RECONNECTS, "dies") - before) / (time.monotonic() - t0)
    assert rate < 10

    (tmp_path / "gone").rename(frames)  # and comes back
    wait_until(cap.is_live)
    seq = q.get(timeout=5)
    assert isinstance(seq, Frame) and seq.image.shape == (48, 64, 3)


def test_corrupt_and_empty_frames_are_counted_and_skipped(tmp_path: Path, capture) -> None:
    frames = tmp_path / "frames"
    write_frames(frames, 2)
    (frames / "001b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (frames / "001c.png").write_bytes(b"")
    cfg = CameraConfig(source=str(frames), name="corrupt", fps=100, loop=False, queue_size=8)
    cap, q = capture(cfg)
    wait_until(cap.finished.is_set)
    got = [q.get(timeout=1) for _ in range(len(q))]
    assert [f.image[0, 0, 0] for f in got] == [0, 20]  # the two good frames, in order
    assert value(metrics.FRAMES_INVALID, "corrupt") == 2
    assert value(metrics.FRAMES_CAPTURED, "corrupt") == 2


def test_video_file_source_loops_and_is_paced(tmp_path: Path, capture) -> None:
    from detector_fixtures import write_video

    video = write_video(
        tmp_path / "v.avi", [np.full((48, 64, 3), i * 30, np.uint8) for i in range(4)]
    )
    capture(CameraConfig(source=str(video), name="video", fps=40, queue_size=64))
    wait_until(lambda: value(metrics.FRAMES_CAPTURED, "video") >= 10)  # 4 frames, so it looped
    assert value(metrics.CAMERA_RECONNECTS, "video") == 0  # starting over is not a failure
    t0, n0 = time.monotonic(), value(metrics.FRAMES_CAPTURED, "video")
    time.sleep(0.5)
    rate = (value(metrics.FRAMES_CAPTURED, "video") - n0) / (time.monotonic() - t0)
    # Paced at 40 fps, not read flat out (a busy machine can only make it slower).
    assert rate < 60


def test_full_queue_drops_the_oldest_and_counts() -> None:
    q = FrameQueue(2, "queue-test")
    dropped = value(metrics.FRAMES_DROPPED, "queue-test")
    for i in range(5):
        q.put(Frame(np.zeros((1, 1, 3), np.uint8), i, float(i)))
    assert [q.get(timeout=0).seq for _ in range(2)] == [3, 4]
    assert q.get(timeout=0.01) is None
    assert value(metrics.FRAMES_DROPPED, "queue-test") - dropped == 3


def test_camera_that_never_opens_keeps_retrying(tmp_path: Path, capture) -> None:
    cfg = CameraConfig(
        source=str(tmp_path / "no-such.avi"),
        name="never",
        reconnect_initial_s=0.05,
        reconnect_max_s=0.1,
    )
    cap, _ = capture(cfg)
    wait_until(lambda: value(metrics.CAMERA_RECONNECTS, "never") >= 3)
    assert cap.is_alive() and not cap.is_live() and cap.frame_age() is None

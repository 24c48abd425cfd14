"""The process's one Prometheus registry and the detector's own metrics.

Every module registers on `REGISTRY` (never the global default one), so
`/metrics` shows exactly this app's series and tests can read them directly.
Other components define their metrics in their own modules with
`registry=REGISTRY`.
"""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

FRAMES_CAPTURED = Counter(
    "rvm_frames_captured_total", "Frames read from the camera", ["camera"], registry=REGISTRY
)
FRAMES_DROPPED = Counter(
    "rvm_frames_dropped_total",
    "Frames dropped because the queue was full (oldest dropped first)",
    ["camera"],
    registry=REGISTRY,
)
FRAMES_INVALID = Counter(
    "rvm_frames_invalid_total",
    "Corrupt or empty frames skipped",
    ["camera"],
    registry=REGISTRY,
)
CAMERA_RECONNECTS = Counter(
    "rvm_camera_reconnects_total",
    "Attempts to (re)open the camera after a failure",
    ["camera"],
    registry=REGISTRY,
)
CAMERA_UP = Gauge(
    "rvm_camera_up", "1 while the camera delivers fresh frames", ["camera"], registry=REGISTRY
)
QUEUE_DEPTH = Gauge(
    "rvm_queue_depth", "Items waiting in an internal queue", ["queue"], registry=REGISTRY
)
INFERENCE_SECONDS = Histogram(
    "rvm_inference_seconds",
    "Detection latency per frame: preprocess + inference + postprocess",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0),
    registry=REGISTRY,
)
FRAMES_DETECTED = Counter(
    "rvm_frames_detected_total", "Frames run through the detector", registry=REGISTRY
)
DEPOSITS = Counter(
    "rvm_deposits_total", "Deposit records handed to the sink", ["verdict"], registry=REGISTRY
)
# Both series exist from the start, so a rate() over them is defined before the first deposit.
for _verdict in ("accept", "reject"):
    DEPOSITS.labels(_verdict)
DEPOSIT_ERRORS = Counter(
    "rvm_deposit_errors_total",
    "Deposit records the sink refused (the record was not accepted)",
    registry=REGISTRY,
)
READY = Gauge("rvm_ready", "1 when /readyz answers 200", registry=REGISTRY)
BUILD_INFO = Gauge(
    "rvm_build_info",
    "Always 1; labels say which release (the detector_app role's release id) and app version run",
    ["release", "version"],
    registry=REGISTRY,
)


def release_of(config_path: Path) -> str:
    """The release a config file belongs to: release_id in the release.json beside it.

    The detector_app role writes release.json into every release directory, next to its
    config.yml; a config anywhere else (a development checkout) belongs to no release.
    """
    record = Path(config_path).resolve().parent / "release.json"
    try:
        release = json.loads(record.read_text()).get("release_id")
    except (OSError, ValueError, AttributeError):
        return "none"
    return str(release) if release else "none"

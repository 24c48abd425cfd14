"""The detector's configuration: one YAML file, validated strictly.

Unknown keys are errors (a typo must not silently fall back to a default), and
every error names the key path, the line in the file where possible, and what
is allowed. Secrets are never inline: the API key is read from a file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraConfig(_Strict):
    # Owned by the capture/detection side (issue 3).
    source: str | int = Field(
        description="device index, /dev/videoN, GStreamer pipeline, rtsp:// URL, "
        "video file or image directory"
    )
    # The camera's name in deposit records, metrics and logs.
    name: str = Field("chute", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    # Pace for video files and image directories (a live camera sets its own);
    # None = the video's own frame rate, or 10 fps for an image directory.
    fps: float | None = Field(None, gt=0, le=240)
    # Video file / image directory: start again at the end. false = `run` exits
    # once the source is used up (batch runs, tests).
    loop: bool = True
    # No frame for this long: the camera is stale (/readyz false, rvm_camera_up 0).
    stale_after_s: float = Field(5.0, gt=0)
    # Reopen backoff after a failure: doubles from initial to max, with jitter.
    reconnect_initial_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    # Frames waiting for the detector; when full the oldest is dropped (and counted).
    queue_size: int = Field(2, ge=1, le=64)
    # Open/read timeout for network streams (rtsp://, http://).
    stream_timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _backoff_order(self) -> CameraConfig:
        if self.reconnect_initial_s > self.reconnect_max_s:
            raise ValueError(
                f"camera.reconnect_initial_s ({self.reconnect_initial_s}) is above "
                f"reconnect_max_s ({self.reconnect_max_s}); lower initial or raise max"
            )
        return self


class ModelConfig(_Strict):
    path: Path = Field(description="YOLO detection model: .onnx, or a TensorRT .engine/.plan")
    # auto: by file suffix (.engine/.plan -> tensorrt, otherwise onnxruntime).
    backend: Literal["auto", "onnxruntime", "tensorrt"] = "auto"
    # Detections at or below this confidence are dropped (Ultralytics' `conf`).
    conf: float = Field(0.25, ge=0, le=1)
    # NMS IoU threshold (Ultralytics' `iou`).
    iou: float = Field(0.7, ge=0, le=1)
    max_det: int = Field(300, ge=1, le=10000)
    # ONNX Runtime intra-op threads; None = one per physical core.
    threads: int | None = Field(None, ge=1, le=64)

    @field_validator("path")
    @classmethod
    def _model_exists(cls, v: Path) -> Path:
        if not v.is_file():
            raise ValueError(
                f"model file {v} does not exist; point model.path at the exported "
                "model (e.g. /opt/rvm-detector/models/<name>/<sha256>/model.onnx)"
            )
        return v


class SegmentConfig(_Strict):
    # SAM2 graphs from training/export_sam2.py, each in its directory beside its
    # manifest.json (e.g. /opt/rvm-detector/models/sam2-tiny-encoder/<sha256>/model.onnx).
    # Deposits only. Unset, missing or broken: segmentation is off (said in /readyz and
    # rvm_segmentation_enabled) and deposits go on without masks; never a start failure.
    encoder: Path | None = None
    decoder: Path | None = None
    # ONNX Runtime intra-op threads; None = one per physical core.
    threads: int | None = Field(None, ge=1, le=64)


class TriggerConfig(_Strict):
    # continuous: detect at up to `fps` and record a deposit whenever an item
    # appears in an empty chute. deposit: detect only when the machine's
    # controller calls POST /deposit.
    mode: Literal["continuous", "deposit"] = "deposit"
    fps: float = Field(5.0, gt=0, le=240)
    # continuous: this many frames without detections end an item's presence.
    clear_frames: int = Field(3, ge=1, le=1000)
    # Frames examined per deposit; the one with the most confident detection is kept.
    deposit_frames: int = Field(3, ge=1, le=100)
    # POST /deposit gives up (504) when no fresh frames arrive within this time.
    deposit_timeout_s: float = Field(5.0, gt=0, le=120)


class VerdictConfig(_Strict):
    # Accepted classes and the minimum confidence for each; anything else is rejected.
    accept: dict[str, float] = Field(default_factory=lambda: {"pet_bottle": 0.5, "can": 0.5})
    # More items than this in view at once is a reject (one item per deposit).
    max_items: int = Field(1, ge=1, le=100)

    @field_validator("accept")
    @classmethod
    def _confidences_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: c for k, c in v.items() if not 0 <= c <= 1}
        if bad:
            raise ValueError(f"confidences must be between 0 and 1, got {bad}")
        return v


class RecordConfig(_Strict):
    jpeg_quality: int = Field(90, ge=10, le=100)


class HttpConfig(_Strict):
    # host:port of the local API (/healthz /readyz /metrics /deposit); port 0 = any free port.
    listen: str = "127.0.0.1:8080"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"{v!r} is not host:port; write e.g. 127.0.0.1:8080")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class UploadConfig(_Strict):
    # Owned by the upload side (issue 4). Concurrency adapts between the bounds (AIMD).
    min_concurrency: int = Field(1, ge=1, le=64)
    max_concurrency: int = Field(8, ge=1, le=64)
    # Full-jitter exponential backoff: sleep uniform(0, min(max, base * 2**n)).
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(300.0, gt=0)
    # An unreachable platform's Retry-After is capped so a bad header cannot stall for days.
    retry_after_max_s: float = Field(3600.0, gt=0)
    # How often 401/403 are logged at ERROR while they persist.
    auth_error_log_interval_s: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> UploadConfig:
        if self.min_concurrency > self.max_concurrency:
            raise ValueError(
                f"platform.upload.min_concurrency ({self.min_concurrency}) is above "
                f"max_concurrency ({self.max_concurrency}); lower min or raise max"
            )
        return self


class PlatformConfig(_Strict):
    # Owned by the upload side (issue 4).
    base_url: str = Field(description="e.g. https://myrvm.example.com (the /api/v1 is added)")
    api_key_file: Path = Field(description="file holding the X-RVM-API-KEY, mode 0600 or 0400")
    # Identity sent in handshake/heartbeat; None = this host's hostname.
    hardware_id: str | None = Field(None, max_length=100)
    name: str | None = Field(None, max_length=255)
    # Extra CA bundle for a private platform CA; verification is never switched off.
    ca_bundle: Path | None = None
    # Client certificate (and key, if not in the same PEM) for mutual TLS.
    client_cert: Path | None = None
    client_key: Path | None = None
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(30.0, gt=0)
    # Used until the platform hands out its own interval.
    heartbeat_interval_s: float = Field(60.0, gt=0)
    # The heartbeat's GIT_PULL command runs this argv (the fleet points it at the
    # pull-mode unit, e.g. ["systemctl", "start", "rvm-pull.service"]); None = refuse.
    git_pull_command: list[str] | None = None
    git_pull_timeout_s: float = Field(600.0, gt=0)
    upload: UploadConfig = UploadConfig()

    @field_validator("base_url")
    @classmethod
    def _url_parses(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"platform.base_url {v!r} is not an http(s) URL with a host; "
                "write it like https://myrvm.example.com"
            )
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as e:
            raise ValueError(f"platform.base_url {v!r} has a bad port: {e}") from None
        return v.rstrip("/")

    @field_validator("api_key_file")
    @classmethod
    def _key_file_private(cls, v: Path) -> Path:
        try:
            st = v.stat()
        except OSError as e:
            raise ValueError(
                f"platform.api_key_file {v} cannot be read ({e.strerror}); create it "
                f"with the machine's API key and `chmod 600 {v}`"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"platform.api_key_file {v} is not a regular file")
        if st.st_mode & 0o077:
            raise ValueError(
                f"platform.api_key_file {v} has mode {stat.S_IMODE(st.st_mode):04o}: "
                f"group/other may read the secret; run `chmod 600 {v}`"
            )
        if not os.access(v, os.R_OK):
            raise ValueError(
                f"platform.api_key_file {v} is not readable by this user; chown it to "
                "the service user"
            )
        return v

    @field_validator("ca_bundle", "client_cert", "client_key")
    @classmethod
    def _tls_file_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"TLS file {v} does not exist; fix the path or remove the key")
        return v


def _writable_dir_problem(path: Path) -> str | None:
    """Why `path` cannot hold the spool, or None. A missing dir is fine if it can be made."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by this user"
    return None


class SpoolConfig(_Strict):
    # Owned by the upload side (issue 4).
    dir: Path
    # Disk budget for images + database; when reached, the oldest images are shed
    # (their records are kept and sent without the image).
    max_bytes: int = Field(2 * 1024**3, ge=1024**2)

    @field_validator("dir")
    @classmethod
    def _dir_writable(cls, v: Path) -> Path:
        problem = _writable_dir_problem(v)
        if problem:
            raise ValueError(
                f"spool.dir {v} cannot be used: {problem}; create it and give the "
                "service user write access (e.g. /var/lib/rvm-detector/spool)"
            )
        return v


class Config(_Strict):
    camera: CameraConfig
    model: ModelConfig
    platform: PlatformConfig
    spool: SpoolConfig
    http: HttpConfig = HttpConfig()
    segment: SegmentConfig = SegmentConfig()
    trigger: TriggerConfig = TriggerConfig()
    verdict: VerdictConfig = VerdictConfig()
    record: RecordConfig = RecordConfig()
    logging: LoggingConfig = LoggingConfig()

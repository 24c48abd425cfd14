"""The detector's configuration: one YAML file, validated strictly.

Unknown keys are errors (a typo must not silently fall back to a default), and
every error names the key path, the line in the file where possible, and what
is allowed. Secrets are never inline: the API key is read from a file.

Each key's default and meaning live here, in its `Field` (default and description);
app/README.md's configuration tables are generated from them (`make docs`,
scripts/app_config_docs.py).
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
    source: str | int = Field(
        description="device index, /dev/videoN, GStreamer pipeline, rtsp:// URL, "
        "video file or image directory"
    )
    name: str = Field(
        "chute",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="the camera's name in records, metrics (`camera` label) and logs",
    )
    fps: float | None = Field(
        None,
        gt=0,
        le=240,
        description="pace for video files and image directories (live cameras pace "
        "themselves); null: the video's own frame rate, 10 for a directory",
    )
    loop: bool = Field(
        True,
        description="files and directories start over at the end; false: `run` exits once "
        "the source is used up",
    )
    stale_after_s: float = Field(
        5.0,
        gt=0,
        description="no frame for this long: camera stale, /readyz false, `rvm_camera_up` 0",
    )
    reconnect_initial_s: float = Field(
        0.5,
        gt=0,
        description="first wait before reopening after a failure; doubles up to "
        "reconnect_max_s, +-25 % jitter",
    )
    reconnect_max_s: float = Field(30.0, gt=0, description="longest wait between reopen tries")
    queue_size: int = Field(
        2,
        ge=1,
        le=64,
        description="frames waiting for the detector; when full the oldest is dropped "
        "(`rvm_frames_dropped_total`)",
    )
    stream_timeout_s: float = Field(
        10.0, gt=0, description="open/read timeout for network streams (rtsp://, http://)"
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> CameraConfig:
        if self.reconnect_initial_s > self.reconnect_max_s:
            raise ValueError(
                f"camera.reconnect_initial_s ({self.reconnect_initial_s}) is above "
                f"reconnect_max_s ({self.reconnect_max_s}); lower initial or raise max"
            )
        return self


class ModelConfig(_Strict):
    path: Path = Field(
        description="YOLO detection model: .onnx, or a TensorRT .engine/.plan (plain plan or "
        "with Ultralytics' metadata header); must exist"
    )
    backend: Literal["auto", "onnxruntime", "tensorrt"] = Field(
        "auto", description="auto: by file suffix (.engine/.plan: tensorrt, else onnxruntime)"
    )
    conf: float = Field(
        0.25,
        ge=0,
        le=1,
        description="detections at or below this confidence are dropped (Ultralytics' `conf`)",
    )
    iou: float = Field(0.7, ge=0, le=1, description="NMS IoU threshold (Ultralytics' `iou`)")
    max_det: int = Field(300, ge=1, le=10000, description="at most this many detections per frame")
    threads: int | None = Field(
        None,
        ge=1,
        le=64,
        description="ONNX Runtime intra-op threads; null: one per physical core",
    )

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
    # Deposits only. Unset, missing or broken: segmentation is off (said in /readyz and
    # rvm_segmentation_enabled) and deposits go on without masks; never a start failure.
    encoder: Path | None = Field(
        None,
        description="SAM2 image encoder (training/export_sam2.py), beside its manifest.json, "
        "e.g. /opt/rvm-detector/models/sam2-tiny-encoder/<sha256>/model.onnx; unset: no masks",
    )
    decoder: Path | None = Field(
        None,
        description="SAM2 prompt encoder + mask decoder taking box prompts, beside its "
        "manifest.json; unset: no masks",
    )
    threads: int | None = Field(
        None, ge=1, le=64, description="ONNX Runtime intra-op threads; unset: one per core"
    )


class TriggerConfig(_Strict):
    mode: Literal["continuous", "deposit"] = Field(
        "deposit",
        description="deposit: detect only when the machine's controller calls POST /deposit; "
        "continuous: scan at `fps` and record a deposit whenever an item appears in an "
        "empty chute",
    )
    fps: float = Field(
        5.0, gt=0, le=240, description="continuous mode: at most this many scans per second"
    )
    clear_frames: int = Field(
        3,
        ge=1,
        le=1000,
        description="continuous mode: scans without detections that end an item's presence",
    )
    deposit_frames: int = Field(
        3,
        ge=1,
        le=100,
        description="frames taken per deposit (captured after the request); the one with "
        "the most confident detection is recorded",
    )
    deposit_timeout_s: float = Field(
        5.0,
        gt=0,
        le=120,
        description="a deposit that gets no frame in this time fails (504); with some "
        "frames it is recorded from those",
    )


class VerdictConfig(_Strict):
    accept: dict[str, float] = Field(
        default_factory=lambda: {"pet_bottle": 0.5, "can": 0.5},
        description="accepted classes and the minimum confidence of each (0 to 1); "
        "anything else is a reject",
    )
    max_items: int = Field(1, ge=1, le=100, description="more items in view than this is a reject")

    @field_validator("accept")
    @classmethod
    def _confidences_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: c for k, c in v.items() if not 0 <= c <= 1}
        if bad:
            raise ValueError(f"confidences must be between 0 and 1, got {bad}")
        return v


class RecordConfig(_Strict):
    jpeg_quality: int = Field(90, ge=10, le=100, description="JPEG quality of the deposit image")


def host_port(v: str) -> tuple[str, int]:
    host, _, port = v.rpartition(":")
    return host.strip("[]"), int(port)


class HttpConfig(_Strict):
    listen: str = Field(
        "127.0.0.1:8080",
        description="host:port of the local API (/healthz /readyz /metrics /deposit); port 0 "
        "picks a free port (logged as `http listening`)",
    )
    metrics_listen: str | None = Field(
        None,
        description="host:port of a second listener that serves only GET /metrics, for the "
        "monitoring server (the local API, with POST /deposit, stays on `listen`); null: none",
    )

    @field_validator("listen", "metrics_listen")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"{v!r} is not host:port; write e.g. 127.0.0.1:8080")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> HttpConfig:
        # Port 0 asks for a free port, so two of them never clash.
        m = self.metrics_listen
        if m is not None and m == self.listen and host_port(m)[1] != 0:
            raise ValueError(
                f"metrics_listen {m!r} is the same address as listen; "
                "give the metrics listener its own port (e.g. 0.0.0.0:9101)"
            )
        return self

    @property
    def host(self) -> str:
        return host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return host_port(self.listen)[1]


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="the lowest level logged"
    )


class UploadConfig(_Strict):
    min_concurrency: int = Field(
        1, ge=1, le=64, description="fewest parallel uploads (concurrency adapts, AIMD)"
    )
    max_concurrency: int = Field(8, ge=1, le=64, description="most parallel uploads")
    backoff_base_s: float = Field(
        0.5,
        gt=0,
        description="retry backoff, full jitter: sleep uniform(0, min(max, base * 2**n))",
    )
    backoff_max_s: float = Field(300.0, gt=0, description="longest retry backoff")
    retry_after_max_s: float = Field(
        3600.0,
        gt=0,
        description="cap on the platform's Retry-After, so a bad header cannot stall for days",
    )
    auth_error_log_interval_s: float = Field(
        300.0, gt=0, description="how often 401/403 are logged at ERROR while they persist"
    )

    @model_validator(mode="after")
    def _bounds(self) -> UploadConfig:
        if self.min_concurrency > self.max_concurrency:
            raise ValueError(
                f"platform.upload.min_concurrency ({self.min_concurrency}) is above "
                f"max_concurrency ({self.max_concurrency}); lower min or raise max"
            )
        return self


class PlatformConfig(_Strict):
    base_url: str = Field(description="e.g. https://myrvm.example.com (the /api/v1 is added)")
    api_key_file: Path = Field(description="file holding the X-RVM-API-KEY, mode 0600 or 0400")
    hardware_id: str | None = Field(
        None,
        max_length=100,
        description="identity sent in handshake and heartbeat; null: this host's hostname",
    )
    name: str | None = Field(
        None,
        max_length=255,
        description="the machine's name sent in the handshake; null: hardware_id",
    )
    ca_bundle: Path | None = Field(
        None,
        description="CA bundle for a private platform CA (replaces the system CAs); "
        "verification is never switched off",
    )
    client_cert: Path | None = Field(None, description="client certificate for mutual TLS")
    client_key: Path | None = Field(None, description="its key, when not in the client_cert PEM")
    connect_timeout_s: float = Field(5.0, gt=0, description="connect timeout of every call")
    read_timeout_s: float = Field(30.0, gt=0, description="read timeout of every call")
    heartbeat_interval_s: float = Field(
        60.0, gt=0, description="heartbeat interval until the platform hands out its own"
    )
    git_pull_command: list[str] | None = Field(
        None,
        description="argv the heartbeat's GIT_PULL command runs (e.g. [systemctl, start, "
        "rvm-pull.service]); null: the command is refused",
    )
    git_pull_timeout_s: float = Field(600.0, gt=0, description="longest run of git_pull_command")
    pull_state_file: Path | None = Field(
        None,
        description="pull mode's state file (roles/pull_mode): each heartbeat's version "
        "then names the ring's commit this device runs and how its last pull run ended",
    )
    upload: UploadConfig = Field(
        default_factory=UploadConfig, description="retry and concurrency of uploads"
    )

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
    dir: Path = Field(
        description="the spool's directory (SQLite database and images), writable by the "
        "service user"
    )
    max_bytes: int = Field(
        2 * 1024**3,
        ge=1024**2,
        description="disk budget for images and database; when reached, the oldest images "
        "are shed (their records are kept and sent without the image)",
    )

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
    camera: CameraConfig = Field(description="the camera the detector reads")
    model: ModelConfig = Field(description="the detection model")
    platform: PlatformConfig = Field(description="the MyRVM platform deposits go to")
    spool: SpoolConfig = Field(description="the durable outbox between detector and platform")
    http: HttpConfig = Field(default_factory=HttpConfig, description="the local HTTP API")
    segment: SegmentConfig = Field(
        default_factory=SegmentConfig, description="SAM2 masks of each deposit's items"
    )
    trigger: TriggerConfig = Field(
        default_factory=TriggerConfig, description="when the detector looks"
    )
    verdict: VerdictConfig = Field(default_factory=VerdictConfig, description="what is accepted")
    record: RecordConfig = Field(default_factory=RecordConfig, description="deposit records")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="the JSON log")

"""The detector's configuration: one YAML file, validated strictly.

Unknown keys are errors (a typo must not silently fall back to a default), and
every error names the key path, the line in the file where possible, and what
is allowed. Secrets are never inline: the API key is read from a file.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraConfig(_Strict):
    # Owned by the capture/detection side (issue 3).
    source: str | int = Field(
        description="device index, /dev/videoN, GStreamer pipeline, rtsp:// URL, "
        "video file or image directory"
    )


class ModelConfig(_Strict):
    path: Path


class HttpConfig(_Strict):
    listen: str = "127.0.0.1:8080"


class PlatformConfig(_Strict):
    # Owned by the upload side (issue 4).
    base_url: str
    api_key_file: Path


class SpoolConfig(_Strict):
    # Owned by the upload side (issue 4).
    dir: Path


class Config(_Strict):
    camera: CameraConfig
    model: ModelConfig
    platform: PlatformConfig
    spool: SpoolConfig
    http: HttpConfig = HttpConfig()

"""Client for the MyRVM platform's edge API (deposit, handshake, heartbeat).

One pooled `httpx.Client` (keep-alive, TLS verification always on) serves every
call. Methods return a `Reply` for any HTTP answer and let transport errors
(`httpx.HTTPError`) propagate: deciding what to retry is the caller's job.
A body that is not JSON or not the documented shape never raises here; it is
reported in `Reply.contract_error` so the caller can log it with the status.
"""

from __future__ import annotations

import email.utils
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rvm_detector import __version__
from rvm_detector.config import PlatformConfig

API_PREFIX = "/api/v1"
_MAX_TEXT = 4096


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    text: str
    retry_after_s: float | None
    contract_error: str | None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _reply(resp: httpx.Response, expect: tuple[str, ...]) -> Reply:
    """Wrap a response; `expect` are the keys a 2xx JSON body must carry."""
    text = resp.text[:_MAX_TEXT]
    body: Any = None
    problem: str | None = None
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError):
        ctype = resp.headers.get("content-type", "?")
        problem = f"body is not JSON (content-type {ctype})"
    if body is not None:
        if not isinstance(body, dict):
            problem = f"body is JSON {type(body).__name__}, not an object"
        elif resp.is_success:
            missing = [k for k in expect if k not in body]
            if missing:
                problem = f"2xx body lacks {missing}"
    return Reply(
        status=resp.status_code,
        body=body,
        text=text,
        retry_after_s=parse_retry_after(resp.headers.get("retry-after")),
        contract_error=problem,
    )


def read_api_key(path: Path) -> str:
    key = path.read_text().strip()
    if not key:
        raise ValueError(f"platform.api_key_file {path} is empty; put the machine's API key in it")
    return key


def image_mime(image: bytes) -> tuple[str, str]:
    """(file name suffix, MIME type) from the image's magic bytes."""
    if image.startswith(b"\x89PNG"):
        return "png", "image/png"
    return "jpg", "image/jpeg"


class PlatformClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        ca_bundle: Path | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        max_connections: int = 16,
    ) -> None:
        verify: ssl.SSLContext | bool = True
        if ca_bundle or client_cert:
            # A private CA replaces the public store; verification itself stays on.
            verify = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
            if client_cert:
                verify.load_cert_chain(str(client_cert), str(client_key) if client_key else None)
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + API_PREFIX,
            headers={
                "X-RVM-API-KEY": api_key,
                "Accept": "application/json",
                "User-Agent": f"rvm-detector/{__version__}",
            },
            verify=verify,
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=30,
            ),
        )

    @classmethod
    def from_config(cls, cfg: PlatformConfig) -> PlatformClient:
        return cls(
            cfg.base_url,
            read_api_key(cfg.api_key_file),
            ca_bundle=cfg.ca_bundle,
            client_cert=cfg.client_cert,
            client_key=cfg.client_key,
            connect_timeout_s=cfg.connect_timeout_s,
            read_timeout_s=cfg.read_timeout_s,
            max_connections=cfg.upload.max_concurrency + 2,
        )

    def close(self) -> None:
        self._http.close()

    def deposit(
        self,
        *,
        idempotency_key: str,
        status: str,
        data: str,
        image: bytes,
        session_id: str | None = None,
    ) -> Reply:
        suffix, mime = image_mime(image)
        form = {"status": status, "data": data}
        if session_id:
            form["session_id"] = session_id
        resp = self._http.post(
            "/edge/deposit",
            headers={"Idempotency-Key": idempotency_key},
            data=form,
            files={"image": (f"{idempotency_key}.{suffix}", image, mime)},
        )
        return _reply(resp, ("status", "data"))

    def upload_image(
        self,
        *,
        idempotency_key: str,
        original: bytes,
        processed: bytes,
        mask: bytes | None,
        metadata: dict[str, Any],
    ) -> Reply:
        """POST /edge/upload-image: the deposit's frame, the frame with masks, the mask PNG."""
        files = {
            "original_image": (f"{idempotency_key}.jpg", original, "image/jpeg"),
            "processed_image": (f"{idempotency_key}.processed.jpg", processed, "image/jpeg"),
        }
        if mask is not None:
            files["mask_image"] = (f"{idempotency_key}.png", mask, "image/png")
        resp = self._http.post(
            "/edge/upload-image",
            headers={"Idempotency-Key": idempotency_key},
            data={"metadata": json.dumps(metadata, separators=(",", ":"), sort_keys=True)},
            files=files,
        )
        return _reply(resp, ("status",))

    def handshake(self, payload: dict[str, Any]) -> Reply:
        return _reply(self._http.post("/edge/handshake", json=payload), ("status", "data"))

    def heartbeat(self, payload: dict[str, Any]) -> Reply:
        return _reply(self._http.post("/edge/heartbeat", json=payload), ("status",))


def describe(reply: Reply) -> str:
    """One line for logs: status, contract problem, and the start of the body."""
    extra = f" ({reply.contract_error})" if reply.contract_error else ""
    body = json.dumps(reply.body)[:300] if reply.body is not None else reply.text[:300]
    return f"HTTP {reply.status}{extra}: {body}"

"""The local HTTP API: /healthz /readyz /metrics for the fleet, POST /deposit for the machine.

It binds to loopback by default; the machine's controller and the monitoring
agent run on the same device.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rvm_detector.metrics import REGISTRY

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024


class DepositRejected(Exception):
    """A deposit could not be recorded; `status` is the HTTP answer."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class Api(Protocol):
    def readiness(self) -> tuple[bool, dict[str, Any]]: ...

    def deposit(self, session_id: str | None) -> dict[str, Any]:
        """Record the next deposit; returns the record (without image) or raises DepositRejected."""


class _Handler(BaseHTTPRequestHandler):
    api: Api
    server_version = "rvm-detector"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http " + format % args)

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode() + b"\n")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._json(200, {"status": "alive"})
        elif path == "/readyz":
            ready, checks = self.api.readiness()
            self._json(200 if ready else 503, {"ready": ready, "checks": checks})
        elif path == "/metrics":
            self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        else:
            self._json(404, {"error": f"no such endpoint {path}; try /healthz /readyz /metrics"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path != "/deposit":
            self._json(404, {"error": f"no such endpoint {path}; POST /deposit"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._json(413, {"error": f"body over {MAX_BODY} bytes"})
            return
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("not an object")
            session_id = body.get("session_id")
            if session_id is not None and not isinstance(session_id, str | int):
                raise ValueError("session_id must be a string")
        except ValueError as e:
            self._json(
                400,
                {"error": f'body must be a JSON object like {{"session_id": "..."}}: {e}'},
            )
            return
        try:
            record = self.api.deposit(None if session_id is None else str(session_id))
        except DepositRejected as e:
            self._json(e.status, {"error": str(e)})
            return
        self._json(200, record)


class _MetricsHandler(_Handler):
    """The listener the monitoring server reaches: /metrics and nothing else."""

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/metrics":
            self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        else:
            self._json(404, {"error": "this listener serves only GET /metrics"})

    def do_POST(self) -> None:
        self._json(404, {"error": "this listener serves only GET /metrics"})


class HttpApi:
    def __init__(self, host: str, port: int, api: Api, metrics_only: bool = False) -> None:
        base = _MetricsHandler if metrics_only else _Handler
        handler = type("Handler", (base,), {"api": api})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

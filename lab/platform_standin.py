#!/usr/bin/env python3
"""A stand-in for the MyRVM platform's edge API, for the lab and for tests.

Speaks the contract in shared/platform-api.md with the platform's validation
rules (API keys stored as sha256, 401/403/422 bodies, multipart deposit with
jpeg/png <= 5 MiB), plus what the lab needs and the real platform may lack:
de-duplication of deposits by `Idempotency-Key` (a repeat returns the first
answer), a heartbeat command queue, and fault switches flipped at run time.

Standalone: Python >= 3.10 standard library only, one file, so an Ansible role
can copy it to the lab's platform host. Storage is one SQLite file.

    python3 lab/platform_standin.py --db standin.db --api-key-file key --port 8000 --admin-port 8001
    python3 lab/platform_standin.py --db standin.db --dump          # print what was received

The admin API (faults, commands, keys, stats, exports) listens on a separate
port bound to 127.0.0.1 only; see `AdminHandler` for its routes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import secrets
import socket
import sqlite3
import ssl
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MAX_BODY = 20 * 1024 * 1024
MAX_IMAGE = 5 * 1024 * 1024
MAX_MASK = 1024 * 1024
_SCHEMA = """
CREATE TABLE IF NOT EXISTS machines (
    key_sha256 TEXT PRIMARY KEY, hardware_id TEXT, name TEXT,
    blocked INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deposits (
    id INTEGER PRIMARY KEY AUTOINCREMENT, idem_key TEXT UNIQUE, client_ref TEXT,
    hardware_id TEXT, status TEXT NOT NULL, data TEXT NOT NULL, session_id TEXT,
    image_sha256 TEXT NOT NULL, image_size INTEGER NOT NULL, image_mime TEXT NOT NULL,
    response TEXT NOT NULL, received_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS deposits_client_ref ON deposits (client_ref);
CREATE TABLE IF NOT EXISTS deposit_posts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, idem_key TEXT, outcome TEXT NOT NULL,
    received_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS handshakes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, hardware_id TEXT, body TEXT, received_at TEXT);
CREATE TABLE IF NOT EXISTS heartbeats (
    id INTEGER PRIMARY KEY AUTOINCREMENT, hardware_id TEXT, body TEXT, received_at TEXT);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT, hardware_id TEXT NOT NULL, action TEXT NOT NULL,
    created_at TEXT NOT NULL, delivered_at TEXT);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT, idem_key TEXT UNIQUE, hardware_id TEXT,
    metadata TEXT NOT NULL, original_sha256 TEXT NOT NULL, processed_sha256 TEXT NOT NULL,
    mask_png BLOB, response TEXT NOT NULL, received_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS image_posts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, idem_key TEXT, outcome TEXT NOT NULL,
    received_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offline_transactions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, hardware_id TEXT, timestamp TEXT, items TEXT,
    received_at TEXT);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_api_key() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "rvm_" + "".join(secrets.choice(alphabet) for _ in range(60))


@dataclass
class Faults:
    """Run-time fault switches; rates are probabilities per edge request."""

    latency_ms: float = 0.0
    error_rate: float = 0.0  # 500 before anything is stored
    rate_limit_rate: float = 0.0  # 429 with Retry-After, before storing
    retry_after_s: int = 1
    down: bool = False  # connection reset without an answer
    slow_body_rate: float = 0.0  # stored, headers sent, body after slow_body_s
    slow_body_s: float = 5.0
    truncate_rate: float = 0.0  # stored, then half the body and the connection dropped
    bad_gateway_html_rate: float = 0.0  # 502 text/html, as a proxy in front would answer
    non_json_2xx_rate: float = 0.0  # stored, then 201 with a body that is not JSON
    ignore_idempotency: bool = False  # behave like a platform without key support
    upload_image_error_rate: float = 0.0  # 503 to upload-image only, before storing

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name: f.type for f in fields(self)}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown fault {key!r}; known: {sorted(known)}")
            current = getattr(self, key)
            if isinstance(current, bool):
                value = bool(value)
            elif isinstance(current, int):
                value = int(value)
            else:
                value = float(value)
            if key.endswith("_rate") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be between 0 and 1, got {value}")
            setattr(self, key, value)


class Store:
    """SQLite storage; one connection per thread (WAL lets readers run beside the writer)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._write = threading.Lock()
        self.conn().executescript(_SCHEMA)
        self._keys: dict[str, tuple[str | None, bool]] = {}
        self.reload_keys()

    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = c
        return c

    def reload_keys(self) -> None:
        rows = self.conn().execute("SELECT key_sha256, hardware_id, blocked FROM machines")
        self._keys = {k: (hw, bool(b)) for k, hw, b in rows}

    def add_key(self, key: str, hardware_id: str | None = None, name: str | None = None) -> str:
        digest = sha256_hex(key.encode())
        with self._write:
            self.conn().execute(
                "INSERT OR IGNORE INTO machines (key_sha256, hardware_id, name, created_at)"
                " VALUES (?, ?, ?, ?)",
                (digest, hardware_id, name, _now()),
            )
        self.reload_keys()
        return digest

    def set_blocked(self, digest: str, blocked: bool) -> int:
        with self._write:
            n = (
                self.conn()
                .execute("UPDATE machines SET blocked=? WHERE key_sha256=?", (int(blocked), digest))
                .rowcount
            )
        self.reload_keys()
        return n

    def machine(self, key: str | None) -> tuple[str, str | None, bool] | None:
        if not key:
            return None
        digest = sha256_hex(key.encode())
        found = self._keys.get(digest)
        return None if found is None else (digest, found[0], found[1])

    def execute(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._write:
            return self.conn().execute(sql, args)

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        return self.conn().execute(sql, args).fetchall()


# -- validation, as the platform's Laravel rules would answer --------------------


class Invalid(Exception):
    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(errors)
        self.errors = errors

    def body(self) -> dict[str, Any]:
        msgs = [m for ms in self.errors.values() for m in ms]
        extra = f" (and {len(msgs) - 1} more error{'s' if len(msgs) > 2 else ''})"
        return {"message": msgs[0] + (extra if len(msgs) > 1 else ""), "errors": self.errors}


def _check(errors: dict[str, list[str]], field: str, ok: bool, message: str) -> None:
    if not ok:
        errors.setdefault(field, []).append(message)


def _image_kind(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    return None


def _string(errors: dict, obj: dict, field: str, max_len: int, required: bool = False) -> None:
    value = obj.get(field)
    if value is None:
        _check(errors, field, not required, f"The {field} field is required.")
        return
    _check(errors, field, isinstance(value, str), f"The {field} field must be a string.")
    if isinstance(value, str):
        _check(
            errors,
            field,
            len(value) <= max_len,
            f"The {field} field must not be greater than {max_len} characters.",
        )


def _percentages(errors: dict, obj: Any, prefix: str, keys: tuple[str, ...]) -> None:
    if obj is None:
        return
    if not isinstance(obj, dict):
        _check(errors, prefix, False, f"The {prefix} field must be an array.")
        return
    for k in keys:
        v = obj.get(k)
        if v is not None:
            _check(
                errors,
                f"{prefix}.{k}",
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 100,
                f"The {prefix}.{k} field must be between 0 and 100.",
            )


_HEALTH_PCT = ("cpu_usage_percent", "memory_usage_percent", "disk_usage_percent")


def validate_handshake(body: Any) -> None:
    if not isinstance(body, dict):
        raise Invalid({"body": ["The request body must be a JSON object."]})
    errors: dict[str, list[str]] = {}
    _string(errors, body, "hardware_id", 100, required=True)
    _string(errors, body, "name", 255, required=True)
    _string(errors, body, "timezone", 50)
    _string(errors, body, "controller_type", 100)
    _percentages(errors, body.get("health_metrics"), "health_metrics", _HEALTH_PCT)
    for obj in ("system", "hardware_info", "diagnostics"):
        v = body.get(obj)
        _check(errors, obj, v is None or isinstance(v, dict), f"The {obj} field must be an array.")
    if errors:
        raise Invalid(errors)


def validate_heartbeat(body: Any) -> None:
    if not isinstance(body, dict):
        raise Invalid({"body": ["The request body must be a JSON object."]})
    errors: dict[str, list[str]] = {}
    _string(errors, body, "hardware_id", 100)
    _string(errors, body, "status", 50)
    _string(errors, body, "version", 50)
    _percentages(errors, body.get("health_metrics"), "health_metrics", _HEALTH_PCT)
    cap = body.get("bin_capacity")
    _check(
        errors,
        "bin_capacity",
        cap is None or (isinstance(cap, (int, float)) and 0 <= cap <= 100),
        "The bin_capacity field must be between 0 and 100.",
    )
    if errors:
        raise Invalid(errors)


def validate_sync(body: Any) -> list[dict[str, Any]]:
    txs = body.get("transactions") if isinstance(body, dict) else None
    if not isinstance(txs, list):
        raise Invalid(
            {"transactions": ["The transactions field is required and must be an array."]}
        )
    errors: dict[str, list[str]] = {}
    for i, tx in enumerate(txs):
        if not isinstance(tx, dict):
            _check(errors, f"transactions.{i}", False, "Each transaction must be an object.")
            continue
        ts = tx.get("timestamp")
        try:
            datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
            good_ts = isinstance(ts, str)
        except ValueError:
            good_ts = False
        _check(errors, f"transactions.{i}.timestamp", good_ts, "The timestamp must be a date.")
        items = tx.get("items")
        if not isinstance(items, list):
            _check(errors, f"transactions.{i}.items", False, "The items field must be an array.")
            continue
        for j, item in enumerate(items):
            p = f"transactions.{i}.items.{j}"
            ok = (
                isinstance(item, dict)
                and isinstance(item.get("type"), str)
                and isinstance(item.get("weight", 0), (int, float))
                and isinstance(item.get("points", 0), int)
            )
            _check(errors, p, ok, "Each item needs a string type, numeric weight, integer points.")
    if errors:
        raise Invalid(errors)
    return txs


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, Any]]:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or not m:
        raise Invalid({"image": ["The image field is required."]})
    delimiter = b"--" + m.group(1).encode()
    form: dict[str, str] = {}
    files: dict[str, tuple[str, str, bytes]] = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        disposition = headers.get("content-disposition", "")
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if not name:
            continue
        if filename:
            files[name.group(1)] = (filename.group(1), headers.get("content-type", ""), content)
        else:
            form[name.group(1)] = content.decode("utf-8", "replace")
    return form, files


def validate_deposit(form: dict[str, str], files: dict[str, Any]) -> tuple[bytes, str, Any]:
    errors: dict[str, list[str]] = {}
    image = files.get("image")
    _check(errors, "image", image is not None, "The image field is required.")
    kind = None
    if image is not None:
        kind = _image_kind(image[2])
        _check(
            errors,
            "image",
            kind is not None,
            "The image field must be a file of type: jpeg, jpg, png.",
        )
        _check(
            errors,
            "image",
            len(image[2]) <= MAX_IMAGE,
            "The image field must not be greater than 5120 kilobytes.",
        )
    _check(errors, "status", bool(form.get("status")), "The status field is required.")
    data = form.get("data")
    parsed: Any = None
    if not data:
        _check(errors, "data", False, "The data field is required.")
    else:
        try:
            parsed = json.loads(data)
        except ValueError:
            _check(errors, "data", False, "The data field must be a valid JSON string.")
    if errors:
        raise Invalid(errors)
    return image[2], kind or "", parsed


def validate_upload_image(form: dict[str, str], files: dict[str, Any]) -> dict[str, Any]:
    """POST /edge/upload-image: two JPEGs <= 5 MiB, an optional PNG mask <= 1 MiB, metadata."""
    errors: dict[str, list[str]] = {}
    for field in ("original_image", "processed_image"):
        f = files.get(field)
        _check(errors, field, f is not None, f"The {field.replace('_', ' ')} field is required.")
        if f is not None:
            _check(
                errors,
                field,
                _image_kind(f[2]) == "image/jpeg",
                f"The {field.replace('_', ' ')} field must be a file of type: jpeg, jpg.",
            )
            _check(
                errors,
                field,
                len(f[2]) <= MAX_IMAGE,
                f"The {field.replace('_', ' ')} field must not be greater than 5120 kilobytes.",
            )
    mask = files.get("mask_image")
    if mask is not None:
        _check(
            errors,
            "mask_image",
            _image_kind(mask[2]) == "image/png",
            "The mask image field must be a file of type: png.",
        )
        _check(
            errors,
            "mask_image",
            len(mask[2]) <= MAX_MASK,
            "The mask image field must not be greater than 1024 kilobytes.",
        )
    try:
        meta: Any = json.loads(form.get("metadata") or "null")
    except ValueError:
        meta = None
    _check(
        errors,
        "metadata",
        isinstance(meta, dict) and "session_id" in meta and "item_sequence" in meta,
        "The metadata field must be JSON with session_id and item_sequence.",
    )
    if errors:
        raise Invalid(errors)
    return meta


# -- the edge server --------------------------------------------------------------


class Platform:
    """State shared by both servers: storage, faults, settings."""

    def __init__(self, store: Store, heartbeat_interval_s: int = 60, seed: int | None = None):
        self.store = store
        self.faults = Faults()
        self.heartbeat_interval_s = heartbeat_interval_s
        self.rng = random.Random(seed)
        self.rng_lock = threading.Lock()
        self.models: dict[str, Path] = {}
        self.images_dir: Path | None = None

    def roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self.rng_lock:
            return self.rng.random() < rate

    def stats(self) -> dict[str, Any]:
        q = self.store.query
        (posts,) = q("SELECT COUNT(*) FROM deposit_posts")[0]
        (unique,) = q("SELECT COUNT(*) FROM deposits")[0]
        (refs,) = q("SELECT COUNT(DISTINCT client_ref) FROM deposits")[0]
        outcomes = dict(q("SELECT outcome, COUNT(*) FROM deposit_posts GROUP BY outcome"))
        return {
            "deposit_posts": posts,
            "deposits_stored": unique,
            "distinct_client_refs": refs,
            "duplicate_deposits": unique - refs,
            "deposit_outcomes": outcomes,
            "handshakes": q("SELECT COUNT(*) FROM handshakes")[0][0],
            "heartbeats": q("SELECT COUNT(*) FROM heartbeats")[0][0],
            "offline_transactions": q("SELECT COUNT(*) FROM offline_transactions")[0][0],
            "image_posts": q("SELECT COUNT(*) FROM image_posts")[0][0],
            "images_stored": q("SELECT COUNT(*) FROM images")[0][0],
            "pending_commands": q("SELECT COUNT(*) FROM commands WHERE delivered_at IS NULL")[0][0],
        }

    def images(self) -> list[dict[str, Any]]:
        """Everything upload-image stored; the mask PNG as base64."""
        import base64

        rows = self.store.query(
            "SELECT id, idem_key, hardware_id, metadata, original_sha256, processed_sha256,"
            " mask_png, received_at FROM images ORDER BY id"
        )
        return [
            {
                "id": i,
                "idem_key": k,
                "hardware_id": h,
                "metadata": json.loads(m),
                "original_sha256": o,
                "processed_sha256": pr,
                "mask_png_b64": base64.b64encode(mask).decode() if mask else None,
                "received_at": t,
            }
            for i, k, h, m, o, pr, mask, t in rows
        ]

    def deposits(self) -> list[dict[str, Any]]:
        cols = [
            "id",
            "idem_key",
            "client_ref",
            "hardware_id",
            "status",
            "data",
            "session_id",
            "image_sha256",
            "image_size",
            "image_mime",
            "received_at",
        ]
        rows = self.store.query(f"SELECT {', '.join(cols)} FROM deposits ORDER BY id")
        return [dict(zip(cols, r, strict=True)) for r in rows]


class _JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MyRVM-standin/1"
    # Headers and body go out in separate writes; with Nagle on, the body waits for
    # the client's delayed ACK (~40 ms) and the stand-in, not the client, sets the pace.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:  # type: ignore[attr-defined]
            super().log_message(format, *args)

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is None:
            self._send(411, {"message": "Content-Length required"})
            return None
        n = int(length)
        if n > MAX_BODY:
            self._send(413, {"message": "Payload too large"})
            self.close_connection = True
            return None
        return self.rfile.read(n)

    def _send(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        ctype: str = "application/json",
    ) -> None:
        payload = raw if raw is not None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, raw: bytes) -> Any:
        try:
            return json.loads(raw or b"null")
        except ValueError:
            raise Invalid({"body": ["The request body must be valid JSON."]}) from None


class EdgeHandler(_JsonHandler):
    platform: Platform

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        p: Platform = self.server.platform  # type: ignore[attr-defined]
        f = p.faults
        if f.down:
            # Reset instead of answering: what a dead host or dropped route looks like.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        path = urlsplit(self.path).path
        body = self._read_body() if method == "POST" else b""
        if body is None:
            return
        if f.latency_ms:
            time.sleep(f.latency_ms / 1000)
        machine = p.store.machine(self.headers.get("X-RVM-API-KEY"))
        if machine is None:
            self._send(401, {"status": "error", "message": "Invalid or missing API key."})
            return
        if machine[2]:
            self._send(403, {"status": "error", "message": "This machine is blocked."})
            return
        outcome = self._fault_before_store(p, path)
        if outcome:
            return
        if path == "/api/v1/edge/upload-image" and p.roll(f.upload_image_error_rate):
            p.store.execute(
                "INSERT INTO image_posts (idem_key, outcome, received_at) VALUES (?, '503', ?)",
                (self.headers.get("Idempotency-Key"), _now()),
            )
            self._send(503, {"message": "Service Unavailable"})
            return
        try:
            if method == "POST" and path == "/api/v1/edge/deposit":
                self._deposit(p, machine, body)
            elif method == "POST" and path == "/api/v1/edge/upload-image":
                self._upload_image(p, machine, body)
            elif method == "POST" and path == "/api/v1/edge/handshake":
                self._handshake(p, machine, body)
            elif method == "POST" and path == "/api/v1/edge/heartbeat":
                self._heartbeat(p, machine, body)
            elif method == "POST" and path == "/api/v1/edge/sync-offline":
                self._sync(p, machine, body)
            elif method == "GET" and path.startswith("/api/v1/edge/download-model/"):
                self._model(p, path.rsplit("/", 1)[1])
            else:
                self._send(404, {"message": f"The route {path} could not be found."})
        except Invalid as e:
            if path == "/api/v1/edge/deposit":
                self._record_post("422")
            self._send(422, e.body())

    def _record_post(self, outcome: str) -> None:
        p: Platform = self.server.platform  # type: ignore[attr-defined]
        p.store.execute(
            "INSERT INTO deposit_posts (idem_key, outcome, received_at) VALUES (?, ?, ?)",
            (self.headers.get("Idempotency-Key"), outcome, _now()),
        )

    def _fault_before_store(self, p: Platform, path: str) -> bool:
        f = p.faults
        status = None
        if p.roll(f.rate_limit_rate):
            status = 429
            self._send(
                429, {"message": "Too Many Attempts."}, {"Retry-After": str(f.retry_after_s)}
            )
        elif p.roll(f.error_rate):
            status = 500
            self._send(500, {"message": "Server Error"})
        elif p.roll(f.bad_gateway_html_rate):
            status = 502
            self._send(
                502, None, raw=b"<html><body>502 Bad Gateway</body></html>", ctype="text/html"
            )
        if status and path == "/api/v1/edge/deposit":
            self._record_post(str(status))
        return status is not None

    def _answer_stored(self, p: Platform, status: int, body: dict[str, Any]) -> None:
        """Send the answer to a request whose effect is stored, through the response faults."""
        f = p.faults
        payload = json.dumps(body).encode()
        if p.roll(f.truncate_rate):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif p.roll(f.slow_body_rate):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.flush()
            time.sleep(f.slow_body_s)
            self.wfile.write(payload)
        elif p.roll(f.non_json_2xx_rate):
            self._send(status, None, raw=b"Created", ctype="text/plain")
        else:
            self._send(status, None, raw=payload)

    def _deposit(self, p: Platform, machine: tuple, body: bytes) -> None:
        form, files = parse_multipart(body, self.headers.get("Content-Type", ""))
        key = None if p.faults.ignore_idempotency else self.headers.get("Idempotency-Key")
        if key:
            prior = p.store.query("SELECT response FROM deposits WHERE idem_key=?", (key,))
            if prior:
                self._record_post("replay")
                self._answer_stored(p, 201, json.loads(prior[0][0]))
                return
        image, mime, data = validate_deposit(form, files)
        client_ref = data.get("client_ref") if isinstance(data, dict) else None
        digest = sha256_hex(image)
        now = _now()
        with p.store._write:
            conn = p.store.conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if (
                    key
                    and conn.execute("SELECT 1 FROM deposits WHERE idem_key=?", (key,)).fetchone()
                ):
                    conn.execute("ROLLBACK")
                    prior = conn.execute(
                        "SELECT response FROM deposits WHERE idem_key=?", (key,)
                    ).fetchone()
                    response = json.loads(prior[0])
                    outcome = "replay"
                else:
                    cur = conn.execute(
                        "INSERT INTO deposits (idem_key, client_ref, hardware_id, status, data,"
                        " session_id, image_sha256, image_size, image_mime, response,"
                        " received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?)",
                        (
                            key,
                            client_ref,
                            machine[1],
                            form["status"],
                            form["data"],
                            form.get("session_id"),
                            digest,
                            len(image),
                            mime,
                            now,
                        ),
                    )
                    response = {
                        "status": "success",
                        "data": {
                            "image_url": f"/storage/deposits/{cur.lastrowid}.jpg",
                            "ai_result": data,
                            "processed_at": now,
                        },
                    }
                    conn.execute(
                        "UPDATE deposits SET response=? WHERE id=?",
                        (json.dumps(response), cur.lastrowid),
                    )
                    conn.execute(
                        "INSERT INTO deposit_posts (idem_key, outcome, received_at)"
                        " VALUES (?, '201', ?)",
                        (self.headers.get("Idempotency-Key"), now),
                    )
                    conn.execute("COMMIT")
                    outcome = "201"
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        if outcome == "replay":
            self._record_post("replay")
        elif p.images_dir is not None:
            (p.images_dir / f"{digest}.{'png' if mime == 'image/png' else 'jpg'}").write_bytes(
                image
            )
        self._answer_stored(p, 201, response)

    def _upload_image(self, p: Platform, machine: tuple, body: bytes) -> None:
        """Stores the three images' digests and the mask itself; a repeated key replays."""
        form, files = parse_multipart(body, self.headers.get("Content-Type", ""))
        key = None if p.faults.ignore_idempotency else self.headers.get("Idempotency-Key")
        now = _now()
        with p.store._write:
            conn = p.store.conn()
            prior = (
                key
                and conn.execute("SELECT response FROM images WHERE idem_key=?", (key,)).fetchone()
            )
            if prior:
                outcome, response = "replay", json.loads(prior[0])
            else:
                try:
                    meta = validate_upload_image(form, files)
                except Invalid:
                    conn.execute(
                        "INSERT INTO image_posts (idem_key, outcome, received_at) VALUES (?, ?, ?)",
                        (key, "422", now),
                    )
                    raise
                mask = files.get("mask_image")
                cur = conn.execute(
                    "INSERT INTO images (idem_key, hardware_id, metadata, original_sha256,"
                    " processed_sha256, mask_png, response, received_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, '', ?)",
                    (
                        key,
                        machine[1],
                        json.dumps(meta),
                        sha256_hex(files["original_image"][2]),
                        sha256_hex(files["processed_image"][2]),
                        mask[2] if mask else None,
                        now,
                    ),
                )
                n = cur.lastrowid
                response = {
                    "status": "success",
                    "data": {
                        "original_url": f"/storage/images/{n}/original.jpg",
                        "processed_url": f"/storage/images/{n}/processed.jpg",
                        "mask_url": f"/storage/images/{n}/mask.png" if mask else None,
                    },
                }
                conn.execute("UPDATE images SET response=? WHERE id=?", (json.dumps(response), n))
                outcome = "201"
            conn.execute(
                "INSERT INTO image_posts (idem_key, outcome, received_at) VALUES (?, ?, ?)",
                (key, outcome, now),
            )
        self._answer_stored(p, 201, response)

    def _handshake(self, p: Platform, machine: tuple, body: bytes) -> None:
        req = self._json(body)
        validate_handshake(req)
        p.store.execute(
            "INSERT INTO handshakes (hardware_id, body, received_at) VALUES (?, ?, ?)",
            (req["hardware_id"], json.dumps(req), _now()),
        )
        p.store.execute(
            "UPDATE machines SET hardware_id=?, name=? WHERE key_sha256=?",
            (req["hardware_id"], req["name"], machine[0]),
        )
        p.store.reload_keys()
        self._answer_stored(
            p,
            200,
            {
                "status": "success",
                "data": {
                    "identity": {
                        "rvm_id": int(machine[0][:6], 16),
                        "rvm_uuid": machine[0][:32],
                        "rvm_name": req["name"],
                    },
                    "kiosk": {},
                    "websocket": {},
                    "policy": {"heartbeat_interval": p.heartbeat_interval_s},
                    "ai_model": {},
                },
            },
        )

    def _heartbeat(self, p: Platform, machine: tuple, body: bytes) -> None:
        req = self._json(body)
        validate_heartbeat(req)
        hardware_id = req.get("hardware_id") or machine[1]
        now = _now()
        with p.store._write:
            conn = p.store.conn()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO heartbeats (hardware_id, body, received_at) VALUES (?, ?, ?)",
                (hardware_id, json.dumps(req), now),
            )
            rows = conn.execute(
                "SELECT id, action, created_at FROM commands"
                " WHERE hardware_id=? AND delivered_at IS NULL ORDER BY id",
                (hardware_id,),
            ).fetchall()
            conn.executemany(
                "UPDATE commands SET delivered_at=? WHERE id=?", [(now, r[0]) for r in rows]
            )
            conn.execute("COMMIT")
        commands = [{"action": a, "timestamp": t} for _, a, t in rows]
        self._answer_stored(p, 200, {"status": "success", "server_time": now, "commands": commands})

    def _sync(self, p: Platform, machine: tuple, body: bytes) -> None:
        txs = validate_sync(self._json(body))
        now = _now()
        with p.store._write:
            conn = p.store.conn()
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO offline_transactions (hardware_id, timestamp, items, received_at)"
                " VALUES (?, ?, ?, ?)",
                [(machine[1], t["timestamp"], json.dumps(t["items"]), now) for t in txs],
            )
            conn.execute("COMMIT")
        self._answer_stored(p, 200, {"status": "success", "synced_count": len(txs)})

    def _model(self, p: Platform, sha: str) -> None:
        path = p.models.get(sha.lower())
        if path is None:
            self._send(404, {"message": "Model not found."})
            return
        data = path.read_bytes()
        self._send(200, None, raw=data, ctype="application/octet-stream")


class AdminHandler(_JsonHandler):
    """Loopback-only control of the stand-in.

    GET  /admin/stats                   counts: posts, stored, duplicates, ...
    GET  /admin/deposits                everything stored (no image bytes)
    GET  /admin/images                  upload-image posts stored, mask PNG as base64
    GET  /admin/heartbeats | /admin/handshakes | /admin/offline
    GET  /admin/faults                  current switches
    POST /admin/faults {...}            change switches (partial); {"reset": true} clears
    POST /admin/commands {"hardware_id", "action": "RESTART"|"GIT_PULL"}
    POST /admin/keys {"key"?, "hardware_id"?, "name"?}   -> {"key", "sha256"}
    POST /admin/block {"sha256", "blocked": bool}
    POST /admin/models {"path"}          -> {"sha256"} served at download-model
    """

    def do_GET(self) -> None:
        p: Platform = self.server.platform  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        q = p.store.query
        if path == "/admin/stats":
            self._send(200, p.stats())
        elif path == "/admin/deposits":
            self._send(200, p.deposits())
        elif path == "/admin/images":
            self._send(200, p.images())
        elif path == "/admin/faults":
            self._send(200, asdict(p.faults))
        elif path in ("/admin/heartbeats", "/admin/handshakes"):
            table = path.rsplit("/", 1)[1]
            rows = q(f"SELECT hardware_id, body, received_at FROM {table} ORDER BY id")
            self._send(
                200, [{"hardware_id": h, "body": json.loads(b), "at": t} for h, b, t in rows]
            )
        elif path == "/admin/offline":
            rows = q("SELECT hardware_id, timestamp, items FROM offline_transactions ORDER BY id")
            self._send(
                200,
                [{"hardware_id": h, "timestamp": t, "items": json.loads(i)} for h, t, i in rows],
            )
        else:
            self._send(404, {"message": "unknown admin route; see AdminHandler's docstring"})

    def do_POST(self) -> None:
        p: Platform = self.server.platform  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        raw = self._read_body()
        if raw is None:
            return
        try:
            req = self._json(raw) or {}
            if path == "/admin/faults":
                if req.pop("reset", False):
                    p.faults = Faults()
                p.faults.update(req)
                self._send(200, asdict(p.faults))
            elif path == "/admin/commands":
                action = req.get("action")
                if action not in ("RESTART", "GIT_PULL") or not req.get("hardware_id"):
                    raise ValueError("need hardware_id and action RESTART or GIT_PULL")
                p.store.execute(
                    "INSERT INTO commands (hardware_id, action, created_at) VALUES (?, ?, ?)",
                    (req["hardware_id"], action, _now()),
                )
                self._send(201, {"queued": action})
            elif path == "/admin/keys":
                key = req.get("key") or new_api_key()
                digest = p.store.add_key(key, req.get("hardware_id"), req.get("name"))
                self._send(201, {"key": key, "sha256": digest})
            elif path == "/admin/block":
                n = p.store.set_blocked(str(req.get("sha256")), bool(req.get("blocked", True)))
                self._send(200 if n else 404, {"updated": n})
            elif path == "/admin/models":
                model = Path(req["path"])
                digest = sha256_hex(model.read_bytes())
                p.models[digest] = model
                self._send(201, {"sha256": digest})
            else:
                self._send(404, {"message": "unknown admin route; see AdminHandler's docstring"})
        except (ValueError, KeyError, OSError) as e:
            self._send(400, {"message": str(e)})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], handler: type, platform: Platform, verbose: bool):
        super().__init__(addr, handler)
        self.platform = platform
        self.verbose = verbose


class StandinServer:
    """The edge server and the admin server, run in background threads (for tests)."""

    def __init__(
        self,
        db: Path,
        api_keys: list[str] = (),  # type: ignore[assignment]
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_port: int = 0,
        heartbeat_interval_s: int = 60,
        seed: int | None = None,
        verbose: bool = False,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        images_dir: Path | None = None,
    ) -> None:
        self.store = Store(Path(db))
        for key in api_keys:
            self.store.add_key(key)
        self.platform = Platform(self.store, heartbeat_interval_s, seed)
        if images_dir is not None:
            images_dir.mkdir(parents=True, exist_ok=True)
            self.platform.images_dir = images_dir
        self.edge = _Server((host, port), EdgeHandler, self.platform, verbose)
        scheme = "http"
        if tls_cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(tls_cert), str(tls_key) if tls_key else None)
            self.edge.socket = ctx.wrap_socket(self.edge.socket, server_side=True)
            scheme = "https"
        # The admin API never leaves loopback, whatever host the edge serves on.
        self.admin = _Server(("127.0.0.1", admin_port), AdminHandler, self.platform, verbose)
        self.edge_url = f"{scheme}://{host}:{self.edge.server_address[1]}"
        self.admin_url = f"http://127.0.0.1:{self.admin.server_address[1]}"
        self._threads: list[threading.Thread] = []

    @property
    def faults(self) -> Faults:
        return self.platform.faults

    def start(self) -> StandinServer:
        for srv in (self.edge, self.admin):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1})
            t.daemon = True
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for srv in (self.edge, self.admin):
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(5)

    def stats(self) -> dict[str, Any]:
        return self.platform.stats()

    def deposits(self) -> list[dict[str, Any]]:
        return self.platform.deposits()

    def images(self) -> list[dict[str, Any]]:
        return self.platform.images()


def _load_keys(path: Path) -> list[str]:
    if not path.exists():
        key = new_api_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        print(f"platform stand-in: wrote a new API key to {path} (mode 0600)", file=sys.stderr)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="MyRVM platform stand-in (edge API + admin API)")
    ap.add_argument("--db", type=Path, required=True, help="SQLite file (created if missing)")
    ap.add_argument(
        "--api-key-file",
        type=Path,
        help="keys accepted, one per line; created with a new key (0600) if missing",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--admin-port", type=int, default=8001, help="admin API, on 127.0.0.1 only")
    ap.add_argument("--heartbeat-interval", type=int, default=60)
    ap.add_argument("--tls-cert", type=Path)
    ap.add_argument("--tls-key", type=Path)
    ap.add_argument(
        "--images-dir", type=Path, help="keep received images here (default: hash only)"
    )
    ap.add_argument("--seed", type=int, help="seed for fault randomness")
    ap.add_argument("--verbose", action="store_true", help="log every request")
    ap.add_argument("--dump", action="store_true", help="print received deposits and stats, exit")
    args = ap.parse_args(argv)
    if args.dump:
        srv_store = Store(args.db)
        platform = Platform(srv_store)
        for d in platform.deposits():
            print(json.dumps(d))
        print(json.dumps(platform.stats()), file=sys.stderr)
        return 0
    if args.api_key_file is None:
        ap.error("--api-key-file is required to serve")
    server = StandinServer(
        args.db,
        _load_keys(args.api_key_file),
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        heartbeat_interval_s=args.heartbeat_interval,
        seed=args.seed,
        verbose=args.verbose,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        images_dir=args.images_dir,
    )
    print(json.dumps({"edge": server.edge_url, "admin": server.admin_url}), flush=True)
    server.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Handshake and heartbeat with the platform, and the heartbeat's commands.

Runs in its own thread: the handshake is retried in the background (with
tenacity, full-jitter backoff) so detection and spooling work offline; after
it, a heartbeat goes out on the platform's interval. Commands handed back:
- RESTART: a clean exit (the `restart` callback; the service stops and systemd
  starts it again),
- GIT_PULL: runs `platform.git_pull_command` (the fleet points it at the
  pull-mode unit); without one configured the command is refused in the log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform as py_platform
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import tenacity

from rvm_detector import __version__, upload_metrics
from rvm_detector.config import PlatformConfig
from rvm_detector.platform import PlatformClient, Reply, describe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    hardware_id: str
    name: str
    model_name: str
    model_version: str
    model_sha256: str


class HandshakeRefused(Exception):
    """The platform answered the handshake with something other than 200."""


def _read_first(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


class HealthProbe:
    """Health metrics for handshake and heartbeat, from /proc and /sys (no extra deps)."""

    def __init__(self, disk_path: Path) -> None:
        self.disk_path = disk_path
        self._last_cpu: tuple[int, int] | None = None

    def _cpu_percent(self) -> float | None:
        line = _read_first("/proc/stat")
        if not line:
            return None
        values = [int(v) for v in line.splitlines()[0].split()[1:]]
        idle, total = values[3] + (values[4] if len(values) > 4 else 0), sum(values)
        last, self._last_cpu = self._last_cpu, (idle, total)
        if last is None or total == last[1]:
            return None
        return round(100.0 * (1 - (idle - last[0]) / (total - last[1])), 1)

    def _memory_percent(self) -> float | None:
        text = _read_first("/proc/meminfo")
        if not text:
            return None
        info = {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in text.splitlines())}
        if not info.get("MemTotal"):
            return None
        return round(100.0 * (1 - info.get("MemAvailable", 0) / info["MemTotal"]), 1)

    def _cpu_temperature(self) -> float | None:
        raw = _read_first("/sys/class/thermal/thermal_zone0/temp")
        return round(int(raw) / 1000, 1) if raw and raw.lstrip("-").isdigit() else None

    def metrics(self) -> dict[str, Any]:
        disk = shutil.disk_usage(self.disk_path)
        out = {
            "cpu_usage_percent": self._cpu_percent(),
            "memory_usage_percent": self._memory_percent(),
            "disk_usage_percent": round(100.0 * disk.used / disk.total, 1),
            "cpu_temperature": self._cpu_temperature(),
        }
        return {k: v for k, v in out.items() if v is not None}


def _local_ip() -> str | None:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return None


class EdgeSession:
    """Background handshake, then heartbeats; acts on the commands they return."""

    def __init__(
        self,
        client: PlatformClient,
        cfg: PlatformConfig,
        identity: Identity,
        health: HealthProbe,
        restart: Callable[[], None],
        status: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.client = client
        self.cfg = cfg
        self.identity = identity
        self.health = health
        self.restart = restart
        self.status = status
        self.interval_s = cfg.heartbeat_interval_s
        self.handshake_done = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edge-session", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- payloads -------------------------------------------------------------

    def handshake_payload(self) -> dict[str, Any]:
        i = self.identity
        payload: dict[str, Any] = {
            "hardware_id": i.hardware_id,
            "name": i.name,
            "timezone": time.strftime("%Z")[:50] or "UTC",
            "controller_type": (_read_first("/proc/device-tree/model") or py_platform.machine())[
                :100
            ].rstrip("\x00"),
            "system": {
                "jetpack_version": (_read_first("/etc/nv_tegra_release") or "none")[:50],
                "firmware_version": py_platform.release()[:50],
                "python_version": py_platform.python_version(),
                "ai_models": {
                    "model_name": i.model_name,
                    "model_version": i.model_version,
                    "hash": i.model_sha256,
                },
            },
            "health_metrics": self.health.metrics(),
        }
        ip = _local_ip()
        if ip:
            payload["ip_local"] = ip
        return payload

    def pull_state(self) -> dict[str, Any] | None:
        """Pull mode's last run, as the heartbeat reports it (None when not in pull mode)."""
        path = self.cfg.pull_state_file
        if path is None:
            return None
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return {"last_result": "never-run"}
        except (OSError, ValueError) as e:
            log.warning("pull state %s unreadable: %s", path, e)
            return {"last_result": "unreadable"}
        last, applied = state.get("last") or {}, state.get("applied") or {}
        return {
            "ring": state.get("ref", ""),
            "applied_commit": applied.get("commit", ""),
            "last_result": last.get("result", ""),
            "last_commit": last.get("commit", ""),
            "last_at": last.get("at_text", ""),
            "last_message": str(last.get("message", ""))[:500],
        }

    def heartbeat_payload(self) -> dict[str, Any]:
        pull = self.pull_state()
        version = __version__
        if pull is not None:
            # e.g. "0.1.0 ring/canary@3f2a9c1d07be applied" or "... @3f2a9c1d07be held"
            version += (
                f" {pull.get('ring') or 'ring?'}@{(pull.get('applied_commit') or 'none')[:12]}"
                f" {pull['last_result']}"
            )
        payload: dict[str, Any] = {
            "hardware_id": self.identity.hardware_id,
            "status": "online",
            "version": version,
            "health_metrics": {
                **self.health.metrics(),
                "model": {
                    "name": self.identity.model_name,
                    "version": self.identity.model_version,
                    "sha256": self.identity.model_sha256,
                },
                **self.status(),
                **({"pull": pull} if pull is not None else {}),
            },
        }
        ip = _local_ip()
        if ip:
            payload["ip_local"] = ip
        return payload

    # -- the loop ---------------------------------------------------------------

    def _handshake_once(self) -> Reply:
        reply = self.client.handshake(self.handshake_payload())
        if reply.status != 200:
            raise HandshakeRefused(describe(reply))
        return reply

    def _handshake(self) -> bool:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type((httpx.HTTPError, HandshakeRefused)),
            wait=tenacity.wait_random_exponential(
                multiplier=self.cfg.upload.backoff_base_s, max=self.cfg.upload.backoff_max_s
            ),
            stop=lambda _state: self._stop.is_set(),
            sleep=self._stop.wait,
            before_sleep=lambda s: log.warning(
                "handshake failed (%s); detection keeps working offline, retrying",
                s.outcome.exception() if s.outcome else "?",
            ),
            reraise=True,
        )
        try:
            reply = retrying(self._handshake_once)
        except (httpx.HTTPError, HandshakeRefused):
            return False  # stopped while retrying
        policy = (reply.body or {}).get("data", {}).get("policy", {}) if reply.body else {}
        interval = policy.get("heartbeat_interval") if isinstance(policy, dict) else None
        if isinstance(interval, (int, float)) and interval > 0:
            self.interval_s = float(interval)
        log.info("handshake done; heartbeat every %.0fs", self.interval_s)
        self.handshake_done.set()
        return True

    def _run(self) -> None:
        if not self._handshake():
            return
        while not self._stop.is_set():
            self.beat()
            self._stop.wait(self.interval_s)

    def beat(self) -> None:
        """Send one heartbeat and act on its commands; failures are logged, never raised."""
        try:
            reply = self.client.heartbeat(self.heartbeat_payload())
        except httpx.HTTPError as e:
            upload_metrics.HEARTBEATS.labels("unreachable").inc()
            log.warning("heartbeat failed: %s", e)
            return
        if reply.status != 200 or reply.contract_error or not isinstance(reply.body, dict):
            upload_metrics.HEARTBEATS.labels("refused").inc()
            log.warning("heartbeat not accepted: %s", describe(reply))
            return
        upload_metrics.HEARTBEATS.labels("ok").inc()
        commands = reply.body.get("commands") or []
        for command in commands if isinstance(commands, list) else []:
            self._act(command.get("action") if isinstance(command, dict) else None)

    def _act(self, action: Any) -> None:
        if action == "GIT_PULL":
            self._git_pull()
        elif action == "RESTART":
            log.warning("platform asked for RESTART; exiting cleanly for systemd to restart")
            self.restart()
        else:
            log.warning("heartbeat carried an unknown command %r; ignored", action)

    def _git_pull(self) -> None:
        cmd = self.cfg.git_pull_command
        if not cmd:
            log.error(
                "platform asked for GIT_PULL but platform.git_pull_command is not set; "
                "set it (e.g. [systemctl, start, rvm-pull.service]) to allow remote updates"
            )
            return
        log.warning("platform asked for GIT_PULL; running %s", cmd)
        try:
            done = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=self.cfg.git_pull_timeout_s,
                check=False,
                env={**os.environ, "RVM_TRIGGER": "platform-heartbeat"},
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            log.error("GIT_PULL command %s failed to run: %s", cmd, e)
            return
        level = logging.INFO if done.returncode == 0 else logging.ERROR
        log.log(
            level,
            "GIT_PULL command exited %d: %s",
            done.returncode,
            (done.stdout + done.stderr).strip()[-2000:],
        )


def default_identity(cfg: PlatformConfig, model_path: Path) -> Identity:
    """Identity from config (hardware_id defaults to the hostname) and the model file."""
    hardware_id = cfg.hardware_id or socket.gethostname()
    return Identity(
        hardware_id=hardware_id,
        name=cfg.name or hardware_id,
        model_name=model_path.stem,
        model_version=model_path.parent.name,
        model_sha256=_sha256_of(model_path),
    )


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()

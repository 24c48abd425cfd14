"""systemd notification protocol (sd_notify) without libsystemd.

With `Type=notify` systemd waits for READY=1; with `WatchdogSec=` it expects
WATCHDOG=1 at least every WATCHDOG_USEC and restarts the service otherwise.
Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping


class Notifier:
    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        addr = env.get("NOTIFY_SOCKET", "")
        # '@' marks a Linux abstract socket, spelled with a leading NUL.
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        self._sock: socket.socket | None = None
        if self._addr:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # Pet at a quarter of the timeout: a late loop iteration does not get us killed.
        self.watchdog_interval = int(usec) / 4e6 if watched else None
        self._last_pet = 0.0

    def notify(self, message: str) -> None:
        if self._sock is None:
            return
        # systemd gone or socket full: nothing useful to do, the service keeps working.
        with contextlib.suppress(OSError):
            self._sock.sendto(message.encode(), self._addr)

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def pet_watchdog(self) -> None:
        """WATCHDOG=1, rate-limited; call it from the loop whose liveness it proves."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_pet >= self.watchdog_interval:
            self._last_pet = now
            self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

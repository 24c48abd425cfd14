"""Assembles the delivery path: spool (the sink), uploader and edge session.

`build_delivery` is what the service's `build_sink` calls; it returns the sink
and the background parts with their start/stop hooks, so the service knows
nothing about HTTP or SQLite.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rvm_detector import upload_metrics
from rvm_detector.config import Config
from rvm_detector.edge import EdgeSession, HealthProbe, default_identity
from rvm_detector.platform import PlatformClient
from rvm_detector.spool import Spool
from rvm_detector.uploader import Uploader

log = logging.getLogger(__name__)


def _restart_process() -> None:
    """RESTART: SIGTERM ourselves, so the service runs its normal clean shutdown."""
    os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Delivery:
    spool: Spool
    client: PlatformClient
    uploader: Uploader
    edge: EdgeSession

    def start(self) -> None:
        self.uploader.start()
        self.edge.start()

    def stop(self) -> None:
        self.edge.stop()
        self.uploader.stop()
        self.client.close()
        self.spool.close()

    def ready(self) -> tuple[bool, str]:
        """Readiness: the spool accepts deposits; the platform being away is not unready."""
        s = self.spool.stats()
        online = "handshake done" if self.edge.handshake_done.is_set() else "platform not reached"
        return True, f"spool: {s.pending} pending, {s.dead} dead letters; {online}"


def build_delivery(config: Config, restart: Callable[[], None] = _restart_process) -> Delivery:
    spool = Spool(config.spool.dir, config.spool.max_bytes)
    upload_metrics.SPOOL_BUDGET.set(config.spool.max_bytes)
    client = PlatformClient.from_config(config.platform)
    uploader = Uploader(spool, client, config.platform.upload)

    def status() -> dict[str, Any]:
        s = spool.stats()
        return {
            "spool_pending": s.pending,
            "spool_dead": s.dead,
            "spool_oldest_age_s": round(s.oldest_age_s, 1),
        }

    edge = EdgeSession(
        client,
        config.platform,
        default_identity(config.platform, config.model.path),
        HealthProbe(config.spool.dir),
        restart,
        status,
    )
    return Delivery(spool, client, uploader, edge)

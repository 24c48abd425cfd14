"""Metrics of the spool and uploader, on the process's shared registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

from rvm_detector.metrics import REGISTRY

if TYPE_CHECKING:
    from rvm_detector.spool import SpoolStats

SPOOL_DEPTH = Gauge(
    "rvm_spool_depth", "Deposits waiting in the spool", ["state"], registry=REGISTRY
)
SPOOL_OLDEST_AGE = Gauge(
    "rvm_spool_oldest_age_seconds",
    "Age of the oldest pending deposit (0 when empty)",
    registry=REGISTRY,
)
SPOOL_BYTES = Gauge("rvm_spool_bytes", "Bytes used by the spool", ["kind"], registry=REGISTRY)
SPOOL_BUDGET = Gauge(
    "rvm_spool_budget_bytes",
    "The spool's disk budget (spool.max_bytes): images are shed beyond it",
    registry=REGISTRY,
)
IMAGES_SHED = Counter(
    "rvm_spool_images_shed_total",
    "Images deleted to stay within spool.max_bytes (their records are kept)",
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "rvm_upload_dead_letters_total",
    "Deposits the platform refused for good (moved to dead letters)",
    registry=REGISTRY,
)
UPLOADED = Counter(
    "rvm_upload_deposits_total", "Deposits the platform acknowledged (2xx)", registry=REGISTRY
)
MASKS_UPLOADED = Counter(
    "rvm_upload_masks_total",
    "Mask images (POST /edge/upload-image) the platform acknowledged (2xx)",
    registry=REGISTRY,
)
RETRIES = Counter(
    "rvm_upload_retries_total",
    "Deposit attempts that failed and were scheduled again",
    ["reason"],
    registry=REGISTRY,
)
# The reasons every fleet sees sooner or later exist from the start (at 0), so a rate() over
# them is defined before the first retry; HTTP statuses appear as they happen.
for _reason in ("transport", "auth", "429", "503"):
    RETRIES.labels(_reason)
AUTH_ERRORS = Counter(
    "rvm_upload_auth_errors_total",
    "Answers 401/403 from the platform (API key wrong or machine blocked)",
    registry=REGISTRY,
)
CONCURRENCY = Gauge(
    "rvm_upload_concurrency_limit", "Current adaptive upload concurrency", registry=REGISTRY
)
PLATFORM_UP = Gauge(
    "rvm_platform_reachable",
    "1 when the last call to the platform got an HTTP answer that was not 5xx/429",
    registry=REGISTRY,
)
HEARTBEATS = Counter("rvm_heartbeats_total", "Heartbeats sent", ["result"], registry=REGISTRY)


def observe_spool(stats: SpoolStats) -> None:
    SPOOL_DEPTH.labels("pending").set(stats.pending)
    SPOOL_DEPTH.labels("dead").set(stats.dead)
    SPOOL_DEPTH.labels("inflight").set(stats.inflight)
    SPOOL_OLDEST_AGE.set(stats.oldest_age_s)
    SPOOL_BYTES.labels("images").set(stats.image_bytes)
    SPOOL_BYTES.labels("database").set(stats.db_bytes)
    SPOOL_DEPTH.labels("masks_pending").set(stats.masks_pending)

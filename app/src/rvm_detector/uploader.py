"""Drains the spool to the platform: retries, backoff, dead letters, adaptive concurrency.

Rules per deposit answer:
- 2xx: delivered, removed from the spool (whatever the body says).
- 408, 429, 5xx, transport errors, answers outside the contract: retried with
  full-jitter exponential backoff (tenacity's `wait_random_exponential`), or
  after `Retry-After` when the platform sends one.
- 401/403: retried the same way but reported at ERROR at most once per
  interval: the key or the machine's status must be fixed on the platform.
- any other 4xx: permanent, moved to dead letters with the response.
Signals that the platform as a whole is unavailable (transport errors, 429,
502/503/504, 401/403) also close a shared gate so the workers stop hammering it
and send one probe per backoff interval instead.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Callable
from struct import pack

import httpx
import tenacity
from tenacity.wait import wait_base

from rvm_detector import upload_metrics
from rvm_detector.config import UploadConfig
from rvm_detector.platform import PlatformClient, Reply, describe
from rvm_detector.spool import Spool, SpooledDeposit

log = logging.getLogger(__name__)

_GATE_STATUSES = frozenset({429, 502, 503, 504})
_AUTH_STATUSES = frozenset({401, 403})


def _placeholder_png() -> bytes:
    """A valid 1x1 grey PNG: the platform requires an image even when ours was shed."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return pack(">I", len(body)) + kind + body + pack(">I", zlib.crc32(kind + body))

    ihdr = pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00\x80")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


PLACEHOLDER_IMAGE = _placeholder_png()


class wait_retry_after(wait_base):
    """The platform's Retry-After when it sent one (capped), else the fallback strategy."""

    def __init__(self, fallback: wait_base, cap_s: float) -> None:
        self.fallback = fallback
        self.cap_s = cap_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        if outcome is not None and not outcome.failed:
            reply = outcome.result()
            if isinstance(reply, Reply) and reply.retry_after_s is not None:
                return min(reply.retry_after_s, self.cap_s)
        return self.fallback(retry_state)


class Backoff:
    """Delay before attempt n+1, from tenacity's wait strategies.

    Deposits wait in the spool between attempts (not in a sleeping thread), so
    the delay is computed here and stored as the row's next_attempt_at.
    """

    def __init__(self, cfg: UploadConfig) -> None:
        self._wait = wait_retry_after(
            tenacity.wait_random_exponential(multiplier=cfg.backoff_base_s, max=cfg.backoff_max_s),
            cfg.retry_after_max_s,
        )

    def delay(self, failures: int, reply: Reply | None = None) -> float:
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = max(1, failures)
        if reply is not None:
            state.set_result(reply)
        return self._wait(state)


class AdaptiveLimit:
    """AIMD concurrency: +1 per window of successes while a backlog waits, halve on overload."""

    def __init__(self, low: int, high: int, cooldown_s: float = 1.0) -> None:
        self.low, self.high = low, high
        self.limit = float(low)
        self._active = 0
        self._cond = threading.Condition()
        self._cooldown_s = cooldown_s
        self._last_cut = 0.0
        upload_metrics.CONCURRENCY.set(self.limit)

    def acquire(self, stop: threading.Event) -> bool:
        with self._cond:
            while self._active >= int(self.limit):
                if stop.is_set():
                    return False
                self._cond.wait(0.5)
            self._active += 1
            return True

    def release(self) -> None:
        with self._cond:
            self._active -= 1
            self._cond.notify()

    def on_success(self, backlogged: bool) -> None:
        with self._cond:
            if backlogged and self.limit < self.high:
                self.limit = min(self.high, self.limit + 1.0 / self.limit)
                upload_metrics.CONCURRENCY.set(int(self.limit))
                self._cond.notify_all()

    def on_overload(self) -> None:
        with self._cond:
            now = time.monotonic()
            # One cut per cooldown: a burst of failures from one overload is one signal.
            if now - self._last_cut >= self._cooldown_s:
                self._last_cut = now
                self.limit = max(float(self.low), self.limit / 2)
                upload_metrics.CONCURRENCY.set(int(self.limit))


class Gate:
    """Shared not-before time while the platform is unavailable; one probe passes at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = 0.0
        self._failures = 0

    def wait(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self._lock:
                remaining = self._until - time.monotonic()
            if remaining <= 0:
                return
            stop.wait(min(remaining, 1.0))

    def close(self, backoff: Backoff, reply: Reply | None) -> float:
        with self._lock:
            self._failures += 1
            delay = backoff.delay(self._failures, reply)
            self._until = max(self._until, time.monotonic() + delay)
            return delay

    def open(self) -> None:
        with self._lock:
            self._failures = 0
            self._until = 0.0


class Uploader:
    """Worker threads that send spooled deposits to the platform."""

    def __init__(
        self,
        spool: Spool,
        client: PlatformClient,
        cfg: UploadConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spool = spool
        self.client = client
        self.cfg = cfg
        self.backoff = Backoff(cfg)
        self.limit = AdaptiveLimit(cfg.min_concurrency, cfg.max_concurrency)
        self.gate = Gate()
        self._clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_auth_log = -float("inf")

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        for i in range(self.cfg.max_concurrency):
            t = threading.Thread(target=self._worker, name=f"uploader-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._housekeeping, name="uploader-house", daemon=True)
        t.start()
        self._threads.append(t)
        t = threading.Thread(target=self._mask_worker, name="uploader-masks", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.spool.wake()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    def wait_drained(self, timeout: float) -> bool:
        """True once no deposit is pending or in flight (dead letters do not count)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.spool.stats()
            if s.pending == 0 and s.inflight == 0 and s.masks_pending == 0:
                return True
            time.sleep(0.05)
        return False

    # -- deposits ------------------------------------------------------------

    def _worker(self) -> None:
        while not self._stop.is_set():
            self.gate.wait(self._stop)
            if not self.limit.acquire(self._stop):
                return
            try:
                item = self.spool.claim()
                if item is None:
                    due = self.spool.next_due_in()
                    self.spool.wait_for_work(0.5 if due is None else min(max(due, 0.01), 0.5))
                    continue
                self._deliver(item)
            except Exception:
                # A bug here must not kill the worker (the spool keeps the deposit).
                log.exception("uploader: unexpected error; deposit stays in the spool")
                self._stop.wait(1.0)
            finally:
                self.limit.release()

    def _deliver(self, item: SpooledDeposit) -> None:
        image = self.spool.read_image(item)
        data = item.data
        if image is None:
            payload = json.loads(data)
            payload["image_shed"] = True
            data = json.dumps(payload, separators=(",", ":"), sort_keys=True)
            image = PLACEHOLDER_IMAGE
        try:
            reply = self.client.deposit(
                idempotency_key=item.uuid,
                status=item.status,
                data=data,
                image=image,
                session_id=item.session_id,
            )
        except httpx.HTTPError as e:
            upload_metrics.PLATFORM_UP.set(0)
            self.limit.on_overload()
            delay = self.gate.close(self.backoff, None)
            self._retry(item, None, f"{type(e).__name__}: {e}", "transport")
            log.warning("uploader: platform unreachable (%s); next try in %.1fs", e, delay)
            return
        self._handle(item, reply)

    def _handle(self, item: SpooledDeposit, reply: Reply) -> None:
        status = reply.status
        if reply.contract_error:
            log.warning(
                "uploader: deposit %s: answer outside the contract, %s", item.uuid, describe(reply)
            )
        if reply.ok:
            self.spool.ack(item.uuid)
            upload_metrics.UPLOADED.inc()
            upload_metrics.PLATFORM_UP.set(1)
            self.gate.open()
            self.limit.on_success(self.spool.has_backlog())
            return
        upload_metrics.PLATFORM_UP.set(0 if status >= 500 or status == 429 else 1)
        if status in _AUTH_STATUSES:
            upload_metrics.AUTH_ERRORS.inc()
            self._log_auth(reply)
            self.gate.close(self.backoff, reply)
            self._retry(item, reply, describe(reply), "auth")
        elif status == 408 or status == 429 or status >= 500 or status < 400:
            if status in _GATE_STATUSES:
                self.limit.on_overload()
                self.gate.close(self.backoff, reply)
            self._retry(item, reply, describe(reply), str(status))
        else:
            log.error(
                "uploader: platform refused deposit %s for good, moved to dead letters "
                "(see `rvm-detector spool ... export --state dead`): %s",
                item.uuid,
                describe(reply),
            )
            self.spool.dead_letter(item.uuid, status, reply.text, describe(reply))

    def _retry(self, item: SpooledDeposit, reply: Reply | None, error: str, reason: str) -> None:
        upload_metrics.RETRIES.labels(reason).inc()
        self.spool.retry_later(item.uuid, self.backoff.delay(item.attempts + 1, reply), error)

    def _log_auth(self, reply: Reply) -> None:
        now = self._clock()
        if now - self._last_auth_log < self.cfg.auth_error_log_interval_s:
            return
        self._last_auth_log = now
        what = "API key missing or invalid" if reply.status == 401 else "machine blocked"
        log.error(
            "uploader: platform answered %d (%s); nothing is uploaded until this is fixed on "
            "the platform or in platform.api_key_file. Deposits stay in the spool. %s",
            reply.status,
            what,
            describe(reply),
        )

    # -- metrics ---------------------------------------------------------------

    def _housekeeping(self) -> None:
        while not self._stop.is_set():
            try:
                upload_metrics.observe_spool(self.spool.stats())
            except Exception:
                log.exception("uploader: housekeeping failed; retrying")
            self._stop.wait(1.0)

    # -- mask images (POST /edge/upload-image, after the deposit) --------------

    def _mask_worker(self) -> None:
        """One thread: masks are small and follow their deposits, never ahead of them."""
        while not self._stop.is_set():
            self.gate.wait(self._stop)
            try:
                claimed = self.spool.claim_mask()
                if claimed is None:
                    self.spool.wait_for_work(0.2)
                    continue
                self._deliver_mask(*claimed)
            except Exception:
                log.exception("uploader: unexpected error; mask upload stays in the spool")
                self._stop.wait(1.0)

    def _deliver_mask(self, uuid: str, metadata: dict, attempts: int) -> None:
        files = self.spool.read_mask_files(uuid)
        if files is None:
            log.error("uploader: mask files of %s are gone; dropping its mask upload", uuid)
            self.spool.dead_mask(uuid, None, "", "mask files missing from the spool")
            return
        png, original, processed = files
        try:
            reply = self.client.upload_image(
                idempotency_key=f"{uuid}:mask",
                original=original,
                processed=processed,
                mask=png,
                metadata=metadata,
            )
        except httpx.HTTPError as e:
            self.gate.close(self.backoff, None)
            upload_metrics.RETRIES.labels("mask_transport").inc()
            self.spool.retry_mask_later(uuid, self.backoff.delay(attempts + 1), str(e))
            return
        if reply.ok:
            self.spool.ack_mask(uuid)
            upload_metrics.MASKS_UPLOADED.inc()
            return
        status = reply.status
        if status in (408, 429) or status >= 500 or status < 400 or status in _AUTH_STATUSES:
            if status in _GATE_STATUSES or status in _AUTH_STATUSES:
                self.gate.close(self.backoff, reply)
            upload_metrics.RETRIES.labels("mask_" + str(status)).inc()
            self.spool.retry_mask_later(
                uuid, self.backoff.delay(attempts + 1, reply), describe(reply)
            )
        else:
            log.error(
                "uploader: platform refused the mask image of %s for good: %s",
                uuid,
                describe(reply),
            )
            self.spool.dead_mask(uuid, status, reply.text, describe(reply))

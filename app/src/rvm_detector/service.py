"""The detector service: capture -> trigger -> detect -> verdict -> deposit record -> sink.

The main thread runs the loop (it alone touches the model, so no locks around
inference) and pets the systemd watchdog, so a wedged loop gets the process
restarted. Capture has its own thread; the HTTP API answers from its threads
and hands deposit requests to the loop through a queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid as uuid_mod
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import cv2

from rvm_detector import metrics
from rvm_detector import segment as seg
from rvm_detector.capture import Capture, Frame, FrameQueue
from rvm_detector.config import Config, host_port
from rvm_detector.detector import Detector, load_detector
from rvm_detector.http_api import DepositRejected, HttpApi
from rvm_detector.records import DepositRecord, Detection, Sink
from rvm_detector.sdnotify import Notifier
from rvm_detector.verdict import judge, unknown_classes

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], tuple[bool, str]]


def _noop() -> None:
    return None


@dataclass
class Component:
    """A background part of the service (e.g. the uploader) with its lifecycle hooks."""

    name: str
    start: Callable[[], None] = _noop
    stop: Callable[[], None] = _noop
    # Contributes a named check to /readyz when given.
    ready: ReadyCheck | None = None


@dataclass
class SinkSetup:
    sink: Sink
    components: list[Component] = field(default_factory=list)


def build_sink(config: Config) -> SinkSetup:
    """Where deposit records go, and the background workers that deliver them.

    The durable spool is the sink; the uploader and the platform session
    (handshake, heartbeat, commands) run beside it (see `delivery`).
    """
    from rvm_detector.delivery import build_delivery

    delivery = build_delivery(config)
    return SinkSetup(
        delivery.spool, [Component("upload", delivery.start, delivery.stop, delivery.ready)]
    )


class DepositJob:
    """One deposit being assembled from the next `deposit_frames` frames."""

    def __init__(self, origin: str, session_id: str | None, since_mono: float) -> None:
        self.uuid = str(uuid_mod.uuid4())
        self.origin = origin  # "api" (controller announced it) or "presence" (continuous mode)
        self.session_id = session_id
        self.since_mono = since_mono
        self.deadline = float("inf")
        self.collected: list[tuple[Frame, list[Detection]]] = []
        self.done = threading.Event()
        self.result: dict[str, Any] | None = None
        self.error: DepositRejected | None = None

    def succeed(self, result: dict[str, Any]) -> None:
        self.result = result
        self.done.set()

    def fail(self, status: HTTPStatus, message: str) -> None:
        self.error = DepositRejected(status, message)
        self.done.set()


class Service:
    def __init__(
        self,
        config: Config,
        sink_setup: SinkSetup,
        segmenter: seg.Segmenter | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.sink = sink_setup.sink
        self.components = sink_setup.components
        # None until load_model(); a segmenter handed in (tests) is used as it is.
        self.segmenter: seg.Segmenter | None = segmenter
        self.segmentation_detail = "off: not loaded yet" if segmenter is None else "on"
        # Deposits per controller session, for upload-image's item_sequence (since start).
        self._session_items: dict[str, int] = {}
        self.notifier = notifier or Notifier()
        self.detector: Detector | None = None
        self.model_problem = "model not loaded yet"
        self.frames = FrameQueue(config.camera.queue_size, config.camera.name)
        self.capture = Capture(config.camera, self.frames)
        self.http = HttpApi(config.http.host, config.http.port, self)
        self.metrics_http = (
            HttpApi(*host_port(config.http.metrics_listen), self, metrics_only=True)
            if config.http.metrics_listen
            else None
        )
        self._stop = threading.Event()
        self._jobs: queue.Queue[DepositJob] = queue.Queue()
        self._active: DepositJob | None = None
        self._camera_live = False
        # Continuous mode: is an item in view, and for how many scans has the chute been empty.
        self._present = False
        self._empty_scans = 0
        self._last_scan = 0.0
        self._last_ready_check = 0.0

    # --- called from other threads -------------------------------------------------

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("shutdown requested; finishing the deposit in hand")
        self._stop.set()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, tuple[bool, str]] = {
            "model": (self.detector is not None, self._model_detail()),
            "camera": (self.capture.is_live(), self._camera_detail()),
            # Informational: deposits go on without masks when segmentation is off.
            "segmentation": (True, self.segmentation_detail),
        }
        for c in self.components:
            if c.ready is not None:
                try:
                    checks[c.name] = c.ready()
                except Exception as e:  # a broken check must not break /readyz itself
                    checks[c.name] = (False, f"readiness check failed: {e}")
        ready = all(ok for ok, _ in checks.values())
        metrics.READY.set(1 if ready else 0)
        return ready, {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()}

    def deposit(self, session_id: str | None) -> dict[str, Any]:
        if self._stop.is_set():
            raise DepositRejected(HTTPStatus.SERVICE_UNAVAILABLE, "shutting down")
        if self.detector is None:
            raise DepositRejected(
                HTTPStatus.SERVICE_UNAVAILABLE, f"no usable model: {self.model_problem}"
            )
        job = DepositJob("api", session_id, time.monotonic())
        self._jobs.put(job)
        metrics.QUEUE_DEPTH.labels("deposit_requests").set(self._jobs.qsize())
        # The loop always resolves a job (done, timed out or shut down); this cap only
        # guards against a loop that died.
        waited = job.done.wait(self.config.trigger.deposit_timeout_s * (2 + self._jobs.qsize()))
        if not waited:
            raise DepositRejected(HTTPStatus.GATEWAY_TIMEOUT, "the detector loop did not answer")
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    # --- the loop ------------------------------------------------------------------

    def _model_detail(self) -> str:
        if self.detector is None:
            return self.model_problem
        i = self.detector.info
        return f"{i.id.name} {i.id.version} sha256:{i.id.sha256[:12]} on {i.backend}"

    def _camera_detail(self) -> str:
        age = self.capture.frame_age()
        if age is None:
            return f"no frame yet from {self.config.camera.source!r}"
        return f"last frame {age:.1f}s ago (stale after {self.config.camera.stale_after_s}s)"

    def load_model(self) -> None:
        m = self.config.model
        try:
            detector = load_detector(m.path, m.backend, m.conf, m.iou, m.max_det, m.threads)
            missing = unknown_classes(self.config.verdict, detector.info.class_names)
            if missing:
                raise ValueError(
                    f"verdict.accept names {missing}, which the model cannot detect; "
                    f"its classes are {list(detector.info.class_names)}"
                )
            detector.warmup()
        except Exception as e:  # any failure means: not ready, say why, keep serving health
            self.model_problem = str(e)
            log.error("model not usable; /readyz stays false", extra={"problem": str(e)})
            return
        self.detector = detector
        log.info(
            "model loaded and warmed up",
            extra={
                "model": detector.info.id.to_dict(),
                "backend": detector.info.backend,
                "classes": list(detector.info.class_names),
                "input_hw": list(detector.info.input_hw),
            },
        )

    def load_segmenter(self) -> None:
        if self.segmenter is not None:
            return
        s = self.config.segment
        self.segmenter, self.segmentation_detail = seg.load_segmenter(
            s.encoder, s.decoder, s.threads
        )

    def start(self) -> None:
        for c in self.components:
            c.start()
        self.http.start()
        host, port = self.http.address
        log.info("http listening", extra={"host": host, "port": port})
        if self.metrics_http is not None:
            self.metrics_http.start()
            host, port = self.metrics_http.address
            log.info("metrics listening", extra={"host": host, "port": port})
        self.capture.start()
        # SAM2 first: once /readyz says ready, it also says whether segmentation is on.
        self.load_segmenter()
        self.load_model()
        status = "ready" if self.detector else f"model not usable: {self.model_problem}"
        self.notifier.ready(status)

    def run(self) -> int:
        """Start everything, loop until stopped (or a non-looping source ends), shut down."""
        self.start()
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _loop(self) -> None:
        while True:
            self.notifier.pet_watchdog()
            self._watch_camera()
            if self._active is None:
                if self._stop.is_set():
                    return
                self._active = self._next_job()
            frame = self.frames.get(timeout=0.1)
            if self._active is not None:
                self._advance(self._active, frame)
            elif frame is not None and self.detector and self.config.trigger.mode == "continuous":
                self._scan(frame)
            if frame is None and self.capture.finished.is_set() and not len(self.frames):
                if self._active is not None:
                    self._complete(self._active)
                return

    def _next_job(self) -> DepositJob | None:
        try:
            job = self._jobs.get_nowait()
        except queue.Empty:
            return None
        metrics.QUEUE_DEPTH.labels("deposit_requests").set(self._jobs.qsize())
        job.deadline = time.monotonic() + self.config.trigger.deposit_timeout_s
        return job

    def _watch_camera(self) -> None:
        now = time.monotonic()
        if now - self._last_ready_check >= 1.0:
            # Keeps rvm_ready current for scrapers that never call /readyz.
            self._last_ready_check = now
            self.readiness()
        live = self.capture.is_live()
        if live != self._camera_live:
            self._camera_live = live
            metrics.CAMERA_UP.labels(self.config.camera.name).set(1 if live else 0)
            self.notifier.status(f"camera {'delivering' if live else 'stale'}")
            if live:
                log.info("camera delivering", extra={"camera": self.config.camera.name})
            elif self.capture.frame_age() is not None:
                log.warning(
                    "camera stale",
                    extra={"camera": self.config.camera.name, "detail": self._camera_detail()},
                )

    def _detect(self, frame: Frame) -> list[Detection] | None:
        assert self.detector is not None
        start = time.perf_counter()
        try:
            detections = self.detector.detect(frame.image)
        except (cv2.error, ValueError) as e:
            metrics.FRAMES_INVALID.labels(self.config.camera.name).inc()
            log.warning("frame skipped: detection failed", extra={"problem": str(e)})
            return None
        metrics.INFERENCE_SECONDS.observe(time.perf_counter() - start)
        metrics.FRAMES_DETECTED.inc()
        return detections

    def _scan(self, frame: Frame) -> None:
        """Continuous mode: detect at the capped rate; an item appearing starts a deposit."""
        now = time.monotonic()
        if now - self._last_scan < 1 / self.config.trigger.fps:
            return
        self._last_scan = now
        detections = self._detect(frame)
        if detections is None:
            return
        if not detections:
            self._empty_scans += 1
            if self._empty_scans >= self.config.trigger.clear_frames:
                self._present = False
            return
        self._empty_scans = 0
        if self._present:
            return
        self._present = True
        job = DepositJob("presence", None, frame.mono)
        job.deadline = now + self.config.trigger.deposit_timeout_s
        job.collected.append((frame, detections))
        self._active = job
        self._advance(job, None)

    def _advance(self, job: DepositJob, frame: Frame | None) -> None:
        if frame is not None and frame.mono >= job.since_mono and self.detector is not None:
            detections = self._detect(frame)
            if detections is not None:
                job.collected.append((frame, detections))
        if (
            len(job.collected) >= self.config.trigger.deposit_frames
            or time.monotonic() >= job.deadline
        ):
            self._complete(job)

    def _complete(self, job: DepositJob) -> None:
        self._active = None
        if not job.collected:
            job.fail(
                HTTPStatus.GATEWAY_TIMEOUT,
                f"no camera frame within {self.config.trigger.deposit_timeout_s}s; "
                "check /readyz for the camera",
            )
            log.warning("deposit without frames", extra={"deposit": job.uuid})
            return
        # The frame whose best detection is most confident; the first one if none saw anything.
        frame, detections = max(
            job.collected, key=lambda fd: fd[1][0].confidence if fd[1] else -1.0
        )
        verdict, reason = judge(detections, self.config.verdict)
        detections, seg_extra = self._segment(job, frame, detections)
        ok, jpeg = cv2.imencode(
            ".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.config.record.jpeg_quality]
        )
        assert self.detector is not None
        record = DepositRecord(
            **seg_extra,
            uuid=job.uuid,
            camera=self.config.camera.name,
            session_id=job.session_id,
            model=self.detector.info.id,
            detections=tuple(detections),
            verdict=verdict,
            reason=reason,
            jpeg=jpeg.tobytes() if ok else b"",
            captured_at=frame.captured_at,
        )
        try:
            self.sink.put(record)
        except Exception as e:  # the record was not accepted: tell the caller, keep running
            metrics.DEPOSIT_ERRORS.inc()
            log.error("deposit not stored", extra={"deposit": job.uuid, "problem": str(e)})
            job.fail(HTTPStatus.INTERNAL_SERVER_ERROR, f"deposit could not be stored: {e}")
            return
        metrics.DEPOSITS.labels(verdict).inc()
        log.info(
            "deposit recorded",
            extra={
                "deposit": job.uuid,
                "origin": job.origin,
                "verdict": verdict,
                "reason": reason,
                "detections": len(detections),
                "frames": len(job.collected),
            },
        )
        job.succeed(record.to_dict())

    def _segment(
        self, job: DepositJob, frame: Frame, detections: list[Detection]
    ) -> tuple[list[Detection], dict[str, Any]]:
        """Masks for the deposit's items; on any failure the deposit goes on without them."""
        extra: dict[str, Any] = {"item_sequence": self._next_item(job.session_id)}
        if self.segmenter is None or isinstance(self.segmenter, seg.NoSegmenter):
            extra["segmentation"] = "off"
            return detections, extra
        if not detections:
            extra["segmentation"] = "on"
            return detections, extra
        start = time.perf_counter()
        reason = "inference"
        try:
            masks = self.segmenter.segment(frame.image, detections)
            if len(masks) != len(detections):
                raise seg.SegmentationError(f"{len(masks)} masks for {len(detections)} items")
            seg.SEGMENTATION_SECONDS.observe(time.perf_counter() - start)
            reason = "encode"
            with_masks = [
                Detection(d.class_name, d.confidence, d.box, seg.describe(m, d.box))
                for d, m in zip(detections, masks, strict=True)
            ]
            png = seg.mask_png(masks, frame.image.shape[:2])
            processed = seg.overlay_jpeg(
                frame.image, masks, detections, self.config.record.jpeg_quality
            )
        except Exception as e:  # never lose the deposit over its masks
            seg.SEGMENTATION_FAILURES.labels(reason).inc()
            log.warning(
                "deposit kept without masks: segmentation failed",
                extra={"deposit": job.uuid, "stage": reason, "problem": str(e)},
            )
            extra["segmentation"] = f"failed: {reason}: {e}"[:300]
            return detections, extra
        extra.update(segmentation="on", mask_png=png, processed_jpeg=processed)
        return with_masks, extra

    def _next_item(self, session_id: str | None) -> int:
        if session_id is None:
            return 1
        if session_id not in self._session_items and len(self._session_items) >= 1024:
            self._session_items.pop(next(iter(self._session_items)))
        self._session_items[session_id] = self._session_items.get(session_id, 0) + 1
        return self._session_items[session_id]

    def _shutdown(self) -> None:
        self.notifier.stopping()
        while True:
            try:
                self._jobs.get_nowait().fail(HTTPStatus.SERVICE_UNAVAILABLE, "shutting down")
            except queue.Empty:
                break
        self.capture.stop()
        self.capture.join(timeout=10)
        self.http.stop()
        if self.metrics_http is not None:
            self.metrics_http.stop()
        for c in reversed(self.components):
            try:
                c.stop()
            except Exception:
                log.exception("component did not stop cleanly", extra={"component": c.name})
        self.notifier.close()
        log.info("stopped")

"""The durable outbox between detection and the platform.

One SQLite database in WAL mode (`spool.db`) holds a row per deposit; the image
sits beside it as `images/<uuid>.jpg`. `put` writes and fsyncs the image file
and its directory entry first, then commits the row with synchronous=FULL, so
when `put` returns the deposit survives kill -9 and power loss. A row is the
commit marker: an image without a row (a crash between the two steps) is an
orphan and is removed when the spool is opened. A row leaves only after the
platform answered 2xx (`ack`), so delivery is at-least-once; the platform
de-duplicates on the deposit uuid (Idempotency-Key).

Disk budget: when images + database would exceed `max_bytes`, the oldest
images are shed (file deleted, row kept and marked) so records are never lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rvm_detector import upload_metrics
from rvm_detector.records import DepositRecord, fsync_dir

log = logging.getLogger(__name__)

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS deposits (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    status TEXT NOT NULL,
    data TEXT NOT NULL,
    session_id TEXT,
    image_name TEXT,
    image_bytes INTEGER NOT NULL DEFAULT 0,
    image_shed INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    dead_status INTEGER,
    dead_body TEXT,
    dead_at REAL
);
CREATE INDEX IF NOT EXISTS deposits_due ON deposits (state, next_attempt_at, seq);
"""
# Spools made by earlier releases may also hold a table `offline_transactions`, which
# nothing writes or sends any more. It is left in place (never dropped): its rows stay
# in spool.db for the operator, and an older release rolled back to still finds it.
_RETIRED_TABLE = "offline_transactions"
# Mask images for POST /edge/upload-image, one row per segmented deposit; committed in
# the deposit's own transaction, sent only once the deposit row is gone (accepted).
# Files: masks/<uuid>.png (mask), <uuid>.jpg (original), <uuid>.processed.jpg.
_MASK_SCHEMA = """
CREATE TABLE IF NOT EXISTS mask_uploads (
    uuid TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    metadata TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    dead_status INTEGER,
    dead_body TEXT
);
"""
_MASK_FILES = (".png", ".jpg", ".processed.jpg")
# Dead-letter bodies are kept for the operator, not archived forever.
_MAX_BODY_CHARS = 16_384
_EXPORT_COLUMNS = (
    "uuid",
    "created_at",
    "status",
    "state",
    "attempts",
    "last_error",
    "image_name",
    "image_shed",
    "dead_status",
    "dead_body",
    "dead_at",
    "session_id",
    "data",
)
_VERDICT_STATUS = {"accept": "ACCEPTED", "reject": "REJECTED"}


class SpoolError(RuntimeError):
    """The spool cannot be opened or written; the message says what to fix."""


@dataclass(frozen=True)
class SpooledDeposit:
    uuid: str
    status: str
    data: str
    session_id: str | None
    image_name: str | None
    image_shed: bool
    attempts: int


@dataclass(frozen=True)
class MaskUpload:
    """What POST /edge/upload-image needs for one deposit."""

    mask_png: bytes
    original_jpeg: bytes
    processed_jpeg: bytes
    metadata: dict[str, Any]


def _mask_upload(record: DepositRecord) -> MaskUpload | None:
    if not record.mask_png:
        return None
    return MaskUpload(
        record.mask_png,
        record.jpeg,
        record.processed_jpeg,
        {
            "session_id": record.session_id or record.uuid,
            "item_sequence": record.item_sequence,
            "client_ref": record.uuid,
        },
    )


@dataclass(frozen=True)
class SpoolStats:
    pending: int
    dead: int
    inflight: int
    image_bytes: int
    db_bytes: int
    shed_pending: int
    oldest_age_s: float
    masks_pending: int = 0

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    # Checkpoints (which fsync the database) run in the janitor thread, so enqueue
    # and ack never wait for one; the WAL is truncated after each to stay small.
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA journal_size_limit=1048576")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Spool:
    """SQLite + files outbox; a `Sink` (`put`) for the detector, a queue for the uploader.

    Thread-safe. One process owns a spool directory; the CLI may read it (and
    `retry_dead`) while the service runs.
    """

    def __init__(self, directory: Path, max_bytes: int = 2 * 1024**3) -> None:
        self.directory = Path(directory)
        self.images = self.directory / "images"
        self.masks = self.directory / "masks"
        self.max_bytes = max_bytes
        try:
            for d in (self.directory, self.images, self.masks):
                if not d.is_dir():
                    d.mkdir(parents=True, mode=0o750, exist_ok=True)
                    fsync_dir(d.parent)
            self._db_path = self.directory / "spool.db"
            # Enqueues must be on disk before `put` returns: FULL fsyncs the WAL on
            # commit. Acks and retry bookkeeping may be lost on power loss (the
            # deposit is then sent again and de-duplicated by the platform), so they
            # use NORMAL and skip the fsync.
            self._durable = _connect(self._db_path, "FULL")
            self._fast = _connect(self._db_path, "NORMAL")
            self._migrate()
        except (OSError, sqlite3.Error) as e:
            raise SpoolError(
                f"cannot open the spool in {self.directory}: {e}; check spool.dir exists, "
                "is writable by the service user and the disk is not full"
            ) from e
        self._lock = threading.Lock()
        self._work = threading.Condition(threading.Lock())
        self._inflight: set[str] = set()
        self._mask_inflight: set[str] = set()
        self._image_bytes = 0
        self._over_budget_warned = False
        self._last_shed_log = 0.0
        self._shed_since_log = 0
        self._remove_orphans()
        self._remove_mask_orphans()
        # Unlinking is slow on a busy disk (ms) and nothing waits for it: a janitor
        # thread deletes acked images (a crash first leaves orphans, removed at open)
        # and checkpoints the WAL.
        self._trash: queue.Queue[Path | None] = queue.Queue()
        self._janitor = threading.Thread(target=self._empty_trash, name="spool-janitor")
        self._janitor.daemon = True
        self._janitor.start()

    # -- set-up ---------------------------------------------------------------

    def _migrate(self) -> None:
        (version,) = self._durable.execute("PRAGMA user_version").fetchone()
        if version > _SCHEMA_VERSION:
            raise SpoolError(
                f"{self._db_path} has schema {version}, newer than this release "
                f"({_SCHEMA_VERSION}); roll forward again or move the spool aside"
            )
        self._durable.executescript(_SCHEMA)
        self._durable.executescript(_MASK_SCHEMA)
        self._durable.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        self._report_retired_rows()

    def _report_retired_rows(self) -> None:
        """Say so when an earlier release left rows in a table this one no longer reads."""
        exists = self._durable.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (_RETIRED_TABLE,)
        ).fetchone()
        if not exists:
            return
        (rows,) = self._durable.execute(f"SELECT COUNT(*) FROM {_RETIRED_TABLE}").fetchone()
        if rows:
            log.warning(
                "spool: %s holds %d row(s) in table %s from an earlier release; this "
                "release does not send them. They are kept; inspect them with sqlite3",
                self._db_path,
                rows,
                _RETIRED_TABLE,
            )

    def _remove_orphans(self) -> None:
        """Delete images with no row: left by a crash between file write and commit."""
        with self._lock:
            rows = self._fast.execute(
                "SELECT image_name, image_bytes FROM deposits WHERE image_name IS NOT NULL"
            ).fetchall()
            known = {name for name, _ in rows}
            self._image_bytes = sum(size for _, size in rows)
            for entry in os.scandir(self.images):
                if entry.name not in known:
                    log.info("spool: removing orphan image %s (crash before commit)", entry.name)
                    os.unlink(entry.path)

    def _empty_trash(self) -> None:
        conn = _connect(self._db_path, "NORMAL")
        last_checkpoint = time.monotonic()
        try:
            while True:
                try:
                    path = self._trash.get(timeout=1.0)
                except queue.Empty:
                    path = Path()  # idle: no file, but time to checkpoint
                if path is None:
                    return
                if path.name:
                    path.unlink(missing_ok=True)
                if time.monotonic() - last_checkpoint >= 1.0:
                    last_checkpoint = time.monotonic()
                    self._checkpoint(conn, "PASSIVE")
        finally:
            self._checkpoint(conn, "TRUNCATE")
            conn.close()

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection, mode: str) -> None:
        try:
            conn.execute(f"PRAGMA wal_checkpoint({mode})")
        except sqlite3.Error as e:
            log.warning("spool: WAL checkpoint failed (%s); will retry", e)

    def close(self) -> None:
        self._trash.put(None)
        self._janitor.join(30)
        with self._lock:
            self._durable.close()
            self._fast.close()

    # -- producer side --------------------------------------------------------

    def put(self, record: DepositRecord) -> None:
        """Accept a deposit record durably (the `Sink` protocol)."""
        data = record.to_dict()
        data["client_ref"] = record.uuid
        self.enqueue(
            uuid=record.uuid,
            status=_VERDICT_STATUS.get(record.verdict, record.verdict.upper()),
            data=data,
            image=record.jpeg,
            session_id=record.session_id,
            mask=_mask_upload(record),
        )

    def enqueue(
        self,
        *,
        uuid: str,
        status: str,
        data: dict[str, Any],
        image: bytes,
        session_id: str | None = None,
        mask: MaskUpload | None = None,
    ) -> None:
        """Store one deposit (and its mask upload); durable when this returns.

        A repeated uuid is a no-op."""
        if "/" in uuid or uuid.startswith("."):
            raise ValueError(f"deposit uuid {uuid!r} is not a plain identifier")
        with self._lock:
            if self._fast.execute("SELECT 1 FROM deposits WHERE uuid=?", (uuid,)).fetchone():
                return
        name = f"{uuid}.jpg"
        path = self.images / name
        # O_TRUNC: an orphan of a crashed earlier attempt for this uuid is overwritten.
        with open(path, "wb", opener=lambda p, f: os.open(p, f, 0o640)) as f:
            f.write(image)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(self.images)
        if mask is not None:
            try:
                self._write_mask_files(uuid, mask)
            except OSError as e:  # the deposit matters more than its mask
                log.warning("spool: deposit %s kept without its mask upload: %s", uuid, e)
                self._unlink_mask_files(uuid)
                mask = None
        body = json.dumps(data, separators=(",", ":"), sort_keys=True)
        with self._lock:
            shed, keep_image = self._make_room(len(image))
            try:
                self._durable.execute("BEGIN IMMEDIATE")
                self._durable.execute(
                    "INSERT OR IGNORE INTO deposits (uuid, created_at, status, data, session_id,"
                    " image_name, image_bytes, image_shed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        uuid,
                        time.time(),
                        status,
                        body,
                        session_id,
                        name if keep_image else None,
                        len(image) if keep_image else 0,
                        0 if keep_image else 1,
                    ),
                )
                if mask is not None:
                    self._durable.execute(
                        "INSERT OR IGNORE INTO mask_uploads (uuid, created_at, metadata)"
                        " VALUES (?, ?, ?)",
                        (uuid, time.time(), json.dumps(mask.metadata, sort_keys=True)),
                    )
                self._durable.execute("COMMIT")
            except sqlite3.Error as e:
                if self._durable.in_transaction:
                    self._durable.execute("ROLLBACK")
                path.unlink(missing_ok=True)
                self._unlink_mask_files(uuid)
                raise SpoolError(f"cannot store deposit {uuid} in {self._db_path}: {e}") from e
            if keep_image:
                self._image_bytes += len(image)
            else:
                shed.append(name)
                upload_metrics.IMAGES_SHED.inc()
                self._warn_over_budget()
        for victim in shed:
            (self.images / victim).unlink(missing_ok=True)
        with self._work:
            self._work.notify_all()

    def _db_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self._db_path}{suffix}").st_size
        return total

    def _make_room(self, incoming: int) -> tuple[list[str], bool]:
        """Shed oldest images so `incoming` fits.

        Returns the file names to unlink after the commit and whether the new
        image fits. Runs under `_lock`. Rows are updated before files go, so a
        crash leaves at worst an orphan file (removed at open); if the update
        itself is lost, `read_image` finds no file and sends the record as shed.
        """
        # The commit itself grows the WAL by a few pages: leave room for it.
        over = self._image_bytes + incoming + self._db_bytes() + 65536 - self.max_bytes
        if over <= 0:
            return [], True
        # Free 5% of the budget beyond what is needed, so shedding runs in batches.
        target = over + self.max_bytes // 20
        victims: list[tuple[str, str, int]] = []
        freed = 0
        for uuid, name, size in self._fast.execute(
            "SELECT uuid, image_name, image_bytes FROM deposits"
            " WHERE image_name IS NOT NULL ORDER BY seq"
        ):
            victims.append((uuid, name, size))
            freed += size
            if freed >= target:
                break
        if victims:
            self._fast.execute("BEGIN IMMEDIATE")
            self._fast.executemany(
                "UPDATE deposits SET image_name=NULL, image_bytes=0, image_shed=1 WHERE uuid=?",
                [(u,) for u, _, _ in victims],
            )
            self._fast.execute("COMMIT")
            self._image_bytes -= freed
            upload_metrics.IMAGES_SHED.inc(len(victims))
            self._log_shed(len(victims))
        return [name for _, name, _ in victims], freed >= over

    def _log_shed(self, n: int) -> None:
        self._shed_since_log += n
        now = time.monotonic()
        if now - self._last_shed_log >= 60:
            log.warning(
                "spool: disk budget spool.max_bytes=%d reached; shed %d oldest image(s) "
                "since the last report. Their records are kept and sent with a "
                "placeholder image (data.image_shed=true)",
                self.max_bytes,
                self._shed_since_log,
            )
            self._last_shed_log = now
            self._shed_since_log = 0

    def _warn_over_budget(self) -> None:
        if not self._over_budget_warned:
            self._over_budget_warned = True
            log.error(
                "spool: database alone exceeds spool.max_bytes=%d; records are still kept "
                "(never dropped) but without images. Raise spool.max_bytes or restore "
                "the uplink",
                self.max_bytes,
            )

    # -- consumer side --------------------------------------------------------

    def claim(self, now: float | None = None) -> SpooledDeposit | None:
        """The oldest due pending deposit not already being sent, marked in flight."""
        now = time.time() if now is None else now
        with self._lock:
            skip = tuple(self._inflight)
            marks = ",".join("?" * len(skip))
            where = f" AND uuid NOT IN ({marks})" if skip else ""
            row = self._fast.execute(
                "SELECT uuid, status, data, session_id, image_name, image_shed, attempts"
                " FROM deposits WHERE state='pending' AND next_attempt_at<=?"
                f"{where} ORDER BY next_attempt_at, seq LIMIT 1",
                (now, *skip),
            ).fetchone()
            if row is None:
                return None
            self._inflight.add(row[0])
        return SpooledDeposit(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6])

    def has_backlog(self, now: float | None = None) -> bool:
        """Whether more deposits are due than are in flight (work is waiting)."""
        now = time.time() if now is None else now
        with self._lock:
            n = len(self._inflight)
            (due,) = self._fast.execute(
                "SELECT COUNT(*) FROM (SELECT 1 FROM deposits WHERE state='pending'"
                " AND next_attempt_at<=? LIMIT ?)",
                (now, n + 1),
            ).fetchone()
        return due > n

    def read_image(self, item: SpooledDeposit) -> bytes | None:
        """The image bytes, or None when shed (or lost from disk, which is logged)."""
        if item.image_name is None:
            return None
        try:
            return (self.images / item.image_name).read_bytes()
        except FileNotFoundError:
            # Shed between claim and read, or removed by hand: send without it.
            log.warning("spool: image for %s is gone; sending it as shed", item.uuid)
            return None

    def ack(self, uuid: str) -> None:
        """The platform has the deposit: forget it."""
        with self._lock:
            row = self._fast.execute(
                "SELECT image_name, image_bytes FROM deposits WHERE uuid=?", (uuid,)
            ).fetchone()
            self._fast.execute("DELETE FROM deposits WHERE uuid=?", (uuid,))
            self._inflight.discard(uuid)
            if row and row[0]:
                self._image_bytes -= row[1]
        if row and row[0]:
            self._trash.put(self.images / row[0])

    def retry_later(self, uuid: str, delay_s: float, error: str) -> None:
        with self._lock:
            self._fast.execute(
                "UPDATE deposits SET attempts=attempts+1, next_attempt_at=?, last_error=?"
                " WHERE uuid=?",
                (time.time() + delay_s, error[:1000], uuid),
            )
            self._inflight.discard(uuid)

    def release(self, uuid: str) -> None:
        """Give a claimed deposit back untouched (shutdown, or the platform gate closed)."""
        with self._lock:
            self._inflight.discard(uuid)

    def dead_letter(self, uuid: str, status: int | None, body: str, error: str) -> None:
        """Park a deposit the platform refused for good; kept until `retry_dead`."""
        with self._lock:
            self._durable.execute(
                "UPDATE deposits SET state='dead', attempts=attempts+1, dead_status=?,"
                " dead_body=?, dead_at=?, last_error=? WHERE uuid=?",
                (status, body[:_MAX_BODY_CHARS], time.time(), error[:1000], uuid),
            )
            self._inflight.discard(uuid)
        upload_metrics.DEAD_LETTERS.inc()

    def retry_dead(self, uuids: list[str] | None = None) -> int:
        """Move dead letters (all, or the given uuids) back to the queue; returns how many."""
        with self._lock:
            sql = "UPDATE deposits SET state='pending', attempts=0, next_attempt_at=0"
            sql += " WHERE state='dead'"
            args: tuple[str, ...] = ()
            if uuids:
                sql += f" AND uuid IN ({','.join('?' * len(uuids))})"
                args = tuple(uuids)
            n = self._durable.execute(sql, args).rowcount
        with self._work:
            self._work.notify_all()
        return n

    def next_due_in(self, now: float | None = None) -> float | None:
        """Seconds until the earliest pending deposit is due (0 if due); None if empty."""
        now = time.time() if now is None else now
        with self._lock:
            (due,) = self._fast.execute(
                "SELECT MIN(next_attempt_at) FROM deposits WHERE state='pending'"
            ).fetchone()
        return None if due is None else max(0.0, due - now)

    def wait_for_work(self, timeout: float) -> None:
        """Sleep until a new deposit arrives or `timeout` passes."""
        with self._work:
            self._work.wait(timeout)

    def wake(self) -> None:
        with self._work:
            self._work.notify_all()

    # -- operator views -------------------------------------------------------

    def stats(self, now: float | None = None) -> SpoolStats:
        now = time.time() if now is None else now
        with self._lock:
            pending, shed, oldest = self._fast.execute(
                "SELECT COUNT(*), COALESCE(SUM(image_shed), 0), MIN(created_at)"
                " FROM deposits WHERE state='pending'"
            ).fetchone()
            (dead,) = self._fast.execute(
                "SELECT COUNT(*) FROM deposits WHERE state='dead'"
            ).fetchone()
            (masks_pending,) = self._fast.execute(
                "SELECT COUNT(*) FROM mask_uploads WHERE state='pending'"
            ).fetchone()
            inflight = len(self._inflight)
            image_bytes = self._image_bytes
            db_bytes = self._db_bytes()
        return SpoolStats(
            pending=pending,
            dead=dead,
            inflight=inflight,
            image_bytes=image_bytes,
            db_bytes=db_bytes,
            shed_pending=shed,
            oldest_age_s=0.0 if oldest is None else max(0.0, now - oldest),
            masks_pending=masks_pending,
        )

    def export(self, state: str | None = None) -> Iterator[dict[str, Any]]:
        """Every deposit row (optionally only 'pending' or 'dead') as a JSON-able dict."""
        sql = f"SELECT {', '.join(_EXPORT_COLUMNS)} FROM deposits"
        args: tuple[str, ...] = ()
        if state:
            sql += " WHERE state=?"
            args = (state,)
        with self._lock:
            rows = self._fast.execute(sql + " ORDER BY seq", args).fetchall()
        keys = _EXPORT_COLUMNS
        for row in rows:
            d = dict(zip(keys, row, strict=True))
            d["image_shed"] = bool(d["image_shed"])
            d["data"] = json.loads(d["data"])
            yield d

    # -- mask uploads (POST /edge/upload-image, after the deposit) -------------

    def _write_mask_files(self, uuid: str, mask: MaskUpload) -> None:
        blobs = (mask.mask_png, mask.original_jpeg, mask.processed_jpeg)
        for suffix, blob in zip(_MASK_FILES, blobs, strict=True):
            with open(
                self.masks / f"{uuid}{suffix}", "wb", opener=lambda p, f: os.open(p, f, 0o640)
            ) as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
        fsync_dir(self.masks)

    def _unlink_mask_files(self, uuid: str) -> None:
        for suffix in _MASK_FILES:
            (self.masks / f"{uuid}{suffix}").unlink(missing_ok=True)

    def _remove_mask_orphans(self) -> None:
        """Mask files without a row: a crash before the deposit's commit."""
        with self._lock:
            known = {u for (u,) in self._fast.execute("SELECT uuid FROM mask_uploads")}
        for entry in os.scandir(self.masks):
            owner = next(
                (entry.name[: -len(x)] for x in _MASK_FILES[::-1] if entry.name.endswith(x)), ""
            )
            if owner not in known:
                log.info("spool: removing orphan mask file %s (crash before commit)", entry.name)
                os.unlink(entry.path)

    def claim_mask(self, now: float | None = None) -> tuple[str, dict[str, Any], int] | None:
        """The oldest due mask upload whose deposit the platform has accepted."""
        now = time.time() if now is None else now
        with self._lock:
            skip = tuple(self._mask_inflight)
            where = f" AND uuid NOT IN ({','.join('?' * len(skip))})" if skip else ""
            row = self._fast.execute(
                "SELECT uuid, metadata, attempts FROM mask_uploads WHERE state='pending'"
                " AND next_attempt_at<=? AND uuid NOT IN (SELECT uuid FROM deposits)"
                f"{where} ORDER BY next_attempt_at, created_at LIMIT 1",
                (now, *skip),
            ).fetchone()
            if row is None:
                return None
            self._mask_inflight.add(row[0])
        return row[0], json.loads(row[1]), row[2]

    def read_mask_files(self, uuid: str) -> tuple[bytes, bytes, bytes] | None:
        """(mask png, original jpeg, processed jpeg), or None if a file is gone."""
        try:
            png, orig, processed = (
                (self.masks / f"{uuid}{suffix}").read_bytes() for suffix in _MASK_FILES
            )
        except FileNotFoundError:
            return None
        return png, orig, processed

    def ack_mask(self, uuid: str) -> None:
        with self._lock:
            self._fast.execute("DELETE FROM mask_uploads WHERE uuid=?", (uuid,))
            self._mask_inflight.discard(uuid)
        for suffix in _MASK_FILES:
            self._trash.put(self.masks / f"{uuid}{suffix}")

    def retry_mask_later(self, uuid: str, delay_s: float, error: str) -> None:
        with self._lock:
            self._fast.execute(
                "UPDATE mask_uploads SET attempts=attempts+1, next_attempt_at=?, last_error=?"
                " WHERE uuid=?",
                (time.time() + delay_s, error[:1000], uuid),
            )
            self._mask_inflight.discard(uuid)

    def release_mask(self, uuid: str) -> None:
        with self._lock:
            self._mask_inflight.discard(uuid)

    def dead_mask(self, uuid: str, status: int | None, body: str, error: str) -> None:
        with self._lock:
            self._durable.execute(
                "UPDATE mask_uploads SET state='dead', attempts=attempts+1, dead_status=?,"
                " dead_body=?, last_error=? WHERE uuid=?",
                (status, body[:_MAX_BODY_CHARS], error[:1000], uuid),
            )
            self._mask_inflight.discard(uuid)
        upload_metrics.DEAD_LETTERS.inc()


# -- consistent snapshots for backups (`rvm-detector spool backup DEST`) ---------


@dataclass(frozen=True)
class SnapshotResult:
    """What one snapshot holds; written beside it as snapshot.json."""

    deposits: int
    pending: int
    dead: int
    masks: int
    images: int
    images_gone: int
    masks_gone: int
    taken_at: float

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _place(src: Path, dst: Path) -> bool:
    """dst becomes src's content: a hard link where it can (instant, no space), else a copy.

    False when src is gone (acked or shed after the database snapshot was taken)."""
    with contextlib.suppress(FileNotFoundError):
        st = dst.stat()
        if st.st_size == src.stat().st_size:
            return True  # unchanged since the last snapshot: keep it (same inode for restic)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)
        except FileNotFoundError:
            return False
        except OSError:  # another filesystem, or links refused: copy
            shutil.copy2(src, tmp)
    except FileNotFoundError:
        return False
    os.replace(tmp, dst)
    return True


def _sync_files(src_dir: Path, dst_dir: Path, wanted: set[str]) -> set[str]:
    """Make dst_dir hold exactly `wanted` from src_dir; returns the names gone from src."""
    dst_dir.mkdir(mode=0o750, exist_ok=True)
    gone = {name for name in sorted(wanted) if not _place(src_dir / name, dst_dir / name)}
    for entry in os.scandir(dst_dir):
        if entry.name not in wanted or entry.name in gone:
            os.unlink(entry.path)
    fsync_dir(dst_dir)
    return gone


def snapshot(spool_dir: Path, dest: Path) -> SnapshotResult:
    """A consistent copy of a live spool in `dest` (spool.db, images/, masks/, snapshot.json).

    Safe while the detector writes: SQLite's online backup API copies the database in one
    step, i.e. inside one read transaction of WAL mode, so the copy is exactly the database
    as of one commit, and every deposit acknowledged (committed) before the call is in it.
    The files the copy references are then linked (or copied) beside it. One that is gone by
    then was acked (delivered) or shed after the copy was taken: its row is kept and marked
    shed, as the spool itself does, so a restored spool sends it without an image and the
    platform de-duplicates it on its uuid. Re-running updates `dest` in place: unchanged
    images keep their inode, so a file-level backup of `dest` reads only what changed.
    Never opens the spool for writing, nor removes anything from it.
    """
    spool_dir = Path(spool_dir)
    dest = Path(dest)
    db = spool_dir / "spool.db"
    if not db.is_file():
        raise SpoolError(f"{spool_dir} holds no spool.db; pass the detector's spool.dir")
    try:
        dest.mkdir(parents=True, mode=0o750, exist_ok=True)
        tmp = dest / "spool.db.tmp"
        tmp.unlink(missing_ok=True)
        src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        copy = sqlite3.connect(tmp, isolation_level=None)
        try:
            src.backup(copy)  # pages=-1: one step, one read transaction, one consistent view
        finally:
            src.close()
        taken_at = time.time()
        try:
            # One self-contained file: a snapshot has no -wal beside it.
            copy.execute("PRAGMA journal_mode=DELETE")
            images = {
                name
                for (name,) in copy.execute(
                    "SELECT image_name FROM deposits WHERE image_name IS NOT NULL"
                )
            }
            masks = {uuid for (uuid,) in copy.execute("SELECT uuid FROM mask_uploads")}
            images_gone = _sync_files(spool_dir / "images", dest / "images", images)
            mask_files = {f"{u}{suffix}" for u in masks for suffix in _MASK_FILES}
            gone_files = _sync_files(spool_dir / "masks", dest / "masks", mask_files)
            masks_gone = {u for u in masks if any(f"{u}{s}" in gone_files for s in _MASK_FILES)}
            copy.execute("BEGIN")
            copy.executemany(
                "UPDATE deposits SET image_name=NULL, image_bytes=0, image_shed=1"
                " WHERE image_name=?",
                [(n,) for n in images_gone],
            )
            copy.executemany("DELETE FROM mask_uploads WHERE uuid=?", [(u,) for u in masks_gone])
            copy.execute("COMMIT")
            for u in masks_gone:
                for suffix in _MASK_FILES:
                    (dest / "masks" / f"{u}{suffix}").unlink(missing_ok=True)
            (check,) = copy.execute("PRAGMA integrity_check").fetchone()
            if check != "ok":
                raise SpoolError(f"the snapshot of {db} fails PRAGMA integrity_check: {check}")
            pending, dead = copy.execute(
                "SELECT COALESCE(SUM(state='pending'), 0), COALESCE(SUM(state='dead'), 0)"
                " FROM deposits"
            ).fetchone()
        finally:
            copy.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest / "spool.db")
        result = SnapshotResult(
            deposits=pending + dead,
            pending=pending,
            dead=dead,
            masks=len(masks) - len(masks_gone),
            images=len(images) - len(images_gone),
            images_gone=len(images_gone),
            masks_gone=len(masks_gone),
            taken_at=taken_at,
        )
        (dest / "snapshot.json.tmp").write_text(json.dumps(result.to_dict(), sort_keys=True))
        os.replace(dest / "snapshot.json.tmp", dest / "snapshot.json")
        fsync_dir(dest)
    except (OSError, sqlite3.Error) as e:
        raise SpoolError(
            f"cannot snapshot the spool {spool_dir} into {dest}: {e}; check both are "
            "readable/writable by this user and the disk is not full"
        ) from e
    return result


def restore(snapshot_dir: Path, spool_dir: Path, *, force: bool = False) -> SnapshotResult:
    """Put a snapshot (made by `snapshot`) in place as the spool; the detector must be stopped.

    Refuses a spool that still holds deposits unless `force`: they would be lost."""
    snapshot_dir = Path(snapshot_dir)
    spool_dir = Path(spool_dir)
    src_db = snapshot_dir / "spool.db"
    if not src_db.is_file():
        raise SpoolError(f"{snapshot_dir} holds no spool.db: not a spool snapshot")
    try:
        conn = sqlite3.connect(f"file:{src_db}?mode=ro", uri=True)
        try:
            (check,) = conn.execute("PRAGMA integrity_check").fetchone()
        finally:
            conn.close()
        if check != "ok":
            raise SpoolError(f"{src_db} fails PRAGMA integrity_check ({check}); not restored")
        db = spool_dir / "spool.db"
        if db.is_file() and not force:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                (n,) = conn.execute("SELECT COUNT(*) FROM deposits").fetchone()
            finally:
                conn.close()
            if n:
                raise SpoolError(
                    f"{spool_dir} still holds {n} deposit(s) that restoring would lose; "
                    "upload or export them first, or restore with --force"
                )
        spool_dir.mkdir(parents=True, mode=0o750, exist_ok=True)
        for suffix in ("-wal", "-shm", ""):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        for sub in ("images", "masks"):
            target = spool_dir / sub
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(mode=0o750)
            if (snapshot_dir / sub).is_dir():
                for entry in os.scandir(snapshot_dir / sub):
                    shutil.copy2(entry.path, target / entry.name)
            fsync_dir(target)
        shutil.copy2(src_db, spool_dir / "spool.db.tmp")
        with open(spool_dir / "spool.db.tmp", "rb") as f:
            os.fsync(f.fileno())
        os.replace(spool_dir / "spool.db.tmp", db)
        fsync_dir(spool_dir)
        meta = snapshot_dir / "snapshot.json"
        if meta.is_file():
            return SnapshotResult(**json.loads(meta.read_text()))
        return SnapshotResult(0, 0, 0, 0, 0, 0, 0, 0.0)
    except (OSError, sqlite3.Error) as e:
        raise SpoolError(f"cannot restore {snapshot_dir} into {spool_dir}: {e}") from e

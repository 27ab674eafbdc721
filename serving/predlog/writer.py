"""The prediction log's writer: a bounded queue in front of one background thread that writes
records in batches (one transaction each), so no request ever waits for the database.

Every record handed to `submit` ends in exactly one of three counters (serving.metrics):
written (in the database), dropped (the queue was full: `submit` returns at once, never
blocks) or failed (its batch's transaction failed: the database is down, locked past its busy
timeout, or refused the row). So `dropped + failed` is exactly the number of answered images
missing from the log. A batch is tried once: retrying would hold the queue and drop newer
records instead.

With SKINDX_STORE_UPLOADS the thread also keeps each image under <uploads dir>/<UTC day>/
<sha256>.<ext> (atomic writes) and deletes the day folders older than the retention setting.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, create_engine, event, insert, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from serving.predlog.migrate import upgrade
from serving.predlog.models import predictions

logger = logging.getLogger("serving.predlog")

FLUSH_EVERY_S = 0.05  # a lone record waits at most this long for others to share its transaction
PRUNE_EVERY_S = 3600.0
WARN_EVERY_S = 30.0  # repeated write failures are logged at most this often
SQLITE_BUSY_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 3
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_STOP = object()


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


@dataclass
class LogCounters:
    """Where the writer counts (prometheus_client Counters in the API; anything with inc())."""

    written: Counter
    dropped: Counter
    failed: Counter
    write_errors: Counter
    depth: Callable[[int], None] = lambda _n: None


@dataclass
class PendingRecord:
    row: dict[str, Any]  # the predictions columns, image_path excepted
    image: bytes | None = None  # kept only with SKINDX_STORE_UPLOADS
    extension: str = field(default="bin")


def make_engine(url: str) -> Engine:
    """An engine for the log's URL: SQLite in WAL mode with a busy timeout and foreign keys,
    PostgreSQL through psycopg 3 (a plain postgresql:// URL would mean psycopg2) with a short
    connect timeout. Nothing connects yet."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers (the monitor) never block writers
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(
            parsed, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
        )
    return create_engine(parsed, pool_pre_ping=True)


def sqlite_path(engine: Engine) -> Path | None:
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database)
    return None


def prepare_database(engine: Engine) -> None:
    """Create a SQLite file's folder, then `alembic upgrade head` (a no-op when current)."""
    path = sqlite_path(engine)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    upgrade(engine)


class PredictionLog:
    def __init__(
        self,
        url: str,
        counters: LogCounters,
        *,
        queue_size: int = 1000,
        batch_size: int = 100,
        uploads_dir: Path | None = None,
        retention_days: int = 30,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = make_engine(url)
        self.counters = counters
        self.batch_size = batch_size
        self.uploads_dir = uploads_dir
        self.retention_days = retention_days
        self.now = now
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._unfinished = 0  # submitted, not yet written or failed
        self._done = threading.Condition()
        self._migrated = False
        self._last_warning = 0.0
        self._suppressed = 0
        self._next_prune = 0.0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)

    @property
    def stores_uploads(self) -> bool:
        return self.uploads_dir is not None

    @property
    def migrated(self) -> bool:
        return self._migrated

    def start(self) -> None:
        self._thread.start()

    def submit(self, record: PendingRecord) -> bool:
        """Queue one record; False (and counted as dropped) when the queue is full. Never blocks."""
        with self._done:
            self._unfinished += 1
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.counters.dropped.inc()
            self._finish(1)
            return False
        self.counters.depth(self._queue.qsize())
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued record is written or failed; False after `timeout`."""
        with self._done:
            return self._done.wait_for(lambda: self._unfinished == 0, timeout)

    def close(self, timeout: float = 15.0) -> None:
        """Write what is queued (within `timeout`), then stop the thread."""
        if self._thread.is_alive():
            deadline = time.monotonic() + timeout
            while True:  # the stop marker needs a free slot; the thread is freeing them
                try:
                    self._queue.put(_STOP, timeout=0.1)
                    break
                except queue.Full:
                    if time.monotonic() > deadline:
                        break
            self._thread.join(max(deadline - time.monotonic(), 0.1))
        self.engine.dispose()

    def _finish(self, n: int) -> None:
        with self._done:
            self._unfinished -= n
            self._done.notify_all()

    # --- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        self._try_migrate()
        while True:
            self._maybe_prune()
            try:
                first = self._queue.get(timeout=min(PRUNE_EVERY_S, 60.0))
            except queue.Empty:
                continue
            if first is _STOP:
                return
            batch = [first]
            deadline = time.monotonic() + FLUSH_EVERY_S
            stop = False
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self.counters.depth(self._queue.qsize())
            try:
                self._write(batch)
            except Exception as exc:  # never let the thread die: count and go on
                self._lost(len(batch), exc)
            finally:
                self._finish(len(batch))
            if stop:
                return

    def _try_migrate(self) -> bool:
        if self._migrated:
            return True
        try:
            prepare_database(self.engine)
        except Exception as exc:
            self._warn(f"cannot open or migrate the prediction log at {self._where()}: {exc}")
            return False
        self._migrated = True
        logger.info("prediction log at %s is ready", self._where())
        return True

    def _write(self, batch: list[PendingRecord]) -> None:
        if not self._try_migrate():
            self.counters.failed.inc(len(batch))
            self.counters.write_errors.inc()
            return
        rows = [self._with_image(record) for record in batch]
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(predictions), rows)
        except IntegrityError:  # a repeated request id (a client's X-Request-ID): row by row
            self._write_one_by_one(rows)
            return
        except Exception as exc:
            self._lost(len(rows), exc)
            return
        self.counters.written.inc(len(rows))

    def _write_one_by_one(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            try:
                with self.engine.begin() as connection:
                    connection.execute(insert(predictions), [row])
            except Exception as exc:
                self._lost(1, exc)
            else:
                self.counters.written.inc()

    def _lost(self, n: int, exc: BaseException) -> None:
        self.counters.failed.inc(n)
        self.counters.write_errors.inc()
        self._warn(f"{n} prediction record(s) lost: {type(exc).__name__}: {exc}")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning < WARN_EVERY_S:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} similar messages suppressed)" if self._suppressed else ""
        logger.warning("%s%s", message.splitlines()[0][:500], more)
        self._last_warning, self._suppressed = now, 0

    def _where(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    # --- stored uploads --------------------------------------------------------------------

    def _with_image(self, record: PendingRecord) -> dict[str, Any]:
        row = dict(record.row, image_path=None)
        if record.image is None or self.uploads_dir is None:
            return row
        day = row["created_at"].astimezone(UTC).date().isoformat()
        relative = f"{day}/{row['image_sha256']}.{record.extension}"
        target = self.uploads_dir / relative
        try:
            if not target.exists():  # content-addressed: the same image once a day
                target.parent.mkdir(parents=True, exist_ok=True)
                _atomic_write(target, record.image)
            row["image_path"] = relative
        except OSError as exc:
            self._warn(f"cannot store an upload in {self.uploads_dir}: {exc}")
        return row

    def _maybe_prune(self) -> None:
        if self.uploads_dir is None or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + PRUNE_EVERY_S
        try:
            self.prune()
        except Exception as exc:
            self._warn(f"pruning stored uploads failed: {exc}")

    def prune(self) -> list[str]:
        """Delete the day folders of stored uploads older than the retention, and forget their
        paths in the log; returns the days deleted."""
        if self.uploads_dir is None or not self.uploads_dir.is_dir():
            return []
        oldest_kept = self.now().astimezone(UTC).date() - timedelta(days=self.retention_days - 1)
        deleted = []
        for folder in sorted(self.uploads_dir.iterdir()):
            try:
                day = date.fromisoformat(folder.name)
            except ValueError:
                continue
            if folder.is_dir() and day < oldest_kept:
                shutil.rmtree(folder, ignore_errors=True)
                deleted.append(folder.name)
        if deleted and self._try_migrate():
            cutoff = datetime.combine(oldest_kept, datetime.min.time(), UTC)
            with self.engine.begin() as connection:
                connection.execute(
                    update(predictions)
                    .where(predictions.c.created_at < cutoff, predictions.c.image_path.is_not(None))
                    .values(image_path=None)
                )
            logger.info(
                "deleted stored uploads of %s (retention %d days)", deleted, self.retention_days
            )
        return deleted


def _atomic_write(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""`python -m serving`: uvicorn with the SKINDX_* settings (host, port, workers, log level)."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import uvicorn

from serving.metrics import MULTIPROCESS_ENV
from serving.settings import Settings, SettingsError


def prepare_multiprocess_metrics(workers: int) -> str | None:
    """With several workers, give them one fresh directory for their Prometheus values (it must
    be set before any worker imports prometheus_client, and start empty)."""
    if workers < 2:
        return None
    directory = os.environ.get(MULTIPROCESS_ENV)
    if not directory:
        directory = tempfile.mkdtemp(prefix="skindx-metrics-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    Path(directory).mkdir(parents=True, exist_ok=True)
    for stale in Path(directory).glob("*.db"):  # values of a previous run would add up
        stale.unlink()
    os.environ[MULTIPROCESS_ENV] = directory
    return directory


def migrate_prediction_log(settings: Settings) -> None:
    """Bring the prediction log's schema up to date once, before the workers start (each also
    checks at its start; a database that is down now is migrated by them once it is back)."""
    if not settings.prediction_log or settings.workers < 2:
        return
    from serving.predlog.writer import make_engine, prepare_database

    engine = make_engine(settings.prediction_db_url)
    try:
        prepare_database(engine)
    except Exception as exc:  # the workers retry; serving must start anyway
        print(f"python -m serving: the prediction log is not ready yet ({exc})", file=sys.stderr)
    finally:
        engine.dispose()


def main() -> None:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise SystemExit(f"python -m serving: {exc}") from None
    prepare_multiprocess_metrics(settings.workers)
    migrate_prediction_log(settings)
    uvicorn.run(
        "serving.app:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()

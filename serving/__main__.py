"""`python -m serving`: uvicorn with the SKINDX_* settings (host, port, workers, log level)."""

from __future__ import annotations

import atexit
import os
import shutil
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


def main() -> None:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise SystemExit(f"python -m serving: {exc}") from None
    prepare_multiprocess_metrics(settings.workers)
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

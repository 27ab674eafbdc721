"""`python -m serving`: uvicorn with the SKINDX_* settings (host, port, workers, log level)."""

from __future__ import annotations

import uvicorn

from serving.settings import Settings


def main() -> None:
    settings = Settings.from_env()
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

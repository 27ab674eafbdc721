"""The SkinDX serving API: FastAPI on ONNX Runtime, no torch.

uvicorn serving.app:app            (settings: SKINDX_* variables over the checkout's .env)
python -m serving                  (the same, with SKINDX_WORKERS worker processes)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import anyio
from fastapi import FastAPI
from fastapi.responses import RedirectResponse

import skindx
from serving.body_limit import BodyLimitMiddleware
from serving.engine import InferenceEngine, ModelRejectedError
from serving.errors import install_error_handlers, reject_body_too_large
from serving.metrics import MetricsMiddleware, ServingMetrics
from serving.predlog.writer import LogCounters, PredictionLog
from serving.request_id import RequestIdMiddleware
from serving.routers import admin, explain, feedback, predict, service
from serving.routers import metrics as metrics_routes
from serving.routers.docs import DOCS_URL, REDOC_URL, install_docs
from serving.settings import Settings

logger = logging.getLogger("serving")

DESCRIPTION = """\
Classifies dermatoscopic images of skin lesions into the seven HAM10000 classes, with
calibrated probabilities, a risk group and a Grad-CAM explanation.

**Not a medical device.** For research and education; it does not replace a clinician.

Errors are JSON `{{"detail": "...", "code": "..."}}`. Uploads: JPEG, PNG or WebP (the type is read
from the bytes), at most {max_upload_mb} MB a file (SKINDX_MAX_UPLOAD_MB), at least
{min_image_side} px a side. This reference is also served as ReDoc, at `{redoc}`.
"""


def _configure_logging(level: str) -> None:
    if not logger.handlers:  # uvicorn configures only its own loggers
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())


async def _load_initial_model(engine: InferenceEngine) -> None:
    try:
        await engine.load()
    except ModelRejectedError:
        pass  # logged by the engine; /ready stays 503 and POST /admin/reload can retry


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    app.state.decode_limiter = anyio.CapacityLimiter(settings.decode_threads)
    engine: InferenceEngine = app.state.engine
    await engine.start()
    log: PredictionLog | None = app.state.prediction_log
    if log is not None:
        log.start()  # its thread opens and migrates the database: a slow one delays nothing
    # load in the background: /health answers at once, /ready turns 200 once warmed up
    loading = asyncio.create_task(_load_initial_model(engine), name="load-model")
    try:
        yield
    finally:
        if not loading.done():
            loading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loading
        await engine.close()
        if log is not None:
            await anyio.to_thread.run_sync(log.close)  # write what is queued, then stop
        app.state.metrics.close()


def body_limits(settings: Settings) -> Callable[[str], int]:
    """The request body cap of each path: uploads get theirs, everything else 64 KB."""
    limits = {
        "/predict": settings.max_request_bytes,
        "/explain": settings.max_request_bytes,
        "/predict/batch": settings.max_batch_request_bytes,
    }
    return lambda path: limits.get(path, 64 * 1024)


def prediction_log(settings: Settings, metrics: ServingMetrics) -> PredictionLog | None:
    """The prediction log's writer (not started), or None with SKINDX_PREDICTION_LOG off."""
    if not settings.prediction_log:
        return None
    counters = LogCounters(
        written=metrics.log_written,
        dropped=metrics.log_dropped,
        failed=metrics.log_failed,
        write_errors=metrics.log_write_errors,
        depth=metrics.log_queue_depth.set,
    )
    return PredictionLog(
        settings.prediction_db_url,
        counters,
        queue_size=settings.prediction_log_queue,
        batch_size=settings.prediction_log_batch,
        uploads_dir=settings.uploads_path if settings.store_uploads else None,
        retention_days=settings.upload_retention_days,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    _configure_logging(settings.log_level)
    app = FastAPI(
        title="SkinDX API",
        version=skindx.__version__,
        description=DESCRIPTION.format(
            max_upload_mb=settings.max_upload_mb,
            min_image_side=settings.min_image_side,
            redoc=REDOC_URL,
        ),
        lifespan=lifespan,
        docs_url=None,  # served by install_docs, with local assets
        redoc_url=None,
    )
    metrics = ServingMetrics(settings.monitoring_summary)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.engine = InferenceEngine(settings, metrics)
    app.state.prediction_log = prediction_log(settings, metrics)
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware, limit_for_path=body_limits(settings), reject=reject_body_too_large
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # sees every response
    app.add_middleware(RequestIdMiddleware)  # outermost: every response carries X-Request-ID
    for router in (service.router, predict.router, explain.router, metrics_routes.router):
        app.include_router(router)
    # without a token the admin API is absent (404), from the schema too; so is /feedback
    app.include_router(admin.router, include_in_schema=settings.admin_token_value is not None)
    app.include_router(feedback.router, include_in_schema=settings.reviewer_token_value is not None)
    install_docs(app)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(DOCS_URL)

    return app


app = create_app()

"""Serving settings: SKINDX_* environment variables over the repository's `.env`, read once.

pydantic-settings does the reading and the type checks; `Settings.from_env` turns a refusal
into one message that names each bad variable and what it must be. The upload limit is
SKINDX_MAX_UPLOAD_MB, the deploy default that `.env` also gives nginx and Streamlit; everything
in bytes derives from it here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from skindx.inference.resources import cpu_threads

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "model"
# written by `make monitor` (monitor.reports_dir of params.yaml); mount it there in a container
DEFAULT_MONITORING_SUMMARY = Path(__file__).resolve().parents[1] / "reports/monitoring/summary.json"
# local runtime state of a checkout (`make serve` uses the same SKINDX_RUN_DIR): the prediction
# log's SQLite file and stored uploads live here unless their own settings say otherwise
DEFAULT_RUN_DIR = Path(__file__).resolve().parents[1] / ".run"
# the deploy defaults of a checkout (absent in the API image: there the environment decides)
ENV_FILE = Path(__file__).resolve().parents[1] / ".env"
ENV_PREFIX = "SKINDX_"
MB = 1024 * 1024
MULTIPART_ALLOWANCE = 64 * 1024  # room for multipart headers around a file of the limit

# set by from_env(environ): that mapping replaces os.environ and the .env file
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("skindx_environ", default=None)
# replaced variables: reading them silently would leave two sources for one limit
_REPLACED = {"max_upload_bytes": "SKINDX_MAX_UPLOAD_MB (whole megabytes, e.g. 10)"}

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
OodAction = Literal["flag", "reject"]


class SettingsError(ValueError):
    """The SKINDX_* settings are invalid; the message names each variable and the fix."""


class _Environment(EnvSettingsSource):
    """SKINDX_* variables from os.environ (or from_env's mapping); blank values mean unset."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _ENVIRON.get()
        environ = os.environ if environ is None else environ
        cleaned = {key.lower(): value.strip() for key, value in environ.items() if value.strip()}
        for name, replacement in _REPLACED.items():
            if f"{ENV_PREFIX.lower()}{name}" in cleaned:
                raise SettingsError(
                    f"{ENV_PREFIX}{name.upper()} is no longer read: set {replacement} instead"
                )
        return cleaned


class Settings(BaseSettings):
    """Every setting is SKINDX_<NAME> (e.g. SKINDX_MAX_BATCH=32)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",  # .env also holds the deploy defaults of nginx, compose and the UI
        frozen=True,
        validate_default=True,
    )

    model_dir: Path = DEFAULT_MODEL_DIR
    max_upload_mb: int = Field(10, ge=1, description="per file; the body adds multipart framing")
    max_image_pixels: int = Field(40_000_000, ge=1, description="decompression-bomb guard")
    min_image_side: int = Field(32, ge=1)
    max_batch_files: int = Field(16, ge=1, description="files per POST /predict/batch")
    max_batch: int = Field(16, ge=1, description="images per ONNX Runtime call")
    max_wait_ms: float = Field(5.0, ge=0, description="how long the batcher waits to fill a batch")
    queue_size: int = Field(128, ge=1, description="images waiting for inference; beyond: 503")
    retry_after_s: int = Field(1, ge=0)
    # CPUs this process may use (affinity and container cpusets), not the host's count
    intra_op_threads: int = Field(default_factory=cpu_threads, ge=1)
    decode_threads: int = Field(default_factory=cpu_threads, ge=1)
    admin_token: SecretStr | None = Field(None, description="enables POST /admin/reload")
    workers: int = Field(1, ge=1, description="uvicorn worker processes (python -m serving)")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    explain_size: int = Field(448, ge=1, description="side of the Grad-CAM overlay PNG")
    # what an upload the out-of-distribution scorer rejects gets: `flag` answers it with
    # in_distribution=false (the UI shows a warning instead of the diagnosis), `reject` refuses
    # it with 422 not_dermoscopic
    ood_action: OodAction = "flag"
    # test-time augmentation: the diagnosis averaged over the image's 8 dihedral views, run as
    # one batch (skindx.inference.tta). The default for requests that send no `?tta=`: off, for
    # machine clients' throughput (0.27x at 16 clients, 3.6x the p50), though it adds +0.023
    # test BMA at every seed of the demo model (docs/results.md#test-time-augmentation-over-
    # the-three-seeds); the web UI asks for it per request.
    tta: bool = Field(False, description="average the probabilities over the 8 dihedral views")
    log_level: LogLevel = "info"
    # the prediction log (serving/predlog): one row per answered image, and reviewers' feedback
    run_dir: Path = DEFAULT_RUN_DIR
    prediction_log: bool = Field(True, description="record every answered image")
    prediction_db: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<run_dir>/predictions.db"
    )
    prediction_log_queue: int = Field(1000, ge=1, description="records waiting; beyond: dropped")
    prediction_log_batch: int = Field(100, ge=1, description="records per database transaction")
    store_uploads: bool = Field(False, description="keep a copy of each answered image")
    uploads_dir: Path | None = Field(None, description="default <run_dir>/uploads")
    upload_retention_days: int = Field(30, ge=1, description="stored images older are deleted")
    reviewer_token: SecretStr | None = Field(None, description="enables POST /feedback")
    # the drift monitor's summary (python -m skindx.monitor), exported as skindx_drift_score
    monitoring_summary: Path = Field(
        DEFAULT_MONITORING_SUMMARY, description="summary.json of the last drift report"
    )

    @field_validator("log_level", "ood_action", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environment = _Environment(settings_cls)
        if _ENVIRON.get() is not None:  # an explicit environment is the whole story
            return init_settings, environment
        return init_settings, environment, dotenv_settings

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * MB

    @property
    def max_request_bytes(self) -> int:
        """Body cap of a single-file request: the file plus room for multipart headers."""
        return self.max_upload_bytes + MULTIPART_ALLOWANCE

    @property
    def max_batch_request_bytes(self) -> int:
        return self.max_upload_bytes * self.max_batch_files + MULTIPART_ALLOWANCE

    @property
    def admin_token_value(self) -> str | None:
        """The admin token, or None when the admin API is disabled (unset or blank)."""
        return self.admin_token.get_secret_value() if self.admin_token else None

    @property
    def reviewer_token_value(self) -> str | None:
        """The reviewer token, or None when POST /feedback is disabled (unset or blank)."""
        return self.reviewer_token.get_secret_value() if self.reviewer_token else None

    @property
    def prediction_db_url(self) -> str:
        """SKINDX_PREDICTION_DB, else a SQLite file in the run directory."""
        return self.prediction_db or f"sqlite:///{(self.run_dir / 'predictions.db').resolve()}"

    @property
    def uploads_path(self) -> Path:
        return self.uploads_dir or self.run_dir / "uploads"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings from os.environ over `.env` (or from `environ` alone, for tests);
        SettingsError names every variable that is wrong."""
        token = _ENVIRON.set(environ)
        try:
            return cls()
        except ValidationError as exc:
            raise SettingsError(
                "invalid serving settings: " + "; ".join(_explain(e) for e in exc.errors())
            ) from None
        finally:
            _ENVIRON.reset(token)


_TYPE_NAMES = {"int_parsing": "int", "int_from_float": "int", "float_parsing": "float"}


def _explain(error: Mapping[str, Any]) -> str:
    name = str(error["loc"][0]) if error.get("loc") else "settings"
    variable = f"{ENV_PREFIX}{name.upper()}"
    value, kind, ctx = error.get("input"), error.get("type", ""), error.get("ctx") or {}
    if kind in _TYPE_NAMES:
        return f"{variable}={value!r} is not a valid {_TYPE_NAMES[kind]}"
    if kind == "greater_than_equal":
        bound = ctx["ge"]
        rule = f"at least {bound:g}" if bound else f">= {bound:g}"
        return f"setting {name} must be {rule} ({variable}={value!r})"
    if kind == "less_than_equal":
        return f"setting {name} must be at most {ctx['le']} ({variable}={value!r})"
    return f"{variable}={value!r}: {error.get('msg', 'invalid value')}"

"""Serving settings, read once from SKINDX_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "model"
MB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    model_dir: Path = DEFAULT_MODEL_DIR
    max_upload_bytes: int = 10 * MB  # per file; the request body may add multipart framing
    max_image_pixels: int = 40_000_000  # decompression-bomb guard, checked before decoding
    min_image_side: int = 32
    max_batch_files: int = 16  # files per POST /predict/batch
    max_batch: int = 16  # images per ONNX Runtime call
    max_wait_ms: float = 5.0  # how long the batcher waits to fill a batch
    queue_size: int = 128  # images waiting for inference; beyond it -> 503
    retry_after_s: int = 1
    intra_op_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    decode_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    admin_token: str | None = field(default=None, repr=False)
    workers: int = 1  # uvicorn worker processes (python -m serving, the container)
    host: str = "127.0.0.1"
    port: int = 8000
    explain_size: int = 448  # side of the Grad-CAM overlay PNG
    log_level: str = "info"

    def __post_init__(self) -> None:
        positive = (
            "max_upload_bytes",
            "max_image_pixels",
            "min_image_side",
            "max_batch_files",
            "max_batch",
            "queue_size",
            "intra_op_threads",
            "decode_threads",
            "workers",
            "explain_size",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"setting {name} must be at least 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"setting max_wait_ms must be >= 0, got {self.max_wait_ms}")

    @property
    def max_request_bytes(self) -> int:
        """Body cap of a single-file request: the file plus room for multipart headers."""
        return self.max_upload_bytes + 64 * 1024

    @property
    def max_batch_request_bytes(self) -> int:
        return self.max_upload_bytes * self.max_batch_files + 64 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """SKINDX_<NAME> for each field (e.g. SKINDX_MAX_BATCH=32); unset ones keep defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = environ.get(f"SKINDX_{f.name.upper()}")
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(f.name, raw.strip(), _FIELD_TYPES[str(f.type)])
        return cls(**values)


# dataclass field annotations (strings, under `from __future__ import annotations`) -> parser
_FIELD_TYPES: dict[str, type] = {
    "int": int,
    "float": float,
    "str": str,
    "str | None": str,
    "Path": Path,
}


def _parse(name: str, raw: str, kind: type) -> object:
    try:
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"SKINDX_{name.upper()}={raw!r} is not a valid {kind.__name__}") from exc

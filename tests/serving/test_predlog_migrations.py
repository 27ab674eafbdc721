"""The prediction log's Alembic migrations: they build exactly the tables serving/predlog/models.py
declares, and a database at an earlier revision keeps its rows when upgraded."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from serving.predlog.migrate import alembic_config, current_revision, head_revision, upgrade
from serving.predlog.models import metadata


def test_the_migrations_build_the_tables_the_code_declares(tmp_path: Path):
    """A column added to models.py without a migration (or the reverse) fails here: what
    `alembic revision --autogenerate` would write must be nothing."""
    engine = create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    engine.dispose()
    assert differences == []


def test_rows_written_before_the_tta_column_keep_and_read_as_plain(tmp_path: Path):
    engine = create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    stats = {f"{k}_{c}": 0.5 for k in ("mean", "std") for c in "rgb"}
    stats |= {"brightness": 0.5} | {f"hist_{c}{i}": 0.125 for c in "rgb" for i in range(8)}
    row = {
        "request_id": "before",
        "http_request_id": "before",
        "endpoint": "predict",
        "created_at": datetime(2026, 12, 1, tzinfo=UTC),
        "model_version": "1",
        "predicted_class": "nv",
        "confidence": 0.9,
        "probabilities": '{"nv": 0.9}',
        "image_format": "JPEG",
        "image_width": 600,
        "image_height": 450,
        "image_bytes": 1000,
        "image_sha256": "0" * 64,
        "latency_ms": 20.0,
        **stats,
    }
    columns = ", ".join(row)
    with engine.begin() as connection:
        connection.execute(
            text(f"INSERT INTO predictions ({columns}) VALUES ({', '.join(':' + k for k in row)})"),
            row,
        )
    upgrade(engine)
    with engine.connect() as connection:
        kept = connection.execute(text("SELECT request_id, tta FROM predictions")).all()
    engine.dispose()
    assert [(r.request_id, bool(r.tta)) for r in kept] == [("before", False)]

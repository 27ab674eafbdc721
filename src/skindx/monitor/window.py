"""A time window of the prediction log, read with serving.predlog's own table definitions.

One row per logged prediction with created_at in [since, until), joined with its reviewer's
label (`label`, null when not reviewed). The tables are serving.predlog.models' (never
redefined here); the database is the API's (SKINDX_PREDICTION_DB, Settings.prediction_db_url).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from sqlalchemy import inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from skindx.inference.image_stats import STAT_KEYS

WINDOW_COLUMNS = (
    "request_id",
    "created_at",
    "model_version",
    "predicted_class",
    "confidence",
    "ood_score",
    *STAT_KEYS,
)


class WindowError(RuntimeError):
    """The prediction log cannot be read; the message says what to check."""


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime

    @classmethod
    def resolve(cls, since: datetime | None, until: datetime | None, days: float | None) -> Window:
        """--until defaults to now, --since to --days (default 7) before --until."""
        until = _utc(until) if until else datetime.now(UTC)
        since = _utc(since) if since else until - timedelta(days=7 if days is None else days)
        if since >= until:
            raise ValueError(f"the window is empty: --since {since} is not before --until {until}")
        return cls(since, until)

    def to_dict(self) -> dict[str, str]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat()}


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def database_url() -> str:
    """The API's prediction log: serving's settings (SKINDX_PREDICTION_DB over .env)."""
    from serving.settings import Settings

    return Settings.from_env().prediction_db_url


def read_window(url: str, window: Window) -> pd.DataFrame:
    """WINDOW_COLUMNS plus `label` (the reviewed diagnosis or None), ordered by time."""
    from serving.predlog.models import feedback, predictions
    from serving.predlog.writer import make_engine  # the API's engine: psycopg 3, SQLite WAL

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).is_file():
            raise WindowError(
                f"no prediction log at {parsed.database}: point SKINDX_PREDICTION_DB (or --db) "
                "at the API's database; by default it is <SKINDX_RUN_DIR>/predictions.db"
            )
    engine = make_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
        if predictions.name not in tables:
            raise WindowError(
                f"{engine.url!r} has no {predictions.name} table: start the API once (it "
                "migrates the log) or run `python -m serving.predlog.migrate`"
            )
        query = (
            select(*(predictions.c[name] for name in WINDOW_COLUMNS), feedback.c.label)
            .select_from(
                predictions.outerjoin(feedback, feedback.c.request_id == predictions.c.request_id)
            )
            .where(
                predictions.c.created_at >= window.since, predictions.c.created_at < window.until
            )
            .order_by(predictions.c.created_at)
        )
        with engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
    except SQLAlchemyError as exc:
        raise WindowError(
            f"cannot read the prediction log at {engine.url!r}: {exc.__class__.__name__}: "
            f"{exc}. Check SKINDX_PREDICTION_DB and that the database is up"
        ) from exc
    finally:
        engine.dispose()
    return pd.DataFrame(rows, columns=[*WINDOW_COLUMNS, "label"])

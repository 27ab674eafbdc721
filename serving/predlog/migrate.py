"""Bring a prediction-log database to the newest schema with Alembic (`upgrade head`).

The API calls `upgrade` from its log writer thread at startup (and again after a failure), so
a database that is down when the API starts is migrated once it is back. `python -m
serving.predlog.migrate` does the same by hand, for the database of the SKINDX_* settings.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, text

HERE = Path(__file__).resolve().parent
ALEMBIC_INI = HERE / "alembic.ini"
# any constant: PostgreSQL's advisory lock makes replicas that start together migrate in turn
_PG_LOCK_KEY = 7_215_330_001


def alembic_config() -> Config:
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(HERE / "migrations"))
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """`alembic upgrade head` on this engine's database; a no-op when it is current."""
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def main() -> None:
    from serving.settings import Settings

    settings = Settings.from_env()
    engine = create_engine(settings.prediction_db_url)
    upgrade(engine)
    print(f"prediction log at {engine.url!r} is at revision {current_revision(engine)}")


if __name__ == "__main__":
    main()

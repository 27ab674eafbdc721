"""Alembic environment of the prediction log: the URL comes from the caller (migrate.upgrade
puts its engine's connection in config.attributes) or from the serving settings (CLI)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from serving.predlog.models import metadata

config = context.config
target_metadata = metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER on SQLite: copy and swap
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from serving.settings import Settings

    engine = create_engine(Settings.from_env().prediction_db_url)
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("the prediction log has no offline (SQL script) mode: run `upgrade head`")
run_migrations_online()

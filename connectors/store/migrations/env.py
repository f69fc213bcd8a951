"""Alembic environment for the alloop store.

The store runs migrations in code (``connectors.store.migrate``), handing over an open
connection in ``config.attributes["connection"]``. Without one, an engine is built from the
``sqlalchemy.url`` option; ``--sql`` (offline) mode renders the DDL for that URL's dialect.
"""

from __future__ import annotations

from alembic import context

from connectors.store.engine import create_store_engine, write_transaction
from connectors.store.models import metadata


def _configure(connection) -> None:  # noqa: ANN001 - alembic passes a SQLAlchemy Connection
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_store_engine(context.config.get_main_option("sqlalchemy.url") or "")
    try:
        with write_transaction(engine) as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()

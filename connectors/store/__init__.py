"""The state store: ``SqlStore`` (SQLite or PostgreSQL through SQLAlchemy 2) and its Alembic
schema migrations (``upgrade``, ``current_revision``, ``head_revision``)."""

from connectors.store.migrate import current_revision, head_revision, upgrade
from connectors.store.sql import SqlStore

__all__ = ["SqlStore", "current_revision", "head_revision", "upgrade"]

"""The store's tables (SQLAlchemy Core). The Alembic migrations in ``migrations/`` build exactly
this schema; a test compares the two on SQLite and PostgreSQL.

- ``items``: one row per text; ``meta`` is free JSON. ``split`` is where the item is now
  (``assign_split`` moves pool items into the ``eval`` sample); ``origin_split`` is the split it
  was imported with and never changes, so importing the same data again still matches it.
- ``labels``: one row per ``(source, annotation_id, item_id)``; several annotators per item fit.
  A withdrawn row stays (``withdrawn=True``) so the history is never lost.
- ``label_events``: append-only log of every insert/update/withdrawal; its max id is the
  label revision.
- ``label_rejections``: answers that could not become labels, one row per
  ``(source, annotation_id, item_id)`` (the identity of a label); a later reason replaces
  the earlier one. Never trained on.
- ``queries``: what the loop asked for; an item is asked at most once (``UNIQUE(item_id)``).
- ``iterations``: loop progress; at most one is running (a partial unique index).
- ``model_versions``, ``meta``: model history, key/value JSON.
- ``leases``: named leases, one row per name while some holder has (or last had) it; a lease
  is live while ``expires_at`` is in the future. ``acquired_at`` is when the current holder
  took it, ``renewed_at`` its last acquire or renew.
- ``job_requests``: jobs asked of the worker through the database (a web process apart from
  the worker writes them); ``taken_by`` / ``taken_at`` once a worker took one.
- ``jobs``: every job a worker ran, with its status, result and (while it runs) the progress
  of its steps, so a web process apart from the worker can show them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def id_type() -> sa.types.TypeEngine[str]:
    """Text compared bytewise (``COLLATE "C"`` on PostgreSQL, SQLite's default), so ordering by
    id is the same on every backend and equals Python's ``sorted``."""
    return sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")


def json_type() -> sa.types.TypeEngine[Any]:
    """JSON; JSONB on PostgreSQL."""
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (a naive value is taken as UTC).

    SQLite has no time zones: the value is stored as naive UTC and read back as aware UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

items = sa.Table(
    "items",
    metadata,
    sa.Column("id", id_type(), primary_key=True),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("split", sa.Text(), nullable=False),
    sa.Column("meta", json_type(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("origin_split", sa.Text(), nullable=False),
    sa.Index(None, "split", "id"),
)

labels = sa.Table(
    "labels",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("item_id", id_type(), sa.ForeignKey("items.id"), nullable=False),
    sa.Column("source", sa.Text(), nullable=False),
    sa.Column("annotation_id", sa.Text(), nullable=False),
    sa.Column("annotator", sa.Text(), nullable=True),
    sa.Column("value", sa.Text(), nullable=True),
    sa.Column("skipped", sa.Boolean(), nullable=False),
    sa.Column("withdrawn", sa.Boolean(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("source", "annotation_id", "item_id"),
    sa.Index(None, "item_id", "withdrawn"),
)

label_events = sa.Table(
    "label_events",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("label_id", sa.Integer(), sa.ForeignKey("labels.id"), nullable=False),
    sa.Column("item_id", id_type(), nullable=False),
    sa.Column("action", sa.Text(), nullable=False),  # "insert" | "update" | "withdraw"
    sa.Column("value", sa.Text(), nullable=True),
    sa.Column("skipped", sa.Boolean(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index(None, "label_id"),
)

label_rejections = sa.Table(
    "label_rejections",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("item_id", id_type(), sa.ForeignKey("items.id"), nullable=False),
    sa.Column("source", sa.Text(), nullable=False),
    sa.Column("annotation_id", sa.Text(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("source", "annotation_id", "item_id"),
    sa.Index(None, "item_id"),
)

iterations = sa.Table(
    "iterations",
    metadata,
    sa.Column("number", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("step", sa.Text(), nullable=False),
    sa.Column("model_version", sa.Text(), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("timings", json_type(), nullable=False),
    sa.Column("info", json_type(), nullable=False),
    # at most one running iteration, enforced by the database (partial unique index)
    sa.Index(
        "uq_iterations_running",
        "status",
        unique=True,
        sqlite_where=sa.text("status = 'running'"),
        postgresql_where=sa.text("status = 'running'"),
    ),
)

queries = sa.Table(
    "queries",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("item_id", id_type(), sa.ForeignKey("items.id"), nullable=False),
    sa.Column("iteration", sa.Integer(), sa.ForeignKey("iterations.number"), nullable=False),
    sa.Column("score", sa.Double(), nullable=False),
    sa.Column("rank", sa.Integer(), nullable=False),
    sa.Column("strategy", sa.Text(), nullable=False),
    sa.Column("model_version", sa.Text(), nullable=True),
    sa.Column("kind", sa.Text(), nullable=False),
    sa.Column("sent", sa.Boolean(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("item_id"),
    sa.Index(None, "iteration"),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", sa.Text(), primary_key=True),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("trainer", sa.Text(), nullable=False),
    sa.Column("path", sa.Text(), nullable=False),
    sa.Column("classes", json_type(), nullable=False),
    sa.Column("n_labels", sa.Integer(), nullable=False),
    sa.Column("label_revision", sa.Integer(), nullable=False),
    sa.Column("metrics", json_type(), nullable=False),
    sa.Column("config", json_type(), nullable=False),
    sa.Column("iteration", sa.Integer(), sa.ForeignKey("iterations.number"), nullable=True),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("seq"),
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.Text(), primary_key=True),
    sa.Column("value", json_type(), nullable=False),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.Text(), primary_key=True),
    sa.Column("holder", sa.Text(), nullable=False),
    sa.Column("acquired_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("renewed_at", UTCDateTime(), nullable=False),
)

job_requests = sa.Table(
    "job_requests",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("kind", sa.Text(), nullable=False),
    sa.Column("source", sa.Text(), nullable=False),
    sa.Column("push", sa.Boolean(), nullable=False),
    sa.Column("requested_at", UTCDateTime(), nullable=False),
    sa.Column("taken_by", sa.Text(), nullable=True),
    sa.Column("taken_at", UTCDateTime(), nullable=True),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("lane", sa.Text(), nullable=False),
    sa.Column("kind", sa.Text(), nullable=False),
    sa.Column("holder", sa.Text(), nullable=False),
    sa.Column("sources", json_type(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("result", json_type(), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("lease_lost", sa.Boolean(), nullable=False),
    sa.Column("progress", json_type(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index(None, "lane", "id"),
    sa.Index(None, "status"),
)

"""Item origin split: ``items.origin_split``, the split an item was imported with.

``assign_split`` moves items (pool items into the ``eval`` sample) but never changes
``origin_split``, so importing the same data again still recognises the moved items. Existing
rows are backfilled with their current split.

SQLite cannot make a column NOT NULL in place, so there ``items`` is rebuilt (batch mode). The
rebuild drops the old table while ``labels``, ``queries`` and ``label_rejections`` point at it,
which SQLite's foreign-key check refuses inside the transaction even though every row finds its
item again in the rebuilt table. Foreign keys are therefore deferred during the rebuild, checked
explicitly afterwards (any dangling reference stops the migration), and enforced again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from loop.errors import StoreError

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the column types in connectors/store/models.py as of this revision.
ID = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def _items(*, with_origin: bool) -> sa.Table:
    """The ``items`` table before (``with_origin=False``) or after this revision; SQLite
    rebuilds from it instead of reflecting the live table (and so works offline too)."""
    columns: list[sa.Column[Any]] = [
        sa.Column("id", ID, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("split", sa.Text(), nullable=False),
        sa.Column("meta", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
    ]
    if with_origin:
        columns.append(sa.Column("origin_split", sa.Text(), nullable=True))
    return sa.Table(
        "items",
        sa.MetaData(),
        *columns,
        sa.PrimaryKeyConstraint("id", name="pk_items"),
        sa.Index("ix_items_split_id", "split", "id"),
    )


@contextmanager
def _foreign_keys_deferred() -> Iterator[None]:
    """On SQLite: defer foreign-key checks while ``items`` is rebuilt, then verify them."""
    sqlite = op.get_context().dialect.name == "sqlite"
    if sqlite:
        op.execute("PRAGMA defer_foreign_keys = ON")
    yield
    if not sqlite:
        return
    if not context.is_offline_mode():
        dangling = op.get_bind().exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if dangling:
            tables = sorted({str(row[0]) for row in dangling})
            raise StoreError(
                f"Expected every row that refers to an item to find it after rebuilding the "
                f"items table; {len(dangling)} point at no item (in {', '.join(tables)}).",
                "restore a backup of the database (it was changed outside alloop); nothing "
                "was migrated.",
            )
    # switching the deferral off also forgets the rebuild's (already checked) drop of items
    op.execute("PRAGMA defer_foreign_keys = OFF")


def upgrade() -> None:
    with op.batch_alter_table("items", copy_from=_items(with_origin=False)) as batch:
        batch.add_column(sa.Column("origin_split", sa.Text(), nullable=True))
    op.execute(sa.text("UPDATE items SET origin_split = split"))
    with (
        _foreign_keys_deferred(),
        op.batch_alter_table("items", copy_from=_items(with_origin=True)) as batch,
    ):
        batch.alter_column("origin_split", existing_type=sa.Text(), nullable=False)


def downgrade() -> None:
    copy = _items(with_origin=True)
    copy.c.origin_split.nullable = False
    with (
        _foreign_keys_deferred(),
        op.batch_alter_table("items", copy_from=copy) as batch,
    ):
        batch.drop_column("origin_split")

"""Label rejections: answers that could not become labels (``label_rejections``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the column types in connectors/store/models.py as of this revision.
ID = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "label_rejections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("item_id", ID, nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("annotation_id", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name="fk_label_rejections_item_id_items"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_label_rejections"),
        sa.UniqueConstraint(
            "source",
            "annotation_id",
            "item_id",
            name="uq_label_rejections_source_annotation_id_item_id",
        ),
    )
    op.create_index("ix_label_rejections_item_id", "label_rejections", ["item_id"])


def downgrade() -> None:
    op.drop_index("ix_label_rejections_item_id", table_name="label_rejections")
    op.drop_table("label_rejections")

"""Initial schema: items, labels, label_events, iterations, queries, model_versions, meta.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Frozen copies of the column types in connectors/store/models.py as of this revision.
ID = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("id", ID, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("split", sa.Text(), nullable=False),
        sa.Column("meta", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_items"),
    )
    op.create_index("ix_items_split_id", "items", ["split", "id"])

    op.create_table(
        "labels",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("item_id", ID, nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("annotation_id", sa.Text(), nullable=False),
        sa.Column("annotator", sa.Text(), nullable=True),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("skipped", sa.Boolean(), nullable=False),
        sa.Column("withdrawn", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name="fk_labels_item_id_items"),
        sa.PrimaryKeyConstraint("id", name="pk_labels"),
        sa.UniqueConstraint(
            "source", "annotation_id", "item_id", name="uq_labels_source_annotation_id_item_id"
        ),
    )
    op.create_index("ix_labels_item_id_withdrawn", "labels", ["item_id", "withdrawn"])

    op.create_table(
        "label_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("label_id", sa.Integer(), nullable=False),
        sa.Column("item_id", ID, nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("skipped", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["label_id"], ["labels.id"], name="fk_label_events_label_id_labels"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_label_events"),
    )
    op.create_index("ix_label_events_label_id", "label_events", ["label_id"])

    op.create_table(
        "iterations",
        sa.Column("number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("step", sa.Text(), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=True),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("timings", JSON, nullable=False),
        sa.Column("info", JSON, nullable=False),
        sa.PrimaryKeyConstraint("number", name="pk_iterations"),
    )
    op.create_index(
        "uq_iterations_running",
        "iterations",
        ["status"],
        unique=True,
        sqlite_where=sa.text("status = 'running'"),
        postgresql_where=sa.text("status = 'running'"),
    )

    op.create_table(
        "queries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("item_id", ID, nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("strategy", sa.Text(), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("sent", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name="fk_queries_item_id_items"),
        sa.ForeignKeyConstraint(
            ["iteration"], ["iterations.number"], name="fk_queries_iteration_iterations"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_queries"),
        sa.UniqueConstraint("item_id", name="uq_queries_item_id"),
    )
    op.create_index("ix_queries_iteration", "queries", ["iteration"])

    op.create_table(
        "model_versions",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("trainer", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("classes", JSON, nullable=False),
        sa.Column("n_labels", sa.Integer(), nullable=False),
        sa.Column("label_revision", sa.Integer(), nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["iteration"], ["iterations.number"], name="fk_model_versions_iteration_iterations"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.UniqueConstraint("seq", name="uq_model_versions_seq"),
    )

    op.create_table(
        "meta",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", JSON, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_meta"),
    )


def downgrade() -> None:
    op.drop_table("meta")
    op.drop_table("model_versions")
    op.drop_index("ix_queries_iteration", table_name="queries")
    op.drop_table("queries")
    op.drop_index("uq_iterations_running", table_name="iterations")
    op.drop_table("iterations")
    op.drop_index("ix_label_events_label_id", table_name="label_events")
    op.drop_table("label_events")
    op.drop_index("ix_labels_item_id_withdrawn", table_name="labels")
    op.drop_table("labels")
    op.drop_index("ix_items_split_id", table_name="items")
    op.drop_table("items")

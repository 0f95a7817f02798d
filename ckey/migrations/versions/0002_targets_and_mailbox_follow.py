"""Target sets (claim checks), per-mailbox follow-up, request fingerprints.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
    op.create_table(
        "target_sets",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "target_items",
        sa.Column("set_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("identity", sa.String(320), nullable=False),
    )
    op.create_table(
        "mailbox_follow",
        sa.Column("operation_id", sa.String(64), primary_key=True),
        sa.Column("identity", sa.String(320), primary_key=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("encrypted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_encrypted", sa.Boolean(), nullable=False),
        sa.Column("dep_guid", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_mailbox_follow_pending", "mailbox_follow", ["operation_id", "encrypted_at"])


def downgrade() -> None:
    op.drop_index("ix_mailbox_follow_pending", "mailbox_follow")
    op.drop_table("mailbox_follow")
    op.drop_table("target_items")
    op.drop_table("target_sets")
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("fingerprint")

"""The inventory's vaults: each vault and its keys as last read, so that ``/api/vaults`` answers from SQL.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inventory_vaults",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(64)),
    )


def downgrade() -> None:
    op.drop_table("inventory_vaults")

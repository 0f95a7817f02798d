"""The SharePoint/OneDrive geos in the inventory: each geo's state, percent, keys and the operation that moved it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spo_geos",
        sa.Column("geo", sa.String(8), primary_key=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("percent", sa.Integer()),
        sa.Column("key_uris", sa.JSON(), nullable=False),
        sa.Column("operation_id", sa.String(64)),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("spo_geos")

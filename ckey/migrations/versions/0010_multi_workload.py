"""The multi-workload inventory: the tenant's multi-workload DEPs and its assignment (``/api/m365/...``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "m365_deps",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("guid", sa.String(64)),
        sa.Column("azure_key_ids", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(64)),
    )
    op.create_table(
        "m365_assignment",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("dep", sa.String(128)),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(64)),
        sa.Column("assigned_at", sa.DateTime(timezone=True)),
        sa.Column("assigned_by", sa.String(64)),
    )


def downgrade() -> None:
    op.drop_table("m365_assignment")
    op.drop_table("m365_deps")

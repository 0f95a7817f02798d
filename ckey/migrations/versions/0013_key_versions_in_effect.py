"""Key rolls: the version of each customer key that each workload's DEP or geo has in effect, as ckey refreshed it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_versions_in_effect",
        sa.Column("workload", sa.String(32), primary_key=True),
        sa.Column("target", sa.String(128), primary_key=True),
        sa.Column("key_id", sa.String(400), primary_key=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("operation_id", sa.String(64)),
    )


def downgrade() -> None:
    op.drop_table("key_versions_in_effect")

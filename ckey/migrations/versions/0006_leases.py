"""Leases: what each running operation holds (mailboxes, a DEP, a vault), so that two operations never fight.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("target", sa.String(400), primary_key=True),
        sa.Column("operation_id", sa.String(64), primary_key=True),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_leases_operation", "leases", ["operation_id"])
    lock = op.create_table(
        "lease_lock",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("generation", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
    )
    op.bulk_insert(lock, [{"id": 1, "generation": 0}])


def downgrade() -> None:
    op.drop_table("lease_lock")
    op.drop_index("ix_leases_operation", table_name="leases")
    op.drop_table("leases")

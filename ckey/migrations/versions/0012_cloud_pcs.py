"""Windows 365: the tenant's Cloud PCs with their disk encryption state, and the tenant's Cloud PC setting.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cloud_pcs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(256)),
        sa.Column("user_principal_name", sa.String(256)),
        sa.Column("managed_device_name", sa.String(256)),
        sa.Column("disk_encryption_state", sa.String(64)),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("operation_id", sa.String(128)),
        sa.Column("batch", sa.Integer()),
        sa.Column("bulk_action_id", sa.String(64)),
        sa.Column("failed", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_cloud_pcs_operation_id", "cloud_pcs", ["operation_id"])
    op.create_table(
        "cloud_pc_tenant",
        sa.Column("key", sa.String(16), primary_key=True),
        sa.Column("tenant_disk_encryption_type", sa.String(64)),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cloud_pc_tenant")
    op.drop_index("ix_cloud_pcs_operation_id", table_name="cloud_pcs")
    op.drop_table("cloud_pcs")

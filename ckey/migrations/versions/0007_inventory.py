"""The inventory: recipients, DEPs and keys as last read, so that reads answer from SQL and never from the tenant.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_AT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "inventory_recipients",
        sa.Column("key", sa.String(320), primary_key=True),
        sa.Column("identity", sa.String(320), nullable=False),
        sa.Column("recipient_type", sa.String(64)),
        sa.Column("user_principal_name", sa.String(320)),
        sa.Column("upn_key", sa.String(320)),
        sa.Column("dep", sa.String(128)),
        sa.Column("dep_key", sa.String(128)),
        sa.Column("dep_guid", sa.String(64)),
        sa.Column("is_encrypted", sa.Boolean()),
        sa.Column("encrypted_with", sa.String(64)),
        sa.Column("status_at", _AT),
        sa.Column("seen_at", _AT, nullable=False),
        sa.Column("updated_at", _AT, nullable=False),
        sa.Column("source", sa.String(64)),
    )
    op.create_index("ix_inventory_recipients_dep", "inventory_recipients", ["dep_key", "key"])
    # A DEP's mailboxes, encrypted or not, a page at a time (the dashboard's commonest filter).
    op.create_index("ix_inventory_recipients_dep_encrypted", "inventory_recipients", ["dep_key", "is_encrypted", "key"])
    op.create_index("ix_inventory_recipients_encrypted", "inventory_recipients", ["is_encrypted", "key"])
    op.create_index("ix_inventory_recipients_upn", "inventory_recipients", ["upn_key"])
    op.create_table(
        "inventory_deps",
        sa.Column("workload", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("guid", sa.String(64)),
        sa.Column("azure_key_ids", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("purge_requested", sa.Boolean(), nullable=False),
        sa.Column("seen_at", _AT, nullable=False),
        sa.Column("source", sa.String(64)),
    )
    op.create_index("ix_inventory_deps_guid", "inventory_deps", ["guid"])
    op.create_table(
        "inventory_keys",
        sa.Column("key_id", sa.String(400), primary_key=True),
        sa.Column("vault", sa.String(64), nullable=False),
        sa.Column("healthy", sa.Boolean()),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column("checked_at", _AT),
        sa.Column("source", sa.String(64)),
    )
    op.create_index("ix_inventory_keys_vault", "inventory_keys", ["vault"])
    op.create_table(
        "inventory_sync",
        sa.Column("scope", sa.String(32), primary_key=True),
        sa.Column("as_of", _AT, nullable=False),
        sa.Column("operation_id", sa.String(64)),
        sa.Column("count", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    for table in ("inventory_sync", "inventory_keys", "inventory_deps", "inventory_recipients"):
        op.drop_table(table)

"""The intent of each state-changing call to a mailbox, so that a crash never hides a call.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ``sent_at`` is set just before the intent is audited and the call sent; a row with it and neither
    # ``assigned_at`` nor ``error`` is a call that was in flight when its worker died: look in the tenant first.
    with op.batch_alter_table("mailbox_follow") as batch:
        batch.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mailbox_follow") as batch:
        batch.drop_column("sent_at")

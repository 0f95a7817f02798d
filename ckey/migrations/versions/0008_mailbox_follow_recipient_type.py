"""What each followed recipient is (mailbox or mail user), and when a mail user showed its DEP.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A mail user (hybrid, not yet migrated) has no mailbox statistics: it is done once Get-MailUser shows the DEP
    # (``migrates_at``) and encrypts at its migration; ``recipient_type`` says which cmdlet reads each row.
    with op.batch_alter_table("mailbox_follow") as batch:
        batch.add_column(sa.Column("recipient_type", sa.String(16), nullable=True))
        batch.add_column(sa.Column("migrates_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mailbox_follow") as batch:
        batch.drop_column("migrates_at")
        batch.drop_column("recipient_type")

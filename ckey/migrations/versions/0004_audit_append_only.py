"""The audit trail made append-only in the database, and its signed checkpoints.

Triggers refuse UPDATE and DELETE (and, on PostgreSQL, TRUNCATE) of ``audit_events`` and ``audit_checkpoints``, for
every role including the owner, who would have to drop them first (which the checkpoints then reveal).

On PostgreSQL the API and the worker connect as an application role (``CKEY_DB_APP_ROLE``, default ``ckey_app``),
not as the owner that runs the migrations. This migration creates that role ``NOLOGIN`` when it does not exist (so
that the grants are always in place; the DBA gives it LOGIN and a password, or grants it to a login role), and
grants it: INSERT and SELECT on the entries and the checkpoints, SELECT and UPDATE on the chain head alone, and
SELECT, INSERT, UPDATE, DELETE on every other table that exists now. ``ALTER DEFAULT PRIVILEGES`` gives it the same
normal rights on the tables that later migrations create (run by the same owner); a later migration that adds an
append-only table must revoke UPDATE and DELETE on it from the role. Creating the role needs CREATEROLE: a
migrating user without it fails here, loudly, until the DBA creates the role.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ckey.config import get_settings

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

APPEND_ONLY = ("audit_events", "audit_checkpoints")


def _app_role() -> str:
    # The setting's pattern (lowercase letters, digits, underscores) makes it safe to quote into DDL.
    return get_settings().db_app_role


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_upgrade()
    else:
        for table in APPEND_ONLY:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                )


def _postgresql_upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION ckey_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ckey_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ckey_append_only()"
        )
    role = _app_role()
    op.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN "
        f'CREATE ROLE "{role}" NOLOGIN; END IF; END $$'
    )
    op.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
    op.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
    op.execute(f'REVOKE ALL ON alembic_version FROM "{role}"')
    op.execute(f'GRANT SELECT ON alembic_version TO "{role}"')
    for table in APPEND_ONLY:
        op.execute(f'REVOKE UPDATE, DELETE ON {table} FROM "{role}"')
    op.execute(f'REVOKE INSERT, DELETE ON audit_head FROM "{role}"')
    op.execute(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    op.execute(f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "{role}"')
    op.execute(f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO "{role}"')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        role = _app_role()
        op.execute(
            f'ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM "{role}"'
        )
        op.execute(f'ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE USAGE, SELECT ON SEQUENCES FROM "{role}"')
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION ckey_append_only()")
        # The role and its rights on the older tables stay: other databases of the cluster may use it.
    else:
        for table in APPEND_ONLY:
            for verb in ("update", "delete"):
                op.execute(f"DROP TRIGGER {table}_no_{verb}")
    op.drop_table("audit_checkpoints")

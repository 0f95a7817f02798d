"""Alembic environment: runs the migrations on the connection that :func:`ckey.store.migrate.upgrade` passes."""

from __future__ import annotations

from alembic import context

from ckey.store.schema import Base

target_metadata = Base.metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `ckey db upgrade` (ckey.store.migrate.upgrade)")
context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

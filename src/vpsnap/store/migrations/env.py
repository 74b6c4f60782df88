"""Alembic environment: runs on the connection handed over by ``vpsnap.store.migrate``."""

from __future__ import annotations

from alembic import context

from vpsnap.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `vpsnap admin db upgrade` or vpsnap.store.migrate")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

"""Alembic environment: runs on the connection handed over by ``vpsnap.store.migrate``."""

from __future__ import annotations

from alembic import context

from vpsnap.store.tables import add_postgresql_options, metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `vpsnap admin db upgrade` or vpsnap.store.migrate")
if connection.dialect.name == "postgresql":
    add_postgresql_options()

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

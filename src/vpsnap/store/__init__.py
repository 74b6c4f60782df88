"""Persistence: SQLAlchemy Core tables, the transaction that implements the domain's store port,
and Alembic migrations. The same code runs on SQLite (embedded) and PostgreSQL (scale-out)."""

"""Alembic environment: runs on the connection cds_service.state.migrate hands over (no alembic.ini)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from cds_service.state.tables import metadata

# Any number: the key of the advisory lock every migrating replica waits on.
_PG_MIGRATION_LOCK = 0x5CD5_0001

connection = context.config.attributes["connection"]
if connection.dialect.name == "postgresql":
    # The service's short per-statement timeouts are for the request path; a migration may wait
    # for the table locks of requests in flight (and for another replica's migration).
    connection.execute(text("SET LOCAL statement_timeout = 0"))
    connection.execute(text("SET LOCAL lock_timeout = '60s'"))
    # Replicas that start together with CDS_DATABASE_AUTO_MIGRATE migrate one after the other:
    # the second finds the schema current (the revision is read after the lock is held).
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()

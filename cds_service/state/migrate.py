"""Schema revisions of the state database (Alembic, scripts in `migrations/`).

`HEAD` is the revision this code reads and writes; tests/state keeps it equal to the scripts' head.
Checking is one read of `alembic_version` (Alembic itself is imported only to migrate):

- SQLite, the embedded default: migrated on the spot when the store opens (`make run` on a fresh
  machine needs no step), under a file lock so that processes starting together migrate once.
- PostgreSQL: `cds-service migrate` (a deploy step, e.g. a Kubernetes Job), or at start with
  CDS_DATABASE_AUTO_MIGRATE; a replica refuses to start on an older schema. Migrations take a
  PostgreSQL advisory lock, so replicas that auto-migrate together migrate once.

A database that has the tables but no `alembic_version` (made by the code before migrations
existed) is adopted: revision 1 creates only what is missing, revision 2 adds what is missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, inspect, text

from cds_service.state import tables
from cds_service.state.db import Database, DatabaseError

log = logging.getLogger(__name__)

REVISIONS = ("0001", "0002")  # oldest first; the scripts in migrations/versions, in order
HEAD = REVISIONS[-1]
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class SchemaTooOld(RuntimeError):
    """The database is at an older revision than this code needs (refuse to start on PostgreSQL)."""


def current(db: Database) -> str | None:
    """The database's revision; None when it was never migrated."""
    with db.engine.connect() as conn:
        return _current(conn)


def _current(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def is_current(revision: str | None) -> bool:
    """At HEAD, or at a revision newer than this code knows (a newer release migrated the shared
    database first: revisions only add, so this code still works on it)."""
    return revision is not None and (revision == HEAD or revision not in REVISIONS)


_in_process = threading.Lock()  # Alembic's `context` is process-global: one migration at a time


def upgrade(db: Database, target: str = HEAD) -> tuple[str | None, str]:
    """Bring the database to `target` (HEAD); returns (revision before, revision after)."""
    with _in_process, _file_lock(db):
        before = current(db)
        if before == target or (target == HEAD and is_current(before)):
            return before, before or HEAD
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with db.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, target)
        return before, current(db) or HEAD


def check(db: Database) -> None:
    """Raise SchemaTooOld when the database needs `cds-service migrate` (DatabaseError when it
    cannot be reached)."""
    revision = current(db)
    if not is_current(revision):
        raise SchemaTooOld(
            f"the state database ({db.redacted}) is at schema revision {revision or 'none'}, this "
            f"version needs {HEAD}: run `cds-service migrate` (or set CDS_DATABASE_AUTO_MIGRATE=true)"
        )


def prepare(db: Database, auto_migrate: bool) -> None:
    """At start. SQLite (embedded): migrate. PostgreSQL: refuse (SchemaTooOld) on an older schema
    unless `auto_migrate`; an unreachable database is logged and the service starts anyway (guidance
    never waits for the database; /readyz reports it)."""
    if db.dialect == "sqlite":
        upgrade(db)
        return
    try:
        if auto_migrate:
            before, after = upgrade(db)
            if before != after:
                log.warning("state database %s migrated from revision %s to %s", db.redacted, before, after)
        else:
            check(db)
    except DatabaseError as exc:
        log.error("state database %s unreachable at start (%s): serving without it until it answers",
                  db.redacted, type(exc).__name__)


UNREACHABLE = "database unreachable"


def problem(db: Database) -> str | None:
    """Readiness: None when the database answers, at a current revision, with every table; else why
    not (a reason starting with UNREACHABLE when it does not answer at all)."""
    try:
        with db.engine.connect() as conn:
            revision = _current(conn)
            present = set(inspect(conn).get_table_names())
    except DatabaseError as exc:
        cause = getattr(exc, "orig", None) or exc  # the driver's error class says more (OperationalError)
        return f"{UNREACHABLE} ({type(cause).__name__})"
    db.mark_up()
    if not is_current(revision):
        return f"database schema at revision {revision or 'none'}, needs {HEAD} (run cds-service migrate)"
    missing = set(tables.metadata.tables) - present
    return f"database schema is missing {sorted(missing)}" if missing else None


@contextlib.contextmanager
def _file_lock(db: Database) -> Iterator[None]:
    """SQLite: one process migrates at a time (a lock file beside the database). PostgreSQL takes
    an advisory lock in the migration's own transaction (migrations/env.py)."""
    if db.path is None:
        yield
        return
    db.path.parent.mkdir(parents=True, exist_ok=True)
    with open(db.path.with_name(db.path.name + ".migrate-lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

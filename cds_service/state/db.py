"""The state database: one SQLAlchemy engine per process on SQLite (embedded) or PostgreSQL.

SQLite (`CDS_FEEDBACK_DB`, the default) is a file beside the service: WAL journal, synchronous=NORMAL
and one connection per thread kept open, because the card index is written on the request path and
a connection opened, fully synced and closed per call cost 5-30 ms. PostgreSQL (`CDS_DATABASE_URL`)
is shared by every replica; its connections are pooled per worker process, with bounded connect and
statement timeouts, and after a failure the process stops trying for DOWN_SECONDS: a dead database
costs a hook call at most one connect timeout, never a hung worker.

gunicorn forks its workers after the app (and so this object) is built: a connection must never be
shared by two processes, so the first use in a new process drops the inherited pool without closing
its connections (they belong to the parent) and opens its own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.pool import NullPool

# What a database failure raises, whatever the backend: SQLAlchemy wraps the driver's errors
# (sqlite3, psycopg) and adds its own (pool timeout). Callers that must not fail on the database
# (guidance, audit) catch this.
DatabaseError = SQLAlchemyError

if TYPE_CHECKING:
    from cds_service.config import Settings

SQLITE_BUSY_SECONDS = 5.0  # a writer waits this long for another process's write lock
# After PostgreSQL could not be reached, this process's calls fail at once for this many seconds
# instead of each waiting out the connect timeout (a hook call makes 3-4): the answer is never
# held back more than one timeout. It is also the Retry-After of the 503s that follow.
DOWN_SECONDS = 5.0


class DatabaseUnavailable(SQLAlchemyError):
    """PostgreSQL failed moments ago (DOWN_SECONDS): not tried again yet."""


class DatabaseConfigError(ValueError):
    """CDS_DATABASE_URL is not a database this service can use."""


@dataclass(frozen=True)
class DatabaseOptions:
    pool_size: int = 2  # kept connections per worker process (sync workers: one request at a time)
    max_overflow: int = 4  # extra connections under concurrent use (threads in one process)
    connect_timeout: float = 2.0  # seconds to open a connection (libpq counts whole seconds, min 2)
    statement_timeout: float = 2.0  # seconds a statement may run on PostgreSQL
    pool_timeout: float = 2.0  # seconds to wait for a free pooled connection


def normalise_url(raw: str) -> URL:
    """`postgresql://` and `postgres://` use psycopg 3; `sqlite:///path` is accepted too."""
    try:
        url = make_url(raw.strip())
    except ArgumentError as exc:
        raise DatabaseConfigError(f"CDS_DATABASE_URL is not a database URL ({type(exc).__name__})") from None
    backend = url.get_backend_name()
    if backend in {"postgresql", "postgres"}:
        if url.get_driver_name() not in {"psycopg", ""} and "+" in url.drivername:
            raise DatabaseConfigError("CDS_DATABASE_URL: only the psycopg (3) driver is supported")
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise DatabaseConfigError("CDS_DATABASE_URL: a SQLite URL needs a file (sqlite:////path/state.db)")
        return url.set(drivername="sqlite")
    raise DatabaseConfigError(
        f"CDS_DATABASE_URL must be postgresql://... or sqlite:///..., not {url.drivername}://"
    )


def redact(url: str | URL) -> str:
    """The URL as it may be printed or logged: the password replaced by ***."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except ArgumentError:
        return "(unparseable URL)"
    return parsed.render_as_string(hide_password=True)


def from_settings(settings: Settings) -> Database:
    """CDS_DATABASE_URL when set, else the SQLite file CDS_FEEDBACK_DB."""
    options = DatabaseOptions(
        pool_size=settings.database_pool_size,
        connect_timeout=settings.database_connect_timeout,
        statement_timeout=settings.database_statement_timeout,
        pool_timeout=settings.database_connect_timeout,
    )
    return Database(settings.database_url or settings.feedback_db, options)


class Database:
    """Where the state lives; `engine` is this process's engine (pooled connections)."""

    def __init__(self, url: str | URL | Path, options: DatabaseOptions | None = None) -> None:
        if isinstance(url, Path):
            url.parent.mkdir(parents=True, exist_ok=True)
            url = URL.create("sqlite", database=str(url))
        self.url = normalise_url(url) if isinstance(url, str) else url
        self.options = options or DatabaseOptions()
        self._lock = threading.Lock()
        self._engines: dict[bool, Engine] = {}  # autocommit? -> this process's engine
        self._pid = os.getpid()
        self._local = threading.local()
        self._down_until = 0.0  # monotonic time until which PostgreSQL is not tried (per process)
        self._inherited: list[Connection] = []  # hot connections of the parent process: never touched
        self._hot: dict[threading.Thread, Connection] = {}  # kept connections of this process's threads
        self._hot_used: dict[threading.Thread, float] = {}  # monotonic time of each one's last use
        self._hot_pid = os.getpid()

    @property
    def dialect(self) -> str:
        return "postgresql" if self.url.get_backend_name() == "postgresql" else "sqlite"

    @property
    def path(self) -> Path | None:
        """The SQLite file; None on PostgreSQL."""
        return Path(self.url.database) if self.dialect == "sqlite" and self.url.database else None

    @property
    def redacted(self) -> str:
        return redact(self.url)

    @property
    def engine(self) -> Engine:
        """This process's engine (transactions; reads through `cds_service.state.tables`)."""
        return self._engine(autocommit=False)

    def _engine(self, autocommit: bool) -> Engine:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    # Forked: forget the parent's pooled connections without closing them under it.
                    for inherited in self._engines.values():
                        inherited.dispose(close=False)
                    self._pid = os.getpid()
        engine = self._engines.get(autocommit)
        if engine is None:
            with self._lock:
                engine = self._engines.get(autocommit)
                if engine is None:
                    engine = self._engines[autocommit] = self._create(autocommit)
        return engine

    @contextmanager
    def begin(self, durable: bool = False) -> Iterator[Connection]:
        """A connection in a transaction: committed on success, rolled back on error.

        PostgreSQL sessions commit asynchronously (synchronous_commit=off, set at connect): the
        card index, audit rows and jti values written on the request path do not wait for the
        server's WAL flush, like SQLite's synchronous=NORMAL; a crash of the server may lose the
        last fraction of a second of them, never corrupt or reorder. Other sessions see a commit
        at once either way, so a jti is refused on every replica as soon as it is stored.
        `durable`: wait for the flush (feedback, the governance record)."""
        with self.connect() as conn, conn.begin():
            if durable and self.dialect == "postgresql":
                conn.exec_driver_sql("SET LOCAL synchronous_commit = on")
            yield conn

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A connection for statements that are each atomic on their own (an idempotent insert,
        one lookup): no transaction is needed around them.

        On PostgreSQL each commits by itself (autocommit): one round trip per statement instead
        of BEGIN, the statements and COMMIT, for the writes and the lookup of every hook call.
        On SQLite they share one short transaction on the thread's connection (one commit)."""
        if self.dialect == "sqlite":
            kept = self._kept()
            with kept.begin():
                yield kept
            return
        # a pool of connections kept in autocommit mode: switching a pooled connection to it
        # and back costs round trips of its own (SET SESSION CHARACTERISTICS ...)
        with self._pooled(autocommit=True) as pooled:
            yield pooled

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection of this thread and process. SQLite: the thread's own, kept open between
        calls (a pool checkout and reset per call cost about as much as the write itself); on
        PostgreSQL one from the pool (pinged first after an idle spell), returned after."""
        if self.dialect != "sqlite":
            with self._pooled() as pooled:
                yield pooled
            return
        kept = self._kept()
        try:
            yield kept
        finally:
            if kept.in_transaction():  # a read left its implicit transaction open: end it
                kept.rollback()

    @contextmanager
    def hot(self) -> Iterator[Any]:
        """PostgreSQL, the hook path: this thread's psycopg connection (autocommit), kept checked
        out between calls, for statements compiled once to SQL text (`compiled`).

        A pool checkout and return, SQLAlchemy's statement handling and one round trip per
        statement cost about 1 ms per hook call over SQLite; here the caller sends its statements
        in one pipeline (one round trip). Same rules as the pool: nothing is tried within
        DOWN_SECONDS of a failure; a connection idle longer than PING_AFTER_IDLE_SECONDS is pinged
        first; a broken one is dropped (and the database marked down). Driver errors are raised
        as SQLAlchemy's DBAPIError, like every other path (callers catch DatabaseError)."""
        if time.monotonic() < self._down_until:
            raise DatabaseUnavailable("the state database could not be reached a moment ago")
        conn, kept = self._hot_connection()
        dbapi: Any = conn.connection.dbapi_connection  # psycopg.Connection
        try:
            yield dbapi
        except Exception as exc:
            if not isinstance(exc, _driver_error()):
                raise
            broken = bool(dbapi.closed or dbapi.broken)
            if broken:  # the server went away under the statement
                conn.invalidate()
                self.mark_down()
            raise DBAPIError.instance(None, None, exc, _driver_error(), hide_parameters=True,
                                      connection_invalidated=broken) from exc
        finally:
            if kept:
                self._hot_used[threading.current_thread()] = time.monotonic()
            else:
                conn.close()  # back to the pool

    def _hot_connection(self) -> tuple[Connection, bool]:
        """This thread's kept connection, or (more threads than pool_size) one from the pool for
        this call only: kept connections hold pool slots, so at most pool_size are kept; those of
        threads that ended are closed when a slot is wanted."""
        me = threading.current_thread()
        if self._hot_pid != os.getpid():
            with self._lock:
                if self._hot_pid != os.getpid():
                    # forked: the parent's connections are neither used nor closed (nor collected,
                    # which would reset them on the parent's sockets)
                    self._inherited.extend(self._hot.values())
                    self._hot, self._hot_used, self._hot_pid = {}, {}, os.getpid()
        conn = self._hot.get(me)
        if conn is not None and (conn.closed or conn.invalidated or not self._alive(conn, me)):
            self._drop_hot(me)
            conn = None
        if conn is not None:
            return conn, True
        try:
            conn = self._engine(autocommit=True).connect()
        except DatabaseError:
            self.mark_down()
            raise
        with self._lock:
            if len(self._hot) >= self.options.pool_size:
                for thread in [t for t in self._hot if not t.is_alive()]:
                    self._drop_hot(thread)
            if len(self._hot) >= self.options.pool_size:
                return conn, False
            self._hot[me], self._hot_used[me] = conn, time.monotonic()
        return conn, True

    def _alive(self, conn: Connection, thread: threading.Thread) -> bool:
        """Used within PING_AFTER_IDLE_SECONDS, or answers a ping (see _ping_when_idle)."""
        if time.monotonic() - self._hot_used.get(thread, 0.0) < PING_AFTER_IDLE_SECONDS:
            return True
        try:
            dbapi: Any = conn.connection.dbapi_connection
            return bool(conn.dialect.do_ping(dbapi))
        except Exception:  # the driver's error, whatever it is: the connection is unusable
            return False

    def _drop_hot(self, thread: threading.Thread) -> None:
        conn = self._hot.pop(thread, None)
        self._hot_used.pop(thread, None)
        if conn is not None and not conn.closed:
            with suppress(DatabaseError):  # a connection already broken: nothing to give back
                conn.close()  # back to the pool (an invalidated one is discarded)

    def compiled(self, statement: Any, keys: Iterable[str] | None = None) -> str:
        """A Core statement as this database's SQL text with named parameters (`hot`)."""
        dialect = self._engine(autocommit=True).dialect
        return str(statement.compile(dialect=dialect, column_keys=list(keys) if keys else None))

    def _kept(self) -> Connection:
        """SQLite: this thread's connection in this process, opened on first use."""
        local, pid = self._local, os.getpid()
        if getattr(local, "pid", None) != pid or local.conn.closed:
            local.conn, local.pid = self.engine.connect(), pid
        kept: Connection = local.conn
        return kept

    @contextmanager
    def _pooled(self, autocommit: bool = False) -> Iterator[Connection]:
        """A pooled PostgreSQL connection, unless the database failed within DOWN_SECONDS."""
        if time.monotonic() < self._down_until:
            raise DatabaseUnavailable("the state database could not be reached a moment ago")
        try:
            conn = self._engine(autocommit).connect()
        except DatabaseError:
            self.mark_down()
            raise
        with conn:
            try:
                yield conn
            except DBAPIError as exc:
                if exc.connection_invalidated:  # the server went away under the statement
                    self.mark_down()
                raise

    def mark_down(self) -> None:
        self._down_until = time.monotonic() + DOWN_SECONDS

    def mark_up(self) -> None:
        """The database answered (a readiness probe): calls need not wait for DOWN_SECONDS."""
        self._down_until = 0.0

    def dispose(self) -> None:
        """Close this process's pooled connections (tests, shutdown)."""
        if self._pid == os.getpid():
            if self._hot_pid == os.getpid():
                for thread in list(self._hot):
                    self._drop_hot(thread)
            for engine in self._engines.values():
                engine.dispose()

    def _create(self, autocommit: bool) -> Engine:
        o = self.options
        if self.dialect == "sqlite":
            # No pool: each thread keeps its own connection (connect()), opened once.
            engine = create_engine(
                self.url, poolclass=NullPool, hide_parameters=True,
                connect_args={"timeout": SQLITE_BUSY_SECONDS, "check_same_thread": False},
            )
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        statement_ms = max(1, round(o.statement_timeout * 1000))
        engine = create_engine(
            self.url,
            # error messages (logged) show the SQL, never the values: no row content in the log
            hide_parameters=True,
            isolation_level="AUTOCOMMIT" if autocommit else "READ COMMITTED",
            pool_size=o.pool_size,
            max_overflow=o.max_overflow,
            pool_timeout=o.pool_timeout,
            pool_recycle=1800,
            connect_args={
                "connect_timeout": max(2, round(o.connect_timeout)),
                # a server that vanishes mid-call (host down, network cut) is given up on after
                # about these seconds, not the minutes of the kernel's TCP retransmissions
                "tcp_user_timeout": round((o.connect_timeout + o.statement_timeout) * 1000),
                "keepalives": 1,
                "keepalives_idle": max(1, round(o.statement_timeout)),
                "keepalives_interval": 1,
                "keepalives_count": 2,
                "options": f"-c statement_timeout={statement_ms} -c lock_timeout={statement_ms}"
                " -c synchronous_commit=off",
                "application_name": "cds-service",
            },
        )
        _ping_when_idle(engine)
        return engine


PING_AFTER_IDLE_SECONDS = 5.0


def _ping_when_idle(engine: Engine) -> None:
    """A pooled connection idle for a while is pinged before use and replaced if the server dropped
    it (restart, failover, idle timeout), so the first call after a quiet spell does not fail.

    SQLAlchemy's pool_pre_ping pings on every checkout: a round trip before each of the 3-4
    transactions of a hook call (+~0.2 ms per call). A connection used within the last seconds is
    taken as alive; if the server went away meanwhile, that one call's write fails (logged; 503 for
    feedback and JWT checks) and SQLAlchemy invalidates the whole pool, so the next call reconnects.
    """

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is None or time.monotonic() - returned_at < PING_AFTER_IDLE_SECONDS:
            return  # new, or used a moment ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the driver's error, whatever it is: the connection is unusable
            raise DisconnectionError("pooled connection is gone") from exc
        if not alive:
            raise DisconnectionError("pooled connection is gone")


def _driver_error() -> type[Exception]:
    import psycopg  # only where PostgreSQL is used

    return psycopg.Error


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer and survives a crash of the process; NORMAL syncs at
    # checkpoints, not at each commit (a power loss may lose the last transactions, not corrupt).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()

"""The governance view reads the same figures from PostgreSQL as from SQLite: one history written
through the store's write path into both, every dashboard table compared under several filters."""

from __future__ import annotations

from datetime import date

import pytest

from cds_service.governance.queries import READ_STATEMENT_TIMEOUT_SECONDS, Filters, build, reading
from cds_service.protocol import feedback as feedback_module
from cds_service.protocol.feedback import FeedbackStore
from cds_service.state import migrate
from cds_service.state.db import Database
from tests.governance import history as h
from tests.governance.conftest import Clock


def _filled(url: str, monkeypatch: pytest.MonkeyPatch) -> FeedbackStore:
    clock = Clock()
    monkeypatch.setattr(feedback_module, "_now", clock)
    db = Database(url)
    migrate.upgrade(db)
    store = FeedbackStore(db)
    h.write(store, clock, h.make())
    return store


def test_every_dashboard_table_is_the_same_on_both_databases(pg_url, tmp_path, monkeypatch):
    sqlite = _filled(f"sqlite:///{tmp_path / 'state.sqlite3'}", monkeypatch)
    postgresql = _filled(pg_url, monkeypatch)
    for filters in (Filters(), Filters(start=date(2026, 11, 8), end=date(2026, 11, 20)),
                    Filters(service=h.SELECT), Filters(start=date(2026, 11, 21))):
        expected = build(sqlite.engine, filters)
        assert any(expected.values())
        assert build(postgresql.engine, filters) == expected


TIMEOUT_MS = "SELECT setting FROM pg_settings WHERE name = 'statement_timeout'"


def test_dashboard_reads_get_the_long_statement_timeout_and_the_hook_path_keeps_the_short_one(pg_url):
    """CDS_DATABASE_STATEMENT_TIMEOUT (here 2 s) bounds the hook path; a dashboard read scans far more
    rows, so its transaction runs under READ_STATEMENT_TIMEOUT_SECONDS, and only its transaction."""
    db = Database(pg_url)
    migrate.upgrade(db)
    store = FeedbackStore(db)
    with reading(store.engine) as conn:
        assert conn.exec_driver_sql(TIMEOUT_MS).scalar() == str(READ_STATEMENT_TIMEOUT_SECONDS * 1000)
        # a statement longer than the hook path's timeout completes in a dashboard read
        conn.exec_driver_sql("SELECT pg_sleep(2.2)")
    with store.engine.connect() as conn:  # the same pooled connection, after the read: back to 2 s
        assert conn.exec_driver_sql(TIMEOUT_MS).scalar() == "2000"
    with db.hot() as conn, conn.cursor() as cur:  # the hook path's kept connection
        cur.execute(TIMEOUT_MS)
        assert cur.fetchone() == ("2000",)
    assert build(store.engine, Filters()) is not None
    db.dispose()

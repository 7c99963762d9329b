"""The governance view reads the same figures from PostgreSQL as from SQLite: one history written
through the store's write path into both, every dashboard table compared under several filters."""

from __future__ import annotations

from datetime import date

import pytest

from cds_service.governance.queries import Filters, build
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

"""The dashboard bench fills a database through the store's write path and renders /admin/ on it."""

from bench import dashboard
from cds_service.governance.queries import Filters, build
from cds_service.protocol.feedback import FeedbackStore


def test_the_fill_writes_what_it_says(tmp_path):
    db = tmp_path / "state.sqlite3"
    written = dashboard.fill(db, cards=400, feedback=90, days=12)
    assert written["cards"] == 400 and written["feedback"] == 90 and written["audit"] >= 400 // 3
    tables = build(FeedbackStore(db).engine, Filters())
    assert sum(r["cards"] for r in tables["weekly"]) == 400
    assert sum(r["accepted"] + r["overridden"] + r["dismissed"] for r in tables["weekly"]) == 90
    assert len(tables["weekly"]) >= 2  # spread over days, not all at once


def test_the_bench_prints_its_table(tmp_path, capsys):
    assert dashboard.main(["--cards", "300", "--feedback", "50", "--days", "5", "--rounds", "1",
                           "--db", str(tmp_path / "state.sqlite3")]) == 0
    out = capsys.readouterr().out
    assert "300 cards, 50 feedback items" in out and "| whole history |" in out

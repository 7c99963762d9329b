"""The governance queries against a store filled through its real write path; every figure is
compared with the same figure counted here from the history that was written (tests/governance/history.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from cds_service.governance.queries import TABLES, FilterError, Filters, build, parse_filters
from cds_service.protocol.discovery import SERVICES
from cds_service.protocol.feedback import AuditEntry, FeedbackStore

from . import history as h
from .conftest import Clock

SERVICE_IDS = [s.id for s in SERVICES]


@pytest.fixture
def store(tmp_path: Path) -> FeedbackStore:
    return FeedbackStore(tmp_path / "state.sqlite3")


@pytest.fixture
def written(store: FeedbackStore, clock: Clock) -> h.History:
    past = h.make()
    h.write(store, clock, past)
    return past


def as_dict(rows: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), "a key appears twice"
    return {str(r["key"]): {k: v for k, v in r.items() if k not in ("key", "display")} for r in rows}


FILTERS = [
    Filters(),
    Filters(start=date(2026, 11, 8), end=date(2026, 11, 20)),
    Filters(start=date(2026, 11, 10)),
    Filters(end=date(2026, 11, 8), service=h.SIGN),
    Filters(service=h.SELECT),
    Filters(start=date(2026, 11, 21), end=date(2026, 11, 30)),  # no data at all
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: f"{f.start}..{f.end}/{f.service}")
def test_every_table_equals_the_counts_of_the_written_history(store, written, filters):
    got = build(store.engine, filters)
    want = h.expected(written, filters.start, filters.end, filters.service)
    assert set(got) == {t.name for t in TABLES}
    for name in got:
        assert as_dict(got[name]) == want[name], name


def test_the_history_exercises_every_table(store, written):
    # a test over empty tables could not fail: the unfiltered history fills each of them
    got = build(store.engine, Filters())
    assert all(got[t.name] for t in TABLES)
    rules = as_dict(got["rules"])
    assert any(r["accepted"] and r["overridden"] and r["dismissed"] for r in rules.values())
    share = as_dict(got["rated-share"])
    assert all(share[k]["orders"] for k in h.expected(written)["rated-share"])


def test_a_single_table_is_the_same_as_in_the_whole_page(store, written):
    whole = build(store.engine, Filters())
    for t in TABLES:
        assert build(store.engine, Filters(), [t.name]) == {t.name: whole[t.name]}


def test_rows_are_ranked_and_weeks_in_order(store, written):
    got = build(store.engine, Filters())
    counts = [r["count"] for r in got["missing-facts"]]
    assert counts == sorted(counts, reverse=True)
    weeks = [r["key"] for r in got["weekly"]]
    assert weeks == sorted(weeks) and weeks[0] == "2026-W45" and weeks[-1] == "2026-W49"
    assert [r["key"] for r in got["rated-share"]] == ["appropriate", "not-appropriate", "no-criteria",
                                                      "not-rated"]


def test_override_reason_rows_carry_the_coded_display_never_a_comment(store, written):
    rows = build(store.engine, Filters())["override-reasons"]
    assert {r["display"] for r in rows} <= {d for _, _, d in h.REASONS}
    dumped = repr(build(store.engine, Filters()))
    assert "free text" not in dumped and "hook-" not in dumped and "card-" not in dumped


def test_audit_rows_written_before_orders_were_counted_never_give_a_negative_share(store, clock):
    # an audit row from before this release: orders 0 but a rating (rated > orders)
    store.audit(AuditEntry(h.SELECT, "old", "order-select", "1", (), ({"pama": "appropriate"},), (), 0, None))
    share = {r["key"]: r for r in build(store.engine, Filters())["rated-share"]}
    assert share["not-rated"]["orders"] == 0
    assert share["appropriate"]["orders"] == 1 and share["appropriate"]["share"] == 100.0


def test_a_card_in_range_counts_its_feedback_whenever_it_arrived(store, clock):
    clock.set("2026-11-02T10:00:00")
    store.index_cards(h.SELECT, "h1", {"c1": {"rule_id": "r1", "procedure_id": "p1", "indicator": "info"}})
    clock.set("2026-11-30T10:00:00")
    from cds_service.protocol.feedback import FeedbackItem
    store.record(h.SELECT, [FeedbackItem("c1", "accepted", "2026-11-30T10:00:00Z", ("s",))])
    in_range = build(store.engine, Filters(start=date(2026, 11, 1), end=date(2026, 11, 2)))
    assert in_range["rules"][0]["accepted"] == 1
    later = build(store.engine, Filters(start=date(2026, 11, 3)))
    assert later["rules"] == []


@pytest.mark.parametrize("args, message", [
    ({"from": "2026-11-31"}, "from must be a date"),
    ({"to": "yesterday"}, "to must be a date"),
    ({"from": "2026-1-01"}, "from must be a date"),
    ({"from": "2026-11-20", "to": "2026-11-01"}, "is after"),
    ({"service": "nope"}, "service must be"),
])
def test_bad_filter_values_are_refused(args, message):
    with pytest.raises(FilterError, match=message):
        parse_filters(args, SERVICE_IDS)


def test_filters_parse_and_round_trip():
    f = parse_filters({"from": "2026-11-01", "to": "2026-11-30", "service": h.SIGN}, SERVICE_IDS)
    assert f == Filters(date(2026, 11, 1), date(2026, 11, 30), h.SIGN)
    assert parse_filters(f.query(), SERVICE_IDS) == f
    assert parse_filters({"service": "all", "from": ""}, SERVICE_IDS) == Filters()

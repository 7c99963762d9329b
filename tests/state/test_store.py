"""The state store on both databases: feedback, card index, snooze, audit, retention, jti replay.

Every test runs on a SQLite file and on a real PostgreSQL database (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text, update

from cds_service.protocol.auth import DatabaseReplayCache
from cds_service.protocol.feedback import AuditEntry, FeedbackStore, parse_feedback
from cds_service.protocol.snooze import CardSubject
from cds_service.state import migrate
from cds_service.state import tables as t
from cds_service.state.db import Database, DatabaseError

SERVICE = "imaging-appropriateness"
META = {"rule_id": "prostate-mhspc-bone-scan", "scenario_id": "prostate-metastatic-systemic-therapy",
        "knowledge_version": "2026.11", "procedure_id": "bone-scan-whole-body", "indicator": "warning"}
SUBJECT = CardSubject("hmac-of-patient", "http://loinc.org|24627-2", "prostate-mhspc-bone-scan", "v1")


def database(url: str) -> Database:
    db = Database(url)
    migrate.upgrade(db)
    return db


@pytest.fixture
def store(state_url: str) -> FeedbackStore:
    return FeedbackStore(database(state_url))


def accepted(card: str, ts: str = "2026-11-22T10:00:00Z") -> dict:
    return {"card": card, "outcome": "accepted", "acceptedSuggestions": [{"id": "s-1"}],
            "outcomeTimestamp": ts}


def overridden(card: str, ts: str = "2026-11-22T10:00:00Z") -> dict:
    reason = {"system": "http://example.org/reasons", "code": "patient-preference"}
    return {"card": card, "outcome": "overridden", "outcomeTimestamp": ts,
            "overrideReason": {"reason": reason}}


def items(*raw: dict) -> list:
    return parse_feedback({"feedback": list(raw)})


def test_feedback_on_an_issued_card_is_stored_once_and_linked_to_its_rule(store):
    store.index_cards(SERVICE, "hook-1", {"card-1": META})
    store.index_cards(SERVICE, "hook-1", {"card-1": {**META, "rule_id": "changed"}})  # a repeat is ignored
    first = store.record(SERVICE, items(accepted("card-1"), accepted("never-issued")), client_iss="https://ehr")
    again = store.record(SERVICE, items(accepted("card-1")))
    assert (first.stored, first.unknown) == (1, 1)
    assert (again.stored, again.unknown) == (0, 0)
    (row,) = store.rows()
    assert {k: row[k] for k in ("rule_id", "scenario_id", "knowledge_version", "procedure_id")} == {
        k: META[k] for k in ("rule_id", "scenario_id", "knowledge_version", "procedure_id")}
    assert row["client_iss"] == "https://ehr" and row["outcome"] == "accepted"
    assert json.loads(row["accepted_suggestions"]) == ["s-1"]
    with store.db.connect() as db:
        assert db.execute(select(t.card_index.c.indicator)).scalar() == "warning"


def test_feedback_names_only_cards_of_its_own_service(store):
    store.index_cards("imaging-appropriateness-sign", "hook-1", {"card-1": META})
    assert store.record(SERVICE, items(accepted("card-1"))).unknown == 1
    assert store.rows() == []


def test_comments_are_kept_only_when_configured(state_url):
    db = database(state_url)
    item = overridden("card-1")
    item["overrideReason"]["userComment"] = "discussed with the patient"
    for keep, expected in ((False, None), (True, "discussed with the patient")):
        feedback = FeedbackStore(db, store_comments=keep)
        card = f"card-{keep}"
        feedback.index_cards(SERVICE, "hook", {card: META})
        feedback.record(SERVICE, items({**item, "card": card}))
        (row,) = [r for r in feedback.rows() if r["card_uuid"] == card]
        assert row["has_comment"] == 1 and row["user_comment"] == expected


def test_an_override_snoozes_and_a_later_one_moves_the_snooze_forward_never_back(store):
    store.index_cards(SERVICE, "hook-1", {"card-1": META}, {"card-1": SUBJECT}, at=1000.0)
    assert store.record(SERVICE, items(accepted("card-1")), snooze_at=1100.0).snoozed == 0  # accepted: no
    assert store.snoozed([SUBJECT], since=0.0) == set()
    assert store.record(SERVICE, items(overridden("card-1")), snooze_at=1200.0).snoozed == 1
    assert store.snoozed([SUBJECT], since=1200.0) == {SUBJECT}
    # a repeat of the same item does not extend it; an older time does not move it back
    assert store.record(SERVICE, items(overridden("card-1")), snooze_at=5000.0).snoozed == 0
    store.record(SERVICE, items(overridden("card-1", ts="2026-11-22T09:00:00Z")), snooze_at=1150.0)
    assert store.snoozed([SUBJECT], since=1200.0) == {SUBJECT}
    store.record(SERVICE, items(overridden("card-1", ts="2026-11-22T11:00:00Z")), snooze_at=3000.0)
    assert store.snoozed([SUBJECT], since=2999.0) == {SUBJECT}
    other = SUBJECT._replace(verdict="v2")
    assert store.snoozed([SUBJECT, other], since=0.0) == {SUBJECT}
    with store.db.connect() as db:
        assert db.execute(select(func.count()).select_from(t.snooze)).scalar() == 1


def test_prune_forgets_expired_snoozes_and_old_subjects(store):
    store.index_cards(SERVICE, "hook-1", {"card-1": META}, {"card-1": SUBJECT}, at=1000.0)
    store.record(SERVICE, items(overridden("card-1")), snooze_at=1000.0)
    store.prune(snoozed_before=999.0, subjects_before=999.0)
    assert store.snoozed([SUBJECT], since=0.0) == {SUBJECT}
    store.prune(snoozed_before=1001.0, subjects_before=1001.0)
    assert store.snoozed([SUBJECT], since=0.0) == set()
    with store.db.connect() as db:
        assert db.execute(select(func.count()).select_from(t.card_subject)).scalar() == 0


def test_audit_rows_keep_every_field(store):
    entry = AuditEntry(SERVICE, "hook-1", "order-select", "2026.11", ("rule-a", "rule-b"),
                       ({"pama": "appropriate", "category": "usually-appropriate"},), ("card-1",), 3,
                       "https://ehr", site_config_version="site-7", orders=2, missing_facts=("psa",),
                       unreadable=("egfr",), unknown_codes=("http://loinc.org|0000-0",))
    store.audit(entry)
    (row,) = store.audit_rows()
    assert row["hook_instance"] == "hook-1" and row["fhir_calls"] == 3 and row["orders"] == 2
    assert json.loads(row["rule_ids"]) == ["rule-a", "rule-b"]
    assert json.loads(row["ratings"])[0]["pama"] == "appropriate"
    assert row["site_config_version"] == "site-7"
    assert [json.loads(row[k]) for k in ("missing_facts", "unreadable", "unknown_codes")] == [
        ["psa"], ["egfr"], ["http://loinc.org|0000-0"]]
    assert row["at"][:10] == datetime.now(UTC).date().isoformat()


def test_retention_prunes_by_age_and_keeps_feedback(store):
    store.index_cards(SERVICE, "old", {"old-card": META}, {"old-card": SUBJECT}, at=time.time() - 500 * 86400)
    store.index_cards(SERVICE, "new", {"new-card": META})
    store.record(SERVICE, items(accepted("old-card")))
    for hook in ("old", "new"):
        store.audit(AuditEntry(SERVICE, hook, "order-select", "v", (), (), (), 0, None))
    old = (datetime.now(UTC) - timedelta(days=500)).isoformat(timespec="milliseconds")
    with store.db.begin() as db:
        db.execute(update(t.audit).where(t.audit.c.hook_instance == "old").values(at=old))
        db.execute(update(t.card_index).where(t.card_index.c.card_uuid == "old-card").values(created_at=old))
    assert store.prune_older_than(400) == {"audit": 1, "card_index": 1, "card_subject": 1}
    assert [r["hook_instance"] for r in store.audit_rows()] == ["new"]
    assert len(store.rows()) == 1  # feedback is the record: kept
    assert store.record(SERVICE, items(accepted("old-card", ts="2026-11-23T10:00:00Z"))).unknown == 1


def test_jti_is_accepted_once_per_issuer_and_expired_rows_are_pruned(state_url):
    replay = DatabaseReplayCache(database(state_url))
    soon = time.time() + 300
    assert replay.first_use("https://a", "jti-1", soon)
    assert not replay.first_use("https://a", "jti-1", soon)
    assert replay.first_use("https://b", "jti-1", soon)  # the pair is the key
    assert replay.first_use("https://a", "expired", time.time() - 1)
    assert replay.first_use("https://a", "expired", soon)  # an expired entry is taken over...
    assert not replay.first_use("https://a", "expired", soon)  # ...and then live again
    assert replay.first_use("https://a", "gone", time.time() - 1)
    assert replay.prune() == 1
    with replay.db.connect() as db:
        assert db.execute(select(func.count()).select_from(t.seen_jti)).scalar() == 3


def test_exactly_one_of_concurrent_uses_of_a_jti_passes_across_processes_pools(state_url):
    """Two Database objects (two replicas' pools) and 16 threads race on one jti."""
    replicas = [DatabaseReplayCache(database(state_url)) for _ in range(2)]
    exp = time.time() + 300
    def use(n: int, jti: str, start: threading.Barrier, results: list[bool]) -> None:
        start.wait()
        results.append(replicas[n % 2].first_use("https://ehr", jti, exp))

    for round_ in range(5):
        start = threading.Barrier(16)
        results: list[bool] = []
        threads = [threading.Thread(target=use, args=(n, f"race-{round_}", start, results))
                   for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == [False] * 15 + [True]


def test_a_forked_worker_uses_its_own_connections(state_url):
    store = FeedbackStore(database(state_url))
    store.index_cards(SERVICE, "hook", {"card-1": META})
    replay = DatabaseReplayCache(store.db)
    assert replay.first_use("https://ehr", "parent", time.time() + 300)
    pid = os.fork()
    if pid == 0:  # like a gunicorn worker forked after the app was built
        ok = (store.record(SERVICE, items(accepted("card-1"))).stored == 1
              and not replay.first_use("https://ehr", "parent", time.time() + 300))
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(store.rows()) == 1
    assert replay.first_use("https://ehr", "after-fork", time.time() + 300)  # the parent's pool still works


def test_ready_reports_a_missing_table(store):
    assert store.ready() is None
    with store.db.begin() as db:
        db.execute(text("DROP TABLE snooze"))
    assert "snooze" in (store.ready() or "")


def test_ready_reports_an_old_schema(store):
    with store.db.begin() as db:
        db.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    assert "cds-service migrate" in (store.ready() or "")


def test_database_errors_carry_no_row_values_into_the_log(store):
    with store.db.begin() as db:
        db.execute(text("DROP TABLE card_index"))
    with pytest.raises(DatabaseError) as failed:
        store.index_cards(SERVICE, "hook-7f3a", {"card-7f3a": META})
    assert "INSERT INTO card_index" in str(failed.value)  # the statement is named...
    assert "7f3a" not in str(failed.value)  # ...its values are not

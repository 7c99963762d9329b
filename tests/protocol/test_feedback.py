import os
import sqlite3
import threading

import pytest
from sqlalchemy import func, select

from cds_service.model import EngineResult
from cds_service.protocol.feedback import FeedbackStore, parse_feedback
from cds_service.state.tables import card_index

from .conftest import BASE, full_prefetch, hook_request

FEEDBACK = "/cds-services/imaging-appropriateness/feedback"
CARD = "7c1c1bde-0b2b-4c6f-9f0a-2f1f5a3c0001"
SUGGESTION = "7c1c1bde-0b2b-4c6f-9f0a-2f1f5a3c0002"


def accepted(card=CARD, ts="2026-11-22T10:00:00.52Z"):
    return {"card": card, "outcome": "accepted", "acceptedSuggestions": [{"id": SUGGESTION}],
            "outcomeTimestamp": ts}


def overridden(card=CARD, **reason):
    item = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-22T10:01:00Z"}
    if reason:
        item["overrideReason"] = reason
    return item


def without(item, key):
    return {k: v for k, v in item.items() if k != key}


def store(app) -> FeedbackStore:
    return app.extensions["cds"].feedback


@pytest.fixture
def issued(settings):
    """CARD and "c2" are cards this service answered with: only such feedback is stored."""
    FeedbackStore(settings.feedback_db).index_cards(
        "imaging-appropriateness", "hook-1", {CARD: {"rule_id": "r"}, "c2": {"rule_id": "r"}}
    )


def test_accepted_feedback_is_stored(app, client, issued):
    response = client.post(FEEDBACK, json={"feedback": [accepted()]})
    assert response.status_code == 200
    rows = store(app).rows()
    assert len(rows) == 1
    assert rows[0]["card_uuid"] == CARD and rows[0]["outcome"] == "accepted"
    assert SUGGESTION in rows[0]["accepted_suggestions"]


def test_repeats_are_idempotent(app, client, issued):
    for _ in range(3):
        assert client.post(FEEDBACK, json={"feedback": [accepted(), accepted()]}).status_code == 200
    assert len(store(app).rows()) == 1
    client.post(FEEDBACK, json={"feedback": [overridden(reason={"system": "s", "code": "c"})]})
    assert len(store(app).rows()) == 2


def test_feedback_survives_a_restart(make_app, settings, issued):
    make_app().test_client().post(FEEDBACK, json={"feedback": [accepted()]})
    assert len(FeedbackStore(settings.feedback_db).rows()) == 1


def test_sandbox_override_without_display_is_accepted(app, client, issued):
    item = overridden(reason={"code": "not-relevant", "system": "http://example.org/reasons"})
    assert client.post(FEEDBACK, json={"feedback": [item]}).status_code == 200
    assert store(app).rows()[0]["override_code"] == "not-relevant"


def test_comments_are_not_stored_by_default(app, client, make_app, issued):
    client.post(FEEDBACK, json={"feedback": [overridden(userComment="pt John Doe refused")]})
    row = store(app).rows()[0]
    assert row["has_comment"] == 1 and row["user_comment"] is None
    opted_in = make_app(feedback_store_comments=True)
    opted_in.test_client().post(FEEDBACK, json={"feedback": [overridden(card="c2", userComment="ok")]})
    assert [r["user_comment"] for r in store(opted_in).rows() if r["card_uuid"] == "c2"] == ["ok"]


def test_feedback_is_linked_to_the_rule_and_knowledge_version(make_app, monkeypatch):
    card = {"uuid": CARD, "summary": "Bone scan is usually appropriate", "indicator": "info",
            "source": {"label": "Oncology imaging appropriateness"},
            "suggestions": [{"label": "Keep order", "uuid": SUGGESTION}], "selectionBehavior": "at-most-one"}
    meta = {"rule_id": "prostate-mhspc-bone-scan", "scenario_id": "prostate-metastatic-systemic-therapy",
            "knowledge_version": "2026.11", "procedure_id": "bone-scan-whole-body"}

    def engine(request, record, knowledge, options=None):
        return EngineResult(cards=(card,), rule_ids=("prostate-mhspc-bone-scan",), card_index={CARD: meta})

    monkeypatch.setattr("cds_service.engine.evaluate", engine)
    app = make_app()
    client = app.test_client()
    body = hook_request(prefetch=full_prefetch())
    assert client.post("/cds-services/imaging-appropriateness", json=body).status_code == 200
    assert client.post(FEEDBACK, json={"feedback": [accepted()]}).status_code == 200
    row = store(app).rows()[0]
    assert {k: row[k] for k in meta} == meta
    assert row["service_id"] == "imaging-appropriateness"
    with store(app).db.connect() as db:
        stored = db.execute(select(card_index)).fetchall()
    assert body["context"]["patientId"] not in repr(stored)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([], "JSON object"),
        ({}, "non-empty array"),
        ({"feedback": []}, "non-empty array"),
        ({"feedback": ["x"]}, "must be an object"),
        ({"feedback": [{**accepted(), "card": ""}]}, "card"),
        ({"feedback": [{**accepted(), "outcome": "ignored"}]}, "cds-fb-1"),
        ({"feedback": [without(accepted(), "acceptedSuggestions")]}, "cds-fb-2"),
        ({"feedback": [{**accepted(), "acceptedSuggestions": [{}]}]}, "id"),
        ({"feedback": [{**accepted(), "outcomeTimestamp": "yesterday"}]}, "outcomeTimestamp"),
        ({"feedback": [without(accepted(), "outcomeTimestamp")]}, "outcomeTimestamp"),
        ({"feedback": [{**overridden(), "overrideReason": {}}]}, "cds-fb-3"),
        ({"feedback": [{**overridden(), "overrideReason": {"reason": {"code": "x"}}}]}, "Coding"),
    ],
)
def test_invalid_feedback_is_400(app, client, body, fragment):
    response = client.post(FEEDBACK, json=body)
    assert response.status_code == 400
    assert fragment in response.get_json()["issue"][0]["diagnostics"]
    assert store(app).rows() == []


def test_feedback_for_unknown_service_is_404(client):
    assert client.post("/cds-services/nope/feedback", json={"feedback": [accepted()]}).status_code == 404


def test_feedback_needs_jwt_when_secured(make_app, trusted_file, signer):
    client = make_app(trusted_clients=trusted_file).test_client()
    assert client.post(FEEDBACK, json={"feedback": [accepted()]}).status_code == 401
    headers = signer.auth(f"{BASE}{FEEDBACK}")
    assert client.post(FEEDBACK, json={"feedback": [accepted()]}, headers=headers).status_code == 200


@pytest.mark.parametrize("odd", [None, 0, "", [], {}, [None], {"x": 1}])
def test_no_malformed_feedback_member_causes_a_5xx(client, odd):
    item = {**accepted(), "overrideReason": {"reason": {"system": "s", "code": "c"}, "userComment": "c"}}
    for key in list(item):
        for body in ({"feedback": [{**item, key: odd}]},
                     {"feedback": [{**item, "overrideReason": {**item["overrideReason"], "reason": odd}}]}):
            assert client.post(FEEDBACK, json=body).status_code in (200, 400)


def test_card_index_failure_does_not_block_guidance(make_app, monkeypatch, tmp_path):
    card = {"uuid": CARD, "summary": "s", "indicator": "info", "source": {"label": "l"}}
    monkeypatch.setattr("cds_service.engine.evaluate",
                        lambda *_: EngineResult(cards=(card,), card_index={CARD: {"rule_id": "r"}}))
    app = make_app()

    with sqlite3.connect(store(app).path) as db:  # the card index cannot be written any more
        db.execute("DROP TABLE card_index")
    response = app.test_client().post("/cds-services/imaging-appropriateness",
                                      json=hook_request(prefetch=full_prefetch()))
    assert response.status_code == 200
    assert response.get_json()["cards"][0]["uuid"] == CARD


def test_kept_connections_serve_threads_and_forked_workers(tmp_path):
    feedback = FeedbackStore(tmp_path / "fb.sqlite3")

    def index(n):
        for i in range(20):
            feedback.index_cards("svc", f"hook-{n}", {f"card-{n}-{i}": {"rule_id": "r"}})

    threads = [threading.Thread(target=index, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pid = os.fork()
    if pid == 0:  # a gunicorn worker forked after the store was built: it must open its own connection
        recorded = feedback.record("svc", parse_feedback({"feedback": [accepted(card="card-3-7")]}))
        os._exit(0 if recorded.stored == 1 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    fresh = FeedbackStore(tmp_path / "fb.sqlite3")
    with fresh.db.connect() as db:
        assert db.execute(select(func.count()).select_from(card_index)).scalar() == 160
    rows = fresh.rows()
    assert [(r["card_uuid"], r["rule_id"]) for r in rows] == [("card-3-7", "r")]

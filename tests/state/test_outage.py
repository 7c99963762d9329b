"""A PostgreSQL outage: guidance never waits for the database; feedback says 503; JWT replay is
checked by each worker alone; the replica stays ready (degraded) and the outage is counted."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from cds_service.app import create_app
from cds_service.config import Settings
from tests.pg_cluster import free_port
from tests.protocol.conftest import Signer

from . import support

BASE = "https://cds.example.org"


@pytest.fixture
def down_url() -> str:
    """A PostgreSQL URL where nothing listens (the database is down)."""
    return f"postgresql://postgres@127.0.0.1:{free_port()}/cds"


def _app(url: str, tmp_path, **overrides):
    settings = replace(Settings(), database_url=url, feedback_db=tmp_path / "unused.sqlite3",
                       today=support.case().as_of, public_base_url=BASE, **overrides)
    return create_app(settings).test_client()


def test_hook_answers_with_cards_and_feedback_is_503_with_retry_after(down_url, tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        client = _app(down_url, tmp_path)  # starts: the database is only needed for state
    assert "unreachable at start" in caplog.text
    with caplog.at_level(logging.ERROR):
        hook = client.post(support.HOOK, json=support.hook_request())
    assert hook.status_code == 200
    cards = hook.get_json()["cards"]
    assert cards
    assert "could not index cards for feedback" in caplog.text
    assert "could not write the audit record" in caplog.text
    feedback = client.post(support.FEEDBACK, json={"feedback": [support.accepted(cards[0])]})
    assert feedback.status_code == 503
    assert int(feedback.headers["Retry-After"]) > 0
    outcome = feedback.get_json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "transient"
    assert "send it again" in outcome["issue"][0]["diagnostics"]
    # Shared by every replica: taking them all out of the load balancer would only stop guidance.
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "degraded"
    assert "unreachable" in ready.get_json()["checks"]["database"]
    assert client.get("/healthz").status_code == 200
    assert _state_errors("index_cards") >= 1 and _state_errors("audit") >= 1
    assert _state_errors("feedback") >= 1


def _state_errors(operation: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("cds_state_errors_total", {"operation": operation}) or 0.0


def test_jwt_is_checked_by_this_worker_alone_during_an_outage(down_url, tmp_path):
    signer = Signer()
    trusted = tmp_path / "trusted.json"
    trusted.write_text(json.dumps({signer.iss: {"jwks": signer.jwks}}))
    client = _app(down_url, tmp_path, trusted_clients=trusted)
    before = _state_errors("jti")
    headers = signer.auth(BASE + support.HOOK)
    hook = client.post(support.HOOK, json=support.hook_request(), headers=headers)
    assert hook.status_code == 200 and hook.get_json()["cards"]
    assert _state_errors("jti") == before + 1
    replayed = client.post(support.HOOK, json=support.hook_request(), headers=headers)
    assert replayed.status_code == 401  # the same token again: this worker remembers it


def test_the_password_of_an_unreachable_database_is_not_logged(tmp_path, caplog):
    url = f"postgresql://cds:pw-not-for-logs@127.0.0.1:{free_port()}/cds"
    with caplog.at_level(logging.DEBUG):
        client = _app(url, tmp_path)
        client.post(support.HOOK, json=support.hook_request())
        client.get("/readyz")
    assert "pw-not-for-logs" not in caplog.text
    assert "cds:***@127.0.0.1" in caplog.text


def test_service_recovers_when_postgresql_comes_back(tmp_path):
    """Stop the server under a running app, then start it again: the pool reconnects by itself."""
    from tests.pg_cluster import PgCluster, available

    if available():
        pytest.skip(available())
    with PgCluster() as cluster:
        url = cluster.create_database("cds")
        client = _app(url, tmp_path, database_auto_migrate=True)
        cards = client.post(support.HOOK, json=support.hook_request()).get_json()["cards"]
        feedback = {"feedback": [support.accepted(cards[0])]}
        cluster.pause()
        assert client.post(support.HOOK, json=support.hook_request()).status_code == 200
        assert client.post(support.FEEDBACK, json=feedback).status_code == 503
        assert client.get("/readyz").get_json()["status"] == "degraded"
        cluster.resume()
        # the readiness probe finds it back; calls need not wait out the rest of DOWN_SECONDS
        assert client.get("/readyz").status_code == 200
        response = client.post(support.FEEDBACK, json=feedback)
        assert response.status_code == 200 and response.get_json()["stored"] == 1


def test_a_connection_dropped_while_idle_is_replaced_before_use(tmp_path, monkeypatch):
    """The server restarts while the pool sits idle: the first call afterwards still succeeds."""
    from tests.pg_cluster import PgCluster, available

    if available():
        pytest.skip(available())
    monkeypatch.setattr("cds_service.state.db.PING_AFTER_IDLE_SECONDS", 0.0)  # all idle
    with PgCluster() as cluster:
        client = _app(cluster.create_database("cds"), tmp_path, database_auto_migrate=True)
        cards = client.post(support.HOOK, json=support.hook_request()).get_json()["cards"]
        cluster.pause()
        cluster.resume()  # every pooled connection is now dead, and nothing has used it since
        response = client.post(support.FEEDBACK, json={"feedback": [support.accepted(cards[0])]})
        assert response.status_code == 200 and response.get_json()["stored"] == 1


def test_a_silent_database_costs_a_hook_call_one_connect_timeout_and_later_calls_none(tmp_path):
    """A host that takes the connection and never answers (a hung server, a black-holed network):
    the first call tries once, waiting out the connect timeout (2 s); for DOWN_SECONDS after it,
    calls do not try again, so none of them waits (connection attempts counted, not timed)."""
    import socket
    import threading

    accepted: list[socket.socket] = []
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)

        def take() -> None:  # accept and never say a word
            while True:
                try:
                    accepted.append(silent.accept()[0])
                except OSError:
                    return

        threading.Thread(target=take, daemon=True).start()
        client = _app(f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/cds", tmp_path)
        at_start = len(accepted)  # the start-up schema check tried too
        first = client.post(support.HOOK, json=support.hook_request())
        assert first.status_code == 200 and first.get_json()["cards"]
        assert len(accepted) == at_start + 1  # snooze lookup tried; index and audit did not
        card = first.get_json()["cards"][0]
        second = client.post(support.HOOK, json=support.hook_request())
        feedback = client.post(support.FEEDBACK, json={"feedback": [support.accepted(card)]})
        assert second.status_code == 200 and second.get_json()["cards"]
        assert feedback.status_code == 503 and feedback.headers["Retry-After"] == "5"
        assert len(accepted) == at_start + 1
    for conn in accepted:
        conn.close()

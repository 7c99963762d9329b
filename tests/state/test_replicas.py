"""Two replicas (`cds-service serve` processes, two workers each) behind one public URL on one
PostgreSQL: a JWT is used once across both, feedback finds cards issued by the other replica, and
concurrent feedback from both loses nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from cds_service.protocol.feedback import FeedbackStore
from cds_service.state import migrate
from cds_service.state.db import Database
from tests.pg_cluster import free_port
from tests.protocol.conftest import Signer

from . import support

PUBLIC = "https://cds.example.org"  # what the load balancer's clients call: the JWT `aud` for both


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture(scope="module")
def replicas(postgres, signer, tmp_path_factory) -> Iterator[tuple[list[str], str]]:
    url = postgres.create_database("replicas")
    tmp = tmp_path_factory.mktemp("replicas")
    trusted = tmp / "trusted.json"
    trusted.write_text(json.dumps({signer.iss: {"jwks": signer.jwks}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PROMETHEUS"))}
    env.update(CDS_DATABASE_URL=url, CDS_TRUSTED_CLIENTS=str(trusted), CDS_PUBLIC_BASE_URL=PUBLIC,
               CDS_STATE_SECRET="s" * 40, CDS_TODAY=support.case().as_of.isoformat(),
               CDS_CACHE_DIR=str(tmp / "cache"), CDS_FEEDBACK_DB=str(tmp / "unused.sqlite3"))
    migrated = subprocess.run([sys.executable, "-m", "cds_service.cli", "migrate"], env=env,
                              capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    assert f"-> {migrate.HEAD}" in migrated.stdout
    servers, bases = [], []
    for name in ("a", "b"):
        port = free_port()
        servers.append(subprocess.Popen(
            [sys.executable, "-m", "cds_service.cli", "serve", "--port", str(port), "--workers", "2"],
            env={**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp / f"prom-{name}")},
            stdout=subprocess.DEVNULL, stderr=(tmp / f"{name}.log").open("w"),
        ))
        bases.append(f"http://127.0.0.1:{port}")
    try:
        for base, server in zip(bases, servers, strict=True):
            _wait_ready(base, server)
        yield bases, url
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)
    assert not (tmp / "unused.sqlite3").exists()


def _wait_ready(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert server.poll() is None, "the replica exited"
        try:
            if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{base} not ready")


def _post(base: str, path: str, body: Any, token: str) -> requests.Response:
    return requests.post(base + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _jti_refusals(base: str) -> float:
    text = requests.get(f"{base}/metrics", timeout=10).text
    found = re.search(r'cds_auth_failures_total\{reason="jti replayed"\} (\S+)', text)
    return float(found.group(1)) if found else 0.0


def _cards(base: str, signer: Signer) -> list[dict[str, Any]]:
    response = _post(base, support.HOOK, support.hook_request(), signer.token(PUBLIC + support.HOOK))
    assert response.status_code == 200
    cards: list[dict[str, Any]] = response.json()["cards"]
    assert cards
    return cards


def test_a_token_used_on_one_replica_is_refused_by_the_other(replicas, signer):
    (a, b), _ = replicas
    token = signer.token(PUBLIC + "/cds-services")
    before = _jti_refusals(b)
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{a}/cds-services", headers=headers, timeout=10).status_code == 200
    assert requests.get(f"{b}/cds-services", headers=headers, timeout=10).status_code == 401
    assert _jti_refusals(b) == before + 1  # refused as a replay, not for another reason


def test_exactly_one_of_concurrent_replays_across_replicas_passes(replicas, signer):
    (a, b), _ = replicas
    def discover(target: tuple[str, str]) -> int:
        base, token = target
        return requests.get(f"{base}/cds-services", headers={"Authorization": f"Bearer {token}"},
                            timeout=30).status_code

    for _ in range(3):
        token = signer.token(PUBLIC + "/cds-services")
        targets = [(base, token) for base in [a, b] * 8]
        with ThreadPoolExecutor(len(targets)) as pool:
            statuses = list(pool.map(discover, targets))
        assert sorted(statuses) == [200] + [401] * (len(targets) - 1)


def test_feedback_to_the_other_replica_is_linked_to_the_rule_that_issued_the_card(replicas, signer):
    (a, b), url = replicas
    cards = _cards(a, signer)
    response = _post(b, support.FEEDBACK, {"feedback": [support.accepted(cards[0])]},
                     signer.token(PUBLIC + support.FEEDBACK))
    assert response.status_code == 200
    assert response.json() == {"received": 1, "stored": 1, "unknown": 0}
    (row,) = [r for r in FeedbackStore(Database(url)).rows() if r["card_uuid"] == cards[0]["uuid"]]
    assert row["rule_id"] and f"/rules/{row['rule_id']}" in json.dumps(cards[0])
    assert row["client_iss"] == signer.iss


def test_concurrent_feedback_from_both_replicas_loses_nothing(replicas, signer):
    (a, b), url = replicas
    cards = [card for n in range(3) for card in _cards(a if n % 2 else b, signer)]
    # 40 distinct items (card x timestamp), each sent twice: once to each replica, all at once
    items = [support.accepted(card, f"2026-11-30T11:{minute:02d}:00Z")
             for card in cards for minute in range(40 // len(cards) + 1)][:40]
    sends = [(base, item) for item in items for base in (a, b)]

    def send(target: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        base, item = target
        token = signer.token(PUBLIC + support.FEEDBACK)
        response = _post(base, support.FEEDBACK, {"feedback": [item]}, token)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, sends))
    assert sum(x["stored"] for x in answers) == len(items)  # each item stored once, by one replica
    assert all(x["unknown"] == 0 for x in answers)
    uuids = {card["uuid"] for card in cards}
    stored = [r for r in FeedbackStore(Database(url)).rows() if r["card_uuid"] in uuids]
    assert len(stored) == len(items) and all(r["rule_id"] for r in stored)

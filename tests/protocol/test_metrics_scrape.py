"""/metrics of a real `cds-service serve` (two gunicorn workers, multiprocess mode) scraped after every
fixture case was replayed against it: each counter equals what the test sent and what came back.

Unlike test_ops_endpoints (one call in-process, or discovery only under gunicorn), this replays all
hook calls of fixtures/cases through both workers, adds refused calls and feedback, and compares the
whole of each counter family, label set by label set, with the test's own tally.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from cds_service import replay, verify

from . import worker_share

# One evaluation date for the whole server: the counters are compared with the answers actually
# given, so a case evaluated on another day than its own still counts what it got.
TODAY = "2026-11-15"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("metrics-scrape")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PROMETHEUS"))}
    env.update(CDS_FEEDBACK_DB=str(tmp / "fb.sqlite3"), CDS_CACHE_DIR=str(tmp / "cache"), CDS_TODAY=TODAY,
               PROMETHEUS_MULTIPROC_DIR=str(tmp / "prom"), CDS_STATE_SECRET="s" * 40)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cds_service.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("cds-service serve did not become ready in 90 s")
        yield base, tmp / "prom"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _scrape(base: str) -> dict[str, Counter[tuple[tuple[str, str], ...]]]:
    """Sample values by family name (as exposed, e.g. cds_requests_total) and sorted label pairs."""
    text = requests.get(f"{base}/metrics", timeout=10).text
    samples: dict[str, Counter[tuple[tuple[str, str], ...]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.value:
                labels = tuple(sorted(sample.labels.items()))
                samples.setdefault(sample.name, Counter())[labels] += sample.value
    return samples


def _key(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def test_counters_equal_what_was_sent_after_replaying_the_fixture_cases(server):
    base, prom_dir = server
    transport = replay.Remote(base)
    cases = [verify.load_case(path) for path in verify.case_paths([])]
    calls = [(case, hook) for case in cases for hook in case.data.get("hooks") or ["order-select"]]

    def call(job: tuple[verify.Case, str]) -> tuple[str, int, Any]:
        case, hook = job
        status, body, _ = replay.run(dataclasses.replace(case.replay, hook=hook), transport)
        return replay.SERVICE_IDS[hook], status, body

    # Each worker serves at least one call however the scheduler shares the rest (worker_share).
    held = worker_share.held_call(int(base.rsplit(":", 1)[1]))
    try:
        assert requests.get(f"{base}/cds-services", timeout=30).status_code == 200
    finally:
        assert worker_share.finish(held) == 200
    # Four at a time: a sync worker serves one call at a time, so both workers take a share.
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(call, calls))

    requests_ = Counter[tuple[tuple[str, str], ...]]()
    requests_[_key(endpoint="discovery", service="-", status="200")] += 2  # the held call and the next
    cards = Counter[tuple[tuple[str, str], ...]]()
    ratings = Counter[tuple[tuple[str, str], ...]]()
    issued: list[tuple[str, str]] = []  # (service, card uuid)
    for service, status, body in answers:
        # replay.run asks discovery for the prefetch templates before each hook call
        requests_[_key(endpoint="discovery", service="-", status="200")] += 1
        requests_[_key(endpoint="hook", service=service, status=str(status))] += 1
        for card in body.get("cards") or ():
            rule = card["source"]["topic"]["code"]
            cards[_key(service=service, rule=rule, indicator=card["indicator"])] += 1
            issued.append((service, card["uuid"]))
        for info in replay.ratings(body).values():
            ratings[_key(service=service, rating=info["pama"])] += 1
    assert {status for _, status, _ in answers} == {200}
    assert len(cards) > 10 and len(ratings) >= 3  # the fixtures exercise many rules and every rating

    # Refused calls are counted under their status: an empty body is a 400 for either service.
    for service in sorted(set(replay.SERVICE_IDS.values())):
        assert requests.post(f"{base}/cds-services/{service}", json={}, timeout=10).status_code == 400
        requests_[_key(endpoint="hook", service=service, status="400")] += 1

    # Feedback: one item per issued card (stored), each sent twice (the repeat is not), plus one item
    # naming a card this service never issued.
    feedback = Counter[tuple[tuple[str, str], ...]]()
    by_service: dict[str, list[str]] = {}
    for service, card_uuid in issued[:40]:
        by_service.setdefault(service, []).append(card_uuid)
    for service, uuids in by_service.items():
        items = [{"card": u, "outcome": "overridden", "outcomeTimestamp": "2026-11-15T10:00:00Z"}
                 for u in [*uuids, str(uuid.uuid4())]]
        for attempt in range(2):
            response = requests.post(f"{base}/cds-services/{service}/feedback", json={"feedback": items},
                                     timeout=10)
            assert response.status_code == 200
            assert response.json()["stored"] == (len(uuids) if attempt == 0 else 0)
            requests_[_key(endpoint="feedback", service=service, status="200")] += 1
            feedback[_key(service=service, stored="new")] += len(uuids) if attempt == 0 else 0
            feedback[_key(service=service, stored="repeat-or-unknown")] += 1 if attempt == 0 else len(items)

    scraped = _scrape(base)
    assert scraped["cds_requests_total"] == requests_
    assert scraped["cds_cards_total"] == cards
    assert scraped["cds_ratings_total"] == ratings
    assert scraped["cds_feedback_items_total"] == +feedback
    latency_counts = Counter[tuple[tuple[str, str], ...]]()
    for labels, n in requests_.items():
        latency_counts[tuple(kv for kv in labels if kv[0] != "status")] += n
    assert scraped["cds_request_duration_seconds_count"] == latency_counts
    discovery = {"endpoint": "discovery", "service": "-", "status": "200"}
    per_worker = worker_share.served_per_worker(prom_dir, "cds_requests_total", discovery)
    assert len(per_worker) == 2 and min(per_worker.values()) >= 1, per_worker
    assert sum(per_worker.values()) == requests_[_key(**discovery)], per_worker

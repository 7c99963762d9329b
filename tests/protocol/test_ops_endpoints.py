"""Operations endpoints: liveness, readiness, Prometheus metrics (no patient data in any label)."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from prometheus_client import REGISTRY

from cds_service import replay
from cds_service.config import Settings

from . import worker_share

ROOT = Path(__file__).resolve().parents[2]
CASE = ROOT / "fixtures" / "cases" / "prostate-mets-dialysis-ct-cap-contrast.json"


@pytest.fixture
def service(tmp_path):
    case = replay.load(CASE)
    settings = replace(Settings(), feedback_db=tmp_path / "fb.sqlite3")
    return case, replay.InProcess(case.as_of, settings=settings), tmp_path / "fb.sqlite3"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_liveness_and_readiness(service):
    _, transport, _ = service
    assert transport.client.get("/healthz").status_code == 200
    ready = transport.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"knowledge": "ok", "database": "ok"}


def test_readiness_fails_when_the_database_lost_its_schema_but_liveness_does_not(service):
    _, transport, db_path = service
    with sqlite3.connect(db_path) as db:
        db.execute("DROP TABLE snooze")
    ready = transport.client.get("/readyz")
    assert ready.status_code == 503 and ready.headers["Retry-After"]
    assert "snooze" in ready.get_json()["checks"]["database"]
    assert transport.client.get("/healthz").status_code == 200


def test_metrics_count_calls_cards_and_ratings_without_patient_data(service):
    case, transport, _ = service
    service_id = "imaging-appropriateness-sign"
    case.hook = "order-sign"
    before = _sample("cds_requests_total", endpoint="hook", service=service_id, status="200")
    status, body, request = replay.run(case, transport)
    assert status == 200 and body["cards"]
    after = _sample("cds_requests_total", endpoint="hook", service=service_id, status="200")
    assert after == before + 1
    text = transport.client.get("/metrics").get_data(as_text=True)
    assert "cds_request_duration_seconds_bucket" in text
    ratings = re.findall(r'cds_ratings_total\{rating="([^"]+)",service="' + service_id + '"', text)
    assert "appropriate" in ratings
    cards = r'cds_cards_total\{indicator="warning",rule="([^"]+)",service="' + service_id
    card_rules = re.findall(cards, text)
    assert card_rules, text
    for private in (case.patient_id, request["hookInstance"], request["context"]["userId"]):
        assert private not in text


def test_auth_failures_are_counted_by_reason(make_app, trusted_file):
    client = make_app(trusted_clients=trusted_file).test_client()
    before = _sample("cds_auth_failures_total", reason="no bearer token")
    assert client.get("/cds-services").status_code == 401
    assert _sample("cds_auth_failures_total", reason="no bearer token") == before + 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DISCOVERY_SERVED = {"endpoint": "discovery", "service": "-", "status": "200"}


def test_metrics_are_summed_over_gunicorn_workers(tmp_path):
    """`cds-service serve` with two worker processes: /metrics counts the calls every worker served.

    One call is held open first, so the next one must be served by the other worker (see
    worker_share): each worker's own sample file then shows a share, and /metrics must be their sum.
    """
    port = _free_port()
    prom = tmp_path / "prom"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PROMETHEUS"))}
    env.update(CDS_FEEDBACK_DB=str(tmp_path / "fb.sqlite3"), PROMETHEUS_MULTIPROC_DIR=str(prom),
               CDS_CACHE_DIR=str(tmp_path / "cache"))
    server = subprocess.Popen(
        [sys.executable, "-m", "cds_service.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"cds-service serve exited with {server.returncode}"
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "cds-service serve not healthy within 60 s"
            time.sleep(0.2)
        held = worker_share.held_call(port)
        try:
            # the worker that did not accept the held call serves this one
            assert requests.get(f"{base}/cds-services", timeout=30).status_code == 200
        finally:
            assert worker_share.finish(held) == 200
        # and concurrent calls on top, however the workers share them
        calls = 48
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda _: requests.get(f"{base}/cds-services", timeout=30).status_code,
                                     range(calls)))
        assert statuses == [200] * calls
        total = calls + 2
        text = requests.get(f"{base}/metrics", timeout=30).text
        served = re.search(r'cds_requests_total\{endpoint="discovery",service="-",status="200"\} (\S+)', text)
        assert served and float(served.group(1)) == total, served
        per_worker = worker_share.served_per_worker(prom, "cds_requests_total", DISCOVERY_SERVED)
        assert len(per_worker) == 2 and all(n >= 1 for n in per_worker.values()), per_worker
        assert sum(per_worker.values()) == total, per_worker
        assert json.loads(requests.get(f"{base}/readyz", timeout=30).text)["status"] == "ready"
    finally:
        server.terminate()
        server.wait(timeout=30)

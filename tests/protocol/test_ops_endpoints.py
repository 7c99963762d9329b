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


def test_metrics_are_summed_over_gunicorn_workers(tmp_path):
    """`cds-service serve` with two worker processes: /metrics counts the calls every worker served."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PROMETHEUS"))}
    env.update(CDS_FEEDBACK_DB=str(tmp_path / "fb.sqlite3"), PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"),
               CDS_CACHE_DIR=str(tmp_path / "cache"))
    server = subprocess.Popen(
        [sys.executable, "-m", "cds_service.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        # Concurrent calls: a sync worker serves one at a time, so the other worker must take some.
        calls = 48
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda _: requests.get(f"{base}/cds-services", timeout=10).status_code,
                                     range(calls)))
        assert statuses == [200] * calls
        text = requests.get(f"{base}/metrics", timeout=10).text
        served = re.search(r'cds_requests_total\{endpoint="discovery",service="-",status="200"\} (\S+)', text)
        assert served and float(served.group(1)) == calls
        pids = {p.name.split("_")[-1].split(".")[0] for p in (tmp_path / "prom").glob("*.db")}
        assert len(pids) >= 2, f"samples from {pids}: one worker answered everything"
        assert json.loads(requests.get(f"{base}/readyz", timeout=10).text)["status"] == "ready"
    finally:
        server.terminate()
        server.wait(timeout=30)

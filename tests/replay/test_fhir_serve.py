"""`cds-service fhir-serve`: a fixture patient served over real HTTP gives the same advice as prefetch."""

from __future__ import annotations

import io
import json
import re
import threading
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from cds_service import cli, replay
from cds_service.bundle_search import BundleStore
from cds_service.fhir_serve import make_app

CASE = Path(__file__).resolve().parents[2] / "fixtures" / "cases" / "prostate-mcrpc-bone-scan.json"


@pytest.fixture
def served(monkeypatch, tmp_path):
    monkeypatch.setenv("CDS_FEEDBACK_DB", str(tmp_path / "fb.sqlite3"))
    server = make_server("127.0.0.1", 0, make_app(BundleStore({"resourceType": "Bundle"})))
    base = f"http://127.0.0.1:{server.server_port}/fhir"
    server.app = make_app(BundleStore(replay.load(CASE).bundle, base_url=base))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base
    server.shutdown()


def _replay(*args: str) -> dict:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["replay", str(CASE), "--json", *args]) == 0
    return json.loads(out.getvalue())


def _advice(answer: dict) -> tuple:
    # The rating extensions without the per-call consult id (a fresh urn:uuid each time).
    actions = [json.dumps(a["resource"].get("extension"), sort_keys=True) for a in answer["systemActions"]]
    ratings = sorted(re.sub(r'"urn:uuid:[0-9a-f-]+"', '"uuid"', a) for a in actions)
    return ratings, sorted(c["summary"] for c in answer["cards"])


def test_no_prefetch_against_fhir_serve_gives_the_prefetch_answer(served):
    with_prefetch = _replay()
    fetched = _replay("--no-prefetch", "--fhir-server", served)
    assert fetched["systemActions"], "no rating: the chart was not read from the served bundle"
    assert _advice(fetched) == _advice(with_prefetch)


def test_served_searches_page_with_links_back_to_the_server(served):
    import requests

    patient = replay.load(CASE).patient_id
    page = requests.get(f"{served}/Condition", params={"patient": patient, "_count": 1}, timeout=5).json()
    assert page["resourceType"] == "Bundle" and len(page["entry"]) == 1
    following = [link["url"] for link in page["link"] if link["relation"] == "next"]
    assert following and following[0].startswith(served)
    assert requests.get(f"{served}/Patient/{patient}", timeout=5).json()["id"] == patient
    missing = requests.get(f"{served}/Patient/nobody", timeout=5)
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"
    assert requests.get(f"{served}/metadata", timeout=5).json()["fhirVersion"] == "4.0.1"

"""The FHIR stub (searches, paging, reads) and the framework floor app."""

import http.client
import json

import pytest

from bench import fhir_stub, floor_app
from bench.workloads import PATIENT_ID, generate_chart


@pytest.fixture
def stub():
    server = fhir_stub.start(generate_chart(150), delay_s=0.0, default_page_size=25)
    yield server
    server.shutdown()
    server.server_close()


def _get(server, path):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=5)
    conn.request("GET", path)
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body


def test_stub_pages_a_search_with_next_links(stub):
    status, page1 = _get(stub, f"/Observation?patient={PATIENT_ID}")
    assert status == 200 and page1["type"] == "searchset"
    assert page1["total"] == 60 and len(page1["entry"]) == 25
    seen = [e["resource"]["id"] for e in page1["entry"]]
    link = page1["link"][0]
    while True:
        assert link["relation"] == "next" and link["url"].startswith(stub.base_url)
        status, page = _get(stub, link["url"].removeprefix(stub.base_url))
        seen += [e["resource"]["id"] for e in page["entry"]]
        if "link" not in page:
            break
        link = page["link"][0]
    assert len(seen) == len(set(seen)) == 60
    assert stub.queries == 3


def test_stub_honours_count_and_code_filter(stub):
    _, bundle = _get(stub, f"/Observation?patient={PATIENT_ID}&code=http://loinc.org|2857-1&_count=200")
    assert bundle["total"] == len(bundle["entry"]) == 10
    assert "link" not in bundle


def test_stub_reads_and_reports_missing(stub):
    status, patient = _get(stub, f"/Patient/{PATIENT_ID}")
    assert status == 200 and patient["id"] == PATIENT_ID
    status, outcome = _get(stub, "/Patient/nobody")
    assert status == 404 and outcome["resourceType"] == "OperationOutcome"
    status, outcome = _get(stub, "/Observation?_count=many")
    assert status == 400


def test_floor_parses_json_and_returns_no_cards():
    client = floor_app.create_floor_app().test_client()
    assert client.get("/healthz").status_code == 200
    ok = client.post("/cds-services/anything", json={"hook": "order-select", "context": {}})
    assert ok.status_code == 200 and ok.get_json() == {"cards": []}
    bad = client.post("/cds-services/anything", data="not json", content_type="application/json")
    assert bad.status_code == 400

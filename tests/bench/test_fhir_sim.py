"""The simulated FHIR server of the fallback arms (bench.fhir_sim), and the service reading a chart
from it with its default FHIR settings (issue 11 point 3)."""

import http.client
import json
from datetime import date
from pathlib import Path

import pytest

from bench import fhir_sim
from cds_service.app import create_app
from cds_service.config import Settings
from cds_service.protocol import views

LOINC, SNOMED = "http://loinc.org", "http://snomed.info/sct"
TOKEN = "t0k"
SYNTHEA = fhir_sim.SYNTHEA_DIR / fhir_sim.SYNTHEA_PATIENT


def _transaction(tmp_path: Path) -> Path:
    """A Synthea-shaped transaction Bundle: `urn:uuid:` references, `request` on every entry."""
    pid = "p-uuid"
    patient = {"resourceType": "Patient", "id": pid, "gender": "male", "birthDate": "1950-02-01"}
    post = {"method": "POST", "url": "Patient"}
    entries = [{"fullUrl": f"urn:uuid:{pid}", "request": post, "resource": patient}]

    def add(resource):
        resource["subject"] = {"reference": f"urn:uuid:{pid}"}
        entries.append({"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource,
                        "request": {"method": "POST", "url": resource["resourceType"]}})

    for i in range(45):  # three pages at the default page size of 20
        add({"resourceType": "Condition", "id": f"c{i}",
             "code": {"coding": [{"system": SNOMED, "code": "38341003"}]}})
    add({"resourceType": "Observation", "id": "psa", "status": "final",
         "code": {"coding": [{"system": LOINC, "code": "2857-1"}]}})
    add({"resourceType": "Observation", "id": "bp", "status": "final",
         "code": {"coding": [{"system": LOINC, "code": "8480-6"}]}})
    add({"resourceType": "Observation", "id": "finding", "status": "final",
         "code": {"coding": [{"system": SNOMED, "code": "404684003"}]},
         "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "161891005"}]}})
    add({"resourceType": "Medication", "id": "med1"})
    add({"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order",
         "medicationReference": {"reference": "urn:uuid:med1"}})
    path = tmp_path / "synthea.json"
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}))
    return path


@pytest.fixture
def sim(tmp_path):
    patient, resources = fhir_sim.load_transaction(_transaction(tmp_path))
    server = fhir_sim.start(fhir_sim.FhirSim(patient, resources, delay_s=0.0, token=TOKEN))
    yield server
    server.shutdown()
    server.server_close()


def _get(sim, path, token=TOKEN):
    conn = http.client.HTTPConnection(*sim.server_address[:2], timeout=5)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body


def _ids(bundle):
    return [e["resource"]["id"] for e in bundle["entry"]]


def test_transaction_references_are_resolved_as_a_server_does(sim):
    status, bundle = _get(sim, "/MedicationRequest?patient=p-uuid&_include=MedicationRequest:medication")
    assert status == 200
    request = bundle["entry"][0]["resource"]
    assert request["subject"] == {"reference": "Patient/p-uuid"}
    assert request["medicationReference"] == {"reference": "Medication/med1"}
    assert _ids(bundle) == ["mr1", "med1"] and bundle["entry"][1]["search"]["mode"] == "include"


def test_searches_page_at_the_default_size_and_filter_by_token(sim):
    _, page = _get(sim, "/Condition?patient=p-uuid")
    assert page["total"] == 45 and len(page["entry"]) == fhir_sim.DEFAULT_PAGE_SIZE
    assert page["link"][0]["url"].startswith(sim.base_url)
    _, page = _get(sim, "/Condition?patient=p-uuid&_count=5000")  # capped at the server's maximum
    assert len(page["entry"]) == 45 and "link" not in page
    _, obs = _get(sim, f"/Observation?patient=p-uuid&code={LOINC}|2857-1,{SNOMED}|399537006")
    assert _ids(obs) == ["psa"]
    _, obs = _get(sim, f"/Observation?patient=p-uuid&value-concept={SNOMED}|161891005")
    assert _ids(obs) == ["finding"]
    assert _get(sim, "/Patient/p-uuid", token=None)[0] == 401 and sim.unauthorized == 1


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The app with default FHIR settings; any port of the loopback host is allowed."""
    db = tmp_path_factory.mktemp("sim") / "fb.sqlite3"
    app = create_app(Settings(today=date(2026, 11, 1), feedback_db=db, fhir_allowed_hosts=("http://127.0.0.1",)))
    return app.test_client()


def _call(service, sim, monkeypatch):
    """POST a bone-scan order-select with no prefetch; (status, PatientRecord, GatherStats)."""
    records = []
    real = views.gather_record
    monkeypatch.setattr(views, "gather_record", lambda *a, **k: records.append(real(*a, **k)) or records[-1])
    pid = sim.patient_id
    body = {
        "hook": "order-select", "hookInstance": "a1b2c3d4-0000-4000-8000-000000000001",
        "fhirServer": sim.base_url,
        "fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                              "scope": "patient/*.read", "subject": "cds"},
        "context": {"userId": "Practitioner/d1", "patientId": pid, "selections": ["ServiceRequest/s1"],
                    "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
                        "resourceType": "ServiceRequest", "id": "s1", "status": "draft", "intent": "order",
                        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "78306"}]},
                        "subject": {"reference": f"Patient/{pid}"}}}]}},
    }
    response = service.post("/cds-services/imaging-appropriateness", json=body)
    record, stats = records[-1] if records else (None, None)
    return response.status_code, record, stats


def test_the_service_reads_the_chart_in_one_wave_with_default_settings(service, sim, monkeypatch):
    status, record, stats = _call(service, sim, monkeypatch)
    assert status == 200
    assert record.incomplete == ()
    assert {o["id"] for o in record.resources["Observation"]} == {"psa", "finding"}  # bp: not asked
    assert len(record.resources["Condition"]) == 45  # one page: every template asks _count
    assert [m["id"] for m in record.resources["Medication"]] == ["med1"]  # via _include
    # Patient + 8 searches: the 3 code-filtered Observation templates are one query, no next page
    assert stats.fhir_calls == sim.queries == 9
    assert sim.unauthorized == 0


@pytest.mark.skipif(not SYNTHEA.is_file(), reason="Synthea reference data not on this machine")
def test_a_synthea_patient_is_read_whole_from_a_slow_server(service, monkeypatch):
    # Optional (the reference data lives outside the repository): a real third-party chart, every
    # query 0.3 s, the service's default timeouts.
    patient, resources = fhir_sim.load_transaction(SYNTHEA)
    sim = fhir_sim.start(fhir_sim.FhirSim(patient, resources, delay_s=0.3, token=TOKEN))
    try:
        status, record, stats = _call(service, sim, monkeypatch)
    finally:
        sim.shutdown()
        sim.server_close()
    assert status == 200 and record.incomplete == ()
    psa = {r["id"] for r in resources if r["resourceType"] == "Observation"
           and any(c.get("code") == "2857-1" for c in r["code"]["coding"])}
    assert psa and psa <= {o["id"] for o in record.resources["Observation"]}
    conditions = {r["id"] for r in resources if r["resourceType"] == "Condition"}
    assert conditions == {c["id"] for c in record.resources["Condition"]}
    assert stats.fhir_calls == 9

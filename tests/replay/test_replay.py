"""replay: argument errors, request building, prefetch from discovery templates, output formats.

The service side is played by `responses` (a running service reached with --url); the in-process
path against the real app is exercised by tests/e2e.
"""

from __future__ import annotations

import json
import uuid
from datetime import date
from pathlib import Path

import pytest
import responses

from cds_service import replay
from cds_service.bundle_search import BundleStore

FIX = Path(__file__).resolve().parents[2] / "fixtures"
PATIENT = FIX / "patients" / "prostate-mets-adt-rising-psa.json"
CASE = FIX / "cases" / "prostate-mets-adt-rising-psa-ct-chest-abdomen-pelvis.json"
URL = "http://cds.test:8080"
TEMPLATES = {
    "patient": "Patient/{{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}&clinical-status=active",
    "psa": "Observation?patient={{context.patientId}}&code=http://loinc.org|2857-1,http://loinc.org|83112-3"
           "&_sort=-date&_count=10",
    "meds": "MedicationRequest?patient={{context.patientId}}&status=active,completed",
    "reports": "DiagnosticReport?patient={{context.patientId}}&category=RAD",
    "practitioner": "Practitioner/{{userPractitionerId}}",
    "encounter": "Encounter/{{context.encounterId}}",
}
DISCOVERY = {"services": [
    {"id": "imaging-appropriateness", "hook": "order-select", "prefetch": TEMPLATES},
    {"id": "imaging-appropriateness-sign", "hook": "order-sign", "prefetch": TEMPLATES},
]}
ANSWER = {
    "cards": [{
        "uuid": str(uuid.uuid4()), "indicator": "warning", "summary": "Bone scan: new uptake may be flare",
        "detail": "Abiraterone started 2026-10-04 (6 weeks ago).",
        "source": {"label": "Oncology imaging appropriateness"},
        "suggestions": [{"label": "Order CT chest/abdomen/pelvis with contrast", "isRecommended": True}],
        "links": [{"label": "Why", "url": f"{URL}/rules/flare-phenomenon", "type": "absolute"}],
    }],
    "systemActions": [{
        "type": "update", "description": "PAMA rating",
        "resource": {"resourceType": "ServiceRequest", "id": "ct-chest-1", "extension": [
            {"url": replay.PAMA_RATING_URL, "valueCodeableConcept": {"coding": [
                {"system": "http://fhir.org/argonaut/CodeSystem/pama-rating", "code": "appropriate"}]}}]},
    }],
}


def run(argv, capsys):
    code = replay.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def serve(status: int = 200, body: dict | None = None) -> None:
    responses.add(responses.GET, f"{URL}/cds-services", json=DISCOVERY)
    for sid in ("imaging-appropriateness", "imaging-appropriateness-sign"):
        responses.add(responses.POST, f"{URL}/cds-services/{sid}", json=body if body is not None else ANSWER,
                      status=status)


def sent() -> dict:
    return json.loads(responses.calls[-1].request.body)


# --- errors: one line on stderr, non-zero exit ----------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["missing.json", "--order", "78306"], "not found"),
    ([FIX / "schema" / "case.schema.json", "--order", "78306"], "not a FHIR Bundle"),
    ([FIX / "orders" / "bone-scan-whole-body-cpt.json", "--order", "78306"], "not a FHIR Bundle"),
    ([PATIENT, "--order", "99999"], "unknown order code"),
    ([PATIENT, "--order", "bone scan please"], "unknown order"),
    ([PATIENT, "--order", PATIENT], "not a ServiceRequest"),
    ([PATIENT], "no draft order"),
    ([PATIENT, "--order", "78306", "--no-prefetch"], "needs --fhir-server"),
])
def test_input_errors(argv, message, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("code", ["72197", "77049", "78814", "76641", "74160", "78300", "25031-6"])
def test_codes_the_service_rates_are_accepted(code):
    """Issue 9/12: replay knows the codes of the procedure catalog, not a list of its own."""
    order = replay.order_from_arg(code)
    assert order["code"]["coding"][0]["code"] == code


def test_replay_accepts_every_catalog_code_and_nothing_else():
    from cds_service.knowledge import load_knowledge

    catalog = load_knowledge().catalog
    for proc in catalog.procedures.values():
        for c in proc.codes:
            coding = replay.order_from_arg(c.code)["code"]["coding"][0]
            assert (coding["system"], coding["code"]) == (c.system, c.code)
            assert coding["display"] == proc.display  # the catalog's name, never an AMA descriptor
    with pytest.raises(replay.ReplayError, match="unknown order code"):
        replay.order_from_arg("70010")  # a radiology CPT code the catalog does not list


def test_not_json_and_no_patient(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "not JSON" in run([bad, "--order", "78306"], capsys)[2]
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": []}))
    code, _, err = run([empty, "--order", "78306"], capsys)
    assert code == 2 and "no Patient" in err


@responses.activate
def test_unreachable_service(capsys):
    code, _, err = run([PATIENT, "--order", "78306", "--url", "http://127.0.0.1:9"], capsys)
    assert code == 2 and "cannot reach the service" in err


@responses.activate
def test_service_error_is_reported(capsys):
    serve(400, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid",
                                                                "diagnostics": "context.patientId missing"}]})
    code, out, err = run([PATIENT, "--order", "78306", "--url", URL], capsys)
    assert code == 1 and "HTTP 400" in err and "context.patientId missing" in err


# --- request building --------------------------------------------------------------------------------

def test_build_request_order_select():
    rp = replay.load(PATIENT)
    pet = str(FIX / "orders" / "pet-ct-no-tracer.json")
    rp.orders = [replay.order_from_arg("78306"), replay.order_from_arg(pet)]
    req = replay.build_request(rp)
    uuid.UUID(req["hookInstance"])
    assert req["hook"] == "order-select"
    ctx = req["context"]
    assert ctx["patientId"] == "prostate-mets-adt-rising-psa" and ctx["userId"].startswith("Practitioner/")
    entries = [e["resource"] for e in ctx["draftOrders"]["entry"]]
    assert [e["id"] for e in entries] == ["replay-order-1", "pet-ct-1"]
    assert all(e["subject"] == {"reference": "Patient/prostate-mets-adt-rising-psa"} for e in entries)
    assert entries[0]["code"]["coding"][0] == {"system": replay.CPT, "code": "78306",
                                               "display": "Bone scan whole body (Tc-99m MDP)"}
    assert ctx["selections"] == ["ServiceRequest/replay-order-1", "ServiceRequest/pet-ct-1"]
    assert "prefetch" not in req and "fhirServer" not in req
    assert replay.build_request(rp)["hookInstance"] != req["hookInstance"]


def test_build_request_order_sign_with_fhir_server():
    rp = replay.load(PATIENT)
    rp.orders, rp.hook = [replay.order_from_arg("http://loinc.org|72254-6")], "order-sign"
    req = replay.build_request(rp, fhir_server="https://fhir.test/r4/", fhir_token="t0k")
    assert "selections" not in req["context"]
    assert req["fhirServer"] == "https://fhir.test/r4"
    assert req["fhirAuthorization"]["access_token"] == "t0k"
    assert req["context"]["draftOrders"]["entry"][0]["resource"]["code"]["coding"][0]["code"] == "72254-6"


def test_case_file_loads_orders_selections_and_hook():
    rp = replay.load(CASE)
    assert rp.patient_id == "prostate-mets-adt-rising-psa"
    assert [o["id"] for o in rp.orders] == ["ct-chest-1", "ct-ap-1"]
    assert rp.hook == "order-select" and rp.expected is not None
    assert str(rp.as_of) == "2026-11-15"


def test_fill_template_tokens():
    req = {"context": {"patientId": "p1", "userId": "Practitioner/u9"}}
    assert replay.fill_template("Patient/{{context.patientId}}", req) == "Patient/p1"
    assert replay.fill_template("Practitioner/{{userPractitionerId}}", req) == "Practitioner/u9"
    assert replay.fill_template("Encounter/{{context.encounterId}}", req) is None


def test_prefetch_is_filled_from_templates_via_bundle_search():
    rp = replay.load(PATIENT)
    rp.orders = [replay.order_from_arg("78306")]
    req = replay.fill_prefetch(replay.build_request(rp), TEMPLATES, BundleStore(rp.bundle))
    pre = req["prefetch"]
    assert pre["patient"]["id"] == rp.patient_id
    assert pre["conditions"]["type"] == "searchset" and pre["conditions"]["total"] == 2
    psa_dates = [e["resource"]["effectiveDateTime"] for e in pre["psa"]["entry"]]
    assert psa_dates == ["2026-11-02", "2026-09-01", "2026-06-01", "2026-03-02"]
    assert pre["meds"]["total"] == 2 and pre["reports"]["total"] == 1
    assert pre["practitioner"] is None  # not in the bundle: the EHR sends null
    assert "encounter" not in pre  # no encounter in context: key omitted


# --- against a running service (--url) -------------------------------------------------------------

@responses.activate
def test_text_output_and_prefetch_sent(capsys):
    serve()
    code, out, err = run([CASE, "--url", URL, "--today", date.today().isoformat()], capsys)
    assert code == 0 and err == ""  # evaluated as of the server's date: no date note
    body = sent()
    assert responses.calls[0].request.url == f"{URL}/cds-services"
    assert responses.calls[-1].request.url == f"{URL}/cds-services/imaging-appropriateness"
    assert set(body["prefetch"]) == set(TEMPLATES) - {"encounter"}
    assert body["prefetch"]["patient"]["id"] == "prostate-mets-adt-rising-psa"
    assert "[WARNING] Bone scan: new uptake may be flare" in out
    assert "Abiraterone started 2026-10-04" in out
    assert "suggestion: Order CT chest/abdomen/pelvis with contrast (recommended)" in out
    assert "Rating ServiceRequest/ct-chest-1: PAMA appropriate" in out
    assert "Rating ServiceRequest/ct-ap-1: none" in out


@responses.activate
def test_json_output_is_the_raw_response(capsys):
    serve()
    code, out, _ = run([PATIENT, "--order", "78306", "--hook", "order-sign", "--url", URL, "--json"], capsys)
    assert code == 0 and json.loads(out) == ANSWER
    assert responses.calls[-1].request.url.endswith("/imaging-appropriateness-sign")
    assert "selections" not in sent()["context"]


@responses.activate
def test_no_prefetch_sends_fhir_server_and_skips_discovery(capsys):
    serve()
    code, _, _ = run([PATIENT, "--order", "78306", "--url", URL, "--no-prefetch",
                      "--fhir-server", "https://fhir.test/r4"], capsys)
    assert code == 0
    assert len(responses.calls) == 1
    body = sent()
    assert "prefetch" not in body and body["fhirServer"] == "https://fhir.test/r4"


@responses.activate
def test_case_order_override(capsys):
    serve()
    code, _, _ = run([CASE, "--url", URL, "--order", "78306"], capsys)
    assert code == 0
    orders = sent()["context"]["draftOrders"]["entry"]
    assert [o["resource"]["code"]["coding"][0]["code"] for o in orders] == ["78306"]


def test_ratings_reads_pama_and_project_extensions():
    body = {"systemActions": [{"type": "update", "resource": {"resourceType": "ServiceRequest", "id": "a",
            "extension": [
                {"url": replay.PAMA_RATING_URL,
                 "valueCodeableConcept": {"coding": [{"code": "not-appropriate"}]}},
                {"url": "https://example.org/ext/imaging-rating", "extension": [
                    {"url": "acr-category", "valueCode": "usually-not-appropriate"},
                    {"url": "scenario", "valueString": "prostate-initial-staging"}]}]}}]}
    assert replay.ratings(body) == {"a": {"pama": "not-appropriate",
                                          "acr-category": "usually-not-appropriate",
                                          "scenario": "prostate-initial-staging"}}


# --- in-process against the real app ------------------------------------------------------------------

@pytest.fixture
def app_env(tmp_path, monkeypatch):
    pytest.importorskip("cds_service.app", reason="protocol layer not in this checkout")
    monkeypatch.setenv("CDS_FEEDBACK_DB", str(tmp_path / "feedback.sqlite3"))
    monkeypatch.setenv("CDS_STRICT_RESPONSES", "1")


def test_in_process_replay_of_a_case(app_env, capsys):
    code, out, err = run([CASE, "--hook", "order-sign"], capsys)
    assert code == 0, err
    assert "Patient prostate-mets-adt-rising-psa as of 2026-11-15 | hook order-sign" in out
    assert "Rating ServiceRequest/ct-chest-1:" in out and "Rating ServiceRequest/ct-ap-1:" in out


def test_in_process_json_is_a_cds_response(app_env, capsys):
    code, out, _ = run([PATIENT, "--order", "78306", "--json"], capsys)
    assert code == 0 and isinstance(json.loads(out)["cards"], list)


@responses.activate
def test_in_process_fallback_reads_the_fhir_server(app_env, capsys):
    import re

    store = BundleStore(json.loads(PATIENT.read_text()), base_url="https://fhir.replay.test/r4")
    responses.add_callback(responses.GET, re.compile(r"https://fhir\.replay\.test/r4/.*"),
                           callback=store.responses_callback)
    code, _, err = run([PATIENT, "--order", "78306", "--no-prefetch", "--fhir-server",
                        "https://fhir.replay.test/r4", "--json"], capsys)
    assert code == 0, err
    urls = [c.request.url for c in responses.calls]
    assert any("/Patient/prostate-mets-adt-rising-psa" in u for u in urls)
    assert any("/Condition?" in u for u in urls)


# --- --print-request, --today, the --url date note ------------------------------------------------

@responses.activate
def test_print_request_prints_the_filled_request_and_sends_nothing(capsys):
    serve()
    code, out, _ = run([CASE, "--url", URL, "--print-request"], capsys)
    assert code == 0
    request = json.loads(out)
    assert request["hook"] == "order-select" and request["prefetch"]["patient"]["resourceType"] == "Patient"
    assert [c.request.method for c in responses.calls] == ["GET"]  # discovery only, no hook call


@responses.activate
def test_today_moves_the_evaluation_date_and_a_remote_service_is_warned_about(capsys):
    serve()
    code, out, err = run([CASE, "--url", URL, "--today", "2027-01-05"], capsys)
    assert code == 0
    assert "as of 2027-01-05" in out.splitlines()[0]
    assert "rates as of its own date" in err and "CDS_TODAY=2027-01-05" in err


def test_today_must_be_a_date(capsys):
    with pytest.raises(SystemExit) as stop:
        replay.main([str(CASE), "--today", "next week"])
    assert stop.value.code == 2
    assert "not a date YYYY-MM-DD" in capsys.readouterr().err

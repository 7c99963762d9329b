"""Prefetch states, FHIR fallback, 412, pagination, deadline and the host allowlist."""

import re

import pytest
import requests
import responses

from cds_service.protocol.discovery import load_prefetch_templates

from .conftest import (
    FHIR,
    PATIENT_ID,
    bundle,
    condition,
    full_prefetch,
    hook_request,
    patient,
)

SELECT = "/cds-services/imaging-appropriateness"
TEMPLATES = load_prefetch_templates()
# One query per template when nothing is prefetched, except that the Observation templates filtered
# by `code=` are asked as one joined query (cds_service.protocol.fhir_fetch).
CODE_FILTERED = [k for k, t in TEMPLATES.items() if t.resource_type == "Observation" and "&code=" in t.query]
QUERIES = len(TEMPLATES) - len(CODE_FILTERED) + 1
SEARCH_TYPES = ("Condition", "Observation", "MedicationRequest", "MedicationAdministration",
                "MedicationStatement", "Procedure", "DiagnosticReport")


def with_server(body, server=FHIR, token="secret-access-token"):
    body["fhirServer"] = server
    if token:
        body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "patient/*.read", "subject": "cds-service"}
    return body


def serve_all(fhir, base=FHIR, conditions=None):
    fhir.get(f"{base}/Patient/{PATIENT_ID}", json=patient())
    for rtype in SEARCH_TYPES:
        entries = conditions if rtype == "Condition" and conditions else []
        fhir.get(re.compile(rf"{re.escape(base)}/{rtype}\?.*"), json=bundle(*entries))


def test_present_prefetch_is_used_without_any_query(client, captured, fhir):
    response = client.post(SELECT, json=with_server(hook_request(prefetch=full_prefetch())))
    assert response.status_code == 200
    assert len(fhir.calls) == 0
    record = captured["record"]
    assert record.patient["id"] == PATIENT_ID
    assert [c["id"] for c in record.resources["Condition"]] == ["c1"]
    assert record.incomplete == ()
    assert str(record.as_of) == "2026-11-22"


def test_null_prefetch_means_no_data_and_no_query(client, captured, fhir):
    prefetch = full_prefetch()
    prefetch["conditions"] = None
    response = client.post(SELECT, json=with_server(hook_request(prefetch=prefetch)))
    assert response.status_code == 200
    assert len(fhir.calls) == 0
    assert "Condition" not in captured["record"].resources
    assert captured["record"].incomplete == ()


def test_absent_key_is_fetched_with_the_bearer_token(client, captured, fhir):
    prefetch = full_prefetch()
    del prefetch["conditions"]
    fhir.get(re.compile(rf"{re.escape(FHIR)}/Condition\?.*"), json=bundle(condition("c9")))
    response = client.post(SELECT, json=with_server(hook_request(prefetch=prefetch)))
    assert response.status_code == 200
    assert len(fhir.calls) == 1
    call = fhir.calls[0].request
    assert call.headers["Authorization"] == "Bearer secret-access-token"
    assert f"patient={PATIENT_ID}" in call.url
    assert [c["id"] for c in captured["record"].resources["Condition"]] == ["c9"]


def test_operation_outcome_prefetch_is_queried_again(client, captured, fhir):
    prefetch = full_prefetch()
    prefetch["medications"] = {"resourceType": "OperationOutcome",
                               "issue": [{"severity": "error", "code": "timeout"}]}
    med = {"resourceType": "MedicationRequest", "id": "m1", "subject": {"reference": f"Patient/{PATIENT_ID}"}}
    fhir.get(re.compile(rf"{re.escape(FHIR)}/MedicationRequest\?.*"), json=bundle(med))
    response = client.post(SELECT, json=with_server(hook_request(prefetch=prefetch)))
    assert response.status_code == 200
    assert [m["id"] for m in captured["record"].resources["MedicationRequest"]] == ["m1"]
    assert captured["record"].incomplete == ()


def test_operation_outcome_without_a_server_degrades(client, captured):
    prefetch = full_prefetch()
    prefetch["procedures"] = {"resourceType": "OperationOutcome",
                              "issue": [{"severity": "error", "code": "x"}]}
    prefetch["observations"] = {
        "resourceType": "Bundle", "type": "searchset",
        "entry": [{"resource": {"resourceType": "Observation", "id": "o1",
                                "subject": {"reference": f"Patient/{PATIENT_ID}"}}},
                  {"resource": {"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]},
                   "search": {"mode": "outcome"}}],
    }
    response = client.post(SELECT, json=hook_request(prefetch=prefetch))
    assert response.status_code == 200
    record = captured["record"]
    assert record.incomplete == ("observations", "procedures")
    assert [o["id"] for o in record.resources["Observation"]] == ["o1"]  # partial data kept
    assert "OperationOutcome" not in record.resources


def test_informational_outcome_in_a_bundle_is_not_an_error(client, captured):
    prefetch = full_prefetch()
    prefetch["observations"]["entry"] = [
        {"resource": {"resourceType": "OperationOutcome", "issue": [{"severity": "information"}]}}
    ]
    assert client.post(SELECT, json=hook_request(prefetch=prefetch)).status_code == 200
    assert captured["record"].incomplete == ()


def test_missing_keys_without_server_degrade_to_incomplete(client, captured):
    response = client.post(SELECT, json=hook_request(prefetch={"patient": patient()}))
    assert response.status_code == 200
    assert set(captured["record"].incomplete) == set(load_prefetch_templates()) - {"patient"}
    assert {"conditions", "medications", "medication-administrations", "medication-statements",
            "procedures", "diagnostic-reports"} <= set(captured["record"].incomplete)


def test_no_prefetch_at_all_is_fetched_concurrently(client, captured, fhir):
    serve_all(fhir, conditions=[condition("c1")])
    response = client.post(SELECT, json=with_server(hook_request()))
    assert response.status_code == 200
    assert len(fhir.calls) == QUERIES
    assert captured["record"].patient["id"] == PATIENT_ID
    assert captured["record"].incomplete == ()


def test_patient_missing_everywhere_is_412(client, fhir):
    response = client.post(SELECT, json=hook_request(prefetch={"conditions": bundle()}))
    assert response.status_code == 412
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert "patient" in body["issue"][0]["diagnostics"]


def test_null_patient_is_412(client):
    prefetch = full_prefetch()
    prefetch["patient"] = None
    assert client.post(SELECT, json=hook_request(prefetch=prefetch)).status_code == 412


def test_patient_not_found_on_server_is_412(client, fhir):
    fhir.get(f"{FHIR}/Patient/{PATIENT_ID}", status=404, json={"resourceType": "OperationOutcome"})
    prefetch = full_prefetch()
    del prefetch["patient"]
    response = client.post(SELECT, json=with_server(hook_request(prefetch=prefetch)))
    assert response.status_code == 412


def test_server_error_for_patient_is_412(client, fhir):
    fhir.get(f"{FHIR}/Patient/{PATIENT_ID}", status=401)
    response = client.post(SELECT, json=with_server(hook_request()))
    assert response.status_code == 412
    assert "secret-access-token" not in response.get_data(as_text=True)


def test_patient_with_another_id_is_not_accepted(client, captured, fhir):
    prefetch = full_prefetch()
    prefetch["patient"] = patient("someone-else")
    assert client.post(SELECT, json=hook_request(prefetch=prefetch)).status_code == 412
    fhir.get(f"{FHIR}/Patient/{PATIENT_ID}", json=patient())
    response = client.post(SELECT, json=with_server(hook_request(prefetch=prefetch)))
    assert response.status_code == 200
    assert captured["record"].patient["id"] == PATIENT_ID


def test_resources_about_another_patient_are_dropped(client, captured):
    prefetch = full_prefetch()
    prefetch["conditions"] = bundle(condition("mine"), condition("theirs", pid="other"))
    client.post(SELECT, json=hook_request(prefetch=prefetch))
    assert [c["id"] for c in captured["record"].resources["Condition"]] == ["mine"]


def test_resources_are_grouped_and_deduplicated_by_id(client, captured):
    prefetch = full_prefetch()
    obs = {"resourceType": "Observation", "id": "o1", "subject": {"reference": f"Patient/{PATIENT_ID}"}}
    prefetch["observations"] = bundle(obs, {"resourceType": "Condition", "id": "c1"})
    prefetch["staging-observations"] = bundle(obs)
    client.post(SELECT, json=hook_request(prefetch=prefetch))
    resources = captured["record"].resources
    assert [o["id"] for o in resources["Observation"]] == ["o1"]
    assert [c["id"] for c in resources["Condition"]] == ["c1"]


def test_bundle_next_links_are_followed(client, captured, fhir):
    prefetch = full_prefetch()
    del prefetch["conditions"]
    fhir.get(re.compile(rf"{re.escape(FHIR)}/Condition\?patient=.*"),
             json=bundle(condition("c1"), next_url=f"{FHIR}/Condition-page?p=2"))
    fhir.get(f"{FHIR}/Condition-page?p=2", json=bundle(condition("c2"), next_url="Condition-page?p=3"))
    fhir.get(f"{FHIR}/Condition-page?p=3", json=bundle(condition("c3")))
    response = client.post(SELECT, json=with_server(hook_request(prefetch=prefetch)))
    assert response.status_code == 200
    assert [c["id"] for c in captured["record"].resources["Condition"]] == ["c1", "c2", "c3"]
    assert all(c.request.headers["Authorization"] == "Bearer secret-access-token" for c in fhir.calls)


def test_paginated_prefetch_is_completed_from_the_server(client, captured, fhir):
    prefetch = full_prefetch()
    prefetch["conditions"] = bundle(condition("c1"), next_url=f"{FHIR}/Condition-page?p=2")
    fhir.get(f"{FHIR}/Condition-page?p=2", json=bundle(condition("c2")))
    response = client.post(SELECT, json=with_server(hook_request(prefetch=prefetch)))
    assert response.status_code == 200
    assert [c["id"] for c in captured["record"].resources["Condition"]] == ["c1", "c2"]


def test_page_cap_stops_and_marks_incomplete(make_app, captured, fhir):
    prefetch = full_prefetch()
    del prefetch["conditions"]
    endless = bundle(condition("c1"), next_url=f"{FHIR}/Condition?page=n")
    fhir.get(re.compile(rf"{re.escape(FHIR)}/Condition.*"), json=endless)
    client = make_app(fhir_page_cap=3).test_client()
    response = client.post(SELECT, json=with_server(hook_request(prefetch=prefetch)))
    assert response.status_code == 200
    assert len(fhir.calls) == 3
    assert captured["record"].incomplete == ("conditions",)


def test_timeout_degrades_to_incomplete(client, captured, fhir):
    prefetch = full_prefetch()
    del prefetch["procedures"]
    fhir.get(re.compile(rf"{re.escape(FHIR)}/Procedure\?.*"), body=requests.ReadTimeout("slow"))
    response = client.post(SELECT, json=with_server(hook_request(prefetch=prefetch)))
    assert response.status_code == 200
    assert captured["record"].incomplete == ("procedures",)


def test_timeouts_are_passed_to_every_call(make_app, captured, fhir, monkeypatch):
    from cds_service.protocol import fhir_client

    serve_all(fhir)
    seen = []
    original = fhir_client._send

    def spy(url, headers, timeout):
        seen.append(timeout)
        return original(url, headers, timeout)

    # (the module's function, not HTTPAdapter.send: the `fhir` mock patches that, and undoing a
    # patch over it after the mock has stopped would leave the mock in place for later tests)
    monkeypatch.setattr(fhir_client, "_send", spy)
    make_app(fhir_connect_timeout=0.7, fhir_read_timeout=1.2).test_client().post(
        SELECT, json=with_server(hook_request()))
    assert len(seen) == QUERIES
    assert all(t is not None and t[0] <= 0.7 and t[1] <= 1.2 for t in seen)


def test_host_not_allowed_gets_no_outbound_call(client, captured, fhir):
    prefetch = full_prefetch()
    del prefetch["conditions"]
    body = with_server(hook_request(prefetch=prefetch), server="https://evil.example.com/fhir")
    response = client.post(SELECT, json=body)
    assert response.status_code == 200
    assert len(fhir.calls) == 0
    assert captured["record"].incomplete == ("conditions",)


def test_host_not_allowed_and_no_patient_is_412_without_call(client, fhir):
    body = with_server(hook_request(), server="https://evil.example.com/fhir")
    assert client.post(SELECT, json=body).status_code == 412
    assert len(fhir.calls) == 0


def test_plain_http_needs_an_http_allowance(client, fhir):
    body = with_server(hook_request(), server="http://fhir.example.org/r4")  # allowed for https only
    assert client.post(SELECT, json=body).status_code == 412
    assert len(fhir.calls) == 0


def test_http_localhost_allowed_in_development(client, captured, fhir):
    serve_all(fhir, base="http://localhost:9999/fhir")
    body = with_server(hook_request(), server="http://localhost:9999/fhir", token=None)
    assert client.post(SELECT, json=body).status_code == 200
    assert len(fhir.calls) == QUERIES
    assert "Authorization" not in fhir.calls[0].request.headers


def test_next_link_to_another_host_is_not_followed(client, captured, fhir):
    prefetch = full_prefetch()
    prefetch["conditions"] = bundle(condition("c1"), next_url="https://evil.example.com/steal?p=2")
    response = client.post(SELECT, json=with_server(hook_request(prefetch=prefetch)))
    assert response.status_code == 200
    assert len(fhir.calls) == 0
    assert captured["record"].incomplete == ("conditions",)
    assert [c["id"] for c in captured["record"].resources["Condition"]] == ["c1"]


def test_no_service_request_in_focus_needs_no_data(client, fhir):
    body = with_server(hook_request())
    body["context"]["draftOrders"]["entry"].append(
        {"resource": {"resourceType": "MedicationRequest", "id": "m1", "status": "draft"}})
    body["context"]["selections"] = ["MedicationRequest/m1"]
    response = client.post(SELECT, json=body)
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}
    assert len(fhir.calls) == 0


def test_overall_deadline_stops_waiting_for_a_hung_query(make_app, captured, fhir):
    import threading

    release = threading.Event()

    def hung(_request):
        release.wait(5)
        return 200, {"Content-Type": "application/fhir+json"}, '{"resourceType": "Bundle"}'

    prefetch = full_prefetch()
    del prefetch["procedures"], prefetch["conditions"]
    fhir.add_callback(responses.GET, re.compile(rf"{re.escape(FHIR)}/Procedure\?.*"), callback=hung)
    fhir.get(re.compile(rf"{re.escape(FHIR)}/Condition\?.*"), json=bundle(condition("c1")))
    try:
        client = make_app(fhir_deadline=0.3).test_client()
        response = client.post(SELECT, json=with_server(hook_request(prefetch=prefetch)))
    finally:
        release.set()
    assert response.status_code == 200
    assert captured["record"].incomplete == ("procedures",)
    assert [c["id"] for c in captured["record"].resources["Condition"]] == ["c1"]


def test_patient_key_answered_with_a_bundle_of_someone_else_is_412(client, captured):
    prefetch = full_prefetch()
    prefetch["patient"] = bundle(patient("someone-else"))
    assert client.post(SELECT, json=hook_request(prefetch=prefetch)).status_code == 412
    prefetch["patient"] = bundle(patient("someone-else"), patient())
    assert client.post(SELECT, json=hook_request(prefetch=prefetch)).status_code == 200
    assert captured["record"].patient["id"] == PATIENT_ID
    assert [p["id"] for p in captured["record"].resources["Patient"]] == [PATIENT_ID]


def test_tokens_resolve_from_context_and_user():
    from cds_service.model import HookRequest
    from cds_service.protocol.prefetch import resolve_tokens

    request = HookRequest(hook="order-sign", hook_instance="h", service_id="s", patient_id="p1",
                          user_id="PractitionerRole/r9", draft_orders=(), encounter_id="e2")
    assert resolve_tokens("Patient/{{context.patientId}}", request) == "Patient/p1"
    assert resolve_tokens("Encounter/{{context.encounterId}}", request) == "Encounter/e2"
    assert resolve_tokens("PractitionerRole/{{userPractitionerRoleId}}", request) == "PractitionerRole/r9"
    assert resolve_tokens("Practitioner/{{userPractitionerId}}", request) is None  # not a Practitioner


# --- patient identity (cds_service.identity) ----------------------------------------------------

MRN = "urn:oid:1.2.36.146.595.217.0.1"


def _with_subject(resource, subject):
    return {**resource, "subject": subject}


@pytest.mark.parametrize("subject", [
    {"reference": "urn:uuid:00000000-0000-4000-8000-0000000000ff"},
    {"identifier": {"system": MRN, "value": "other-mrn"}},
    {"reference": "other", "type": "Patient"},
    {"reference": "#pat"},
    {"display": "Pat One"},
    {"reference": f"patient/{PATIENT_ID}"},
    {"reference": "https://fhir.example.org/r4/Patient/other"},
])
def test_every_foreign_reference_form_is_dropped_and_counted(client, captured, caplog, subject):
    prefetch = full_prefetch()
    prefetch["conditions"] = bundle(condition("mine"), _with_subject(condition("theirs"), subject))
    with caplog.at_level("WARNING", logger="cds_service.protocol.prefetch"):
        client.post(SELECT, json=hook_request(prefetch=prefetch))
    record = captured["record"]
    assert [c["id"] for c in record.resources["Condition"]] == ["mine"]
    assert record.not_this_patient == 1
    assert record.incomplete == ()  # the key still had the patient's own data
    assert "dropped 1 resources" in caplog.text
    assert "other-mrn" not in caplog.text and "theirs" not in caplog.text  # counts only, never ids


def test_urn_uuid_of_the_patient_entry_in_the_same_bundle_is_the_patient(client, captured):
    prefetch = full_prefetch()
    urn = "urn:uuid:8c5a1d2e-1111-4222-8333-944455556666"
    prefetch["conditions"] = {
        "resourceType": "Bundle", "type": "searchset",
        "entry": [
            {"fullUrl": urn, "resource": patient(), "search": {"mode": "include"}},
            {"fullUrl": "urn:uuid:1", "resource": _with_subject(condition("c-urn"), {"reference": urn})},
        ],
    }
    client.post(SELECT, json=hook_request(prefetch=prefetch))
    record = captured["record"]
    assert [c["id"] for c in record.resources["Condition"]] == ["c-urn"]
    assert record.not_this_patient == 0


def test_identifier_only_subject_matches_the_patients_identifier(client, captured):
    prefetch = full_prefetch()
    prefetch["patient"] = {**patient(), "identifier": [{"system": MRN, "value": "mrn-1"}]}
    prefetch["conditions"] = bundle(
        _with_subject(condition("by-mrn"), {"identifier": {"system": MRN, "value": "mrn-1"}}),
        _with_subject(condition("other-mrn"), {"identifier": {"system": MRN, "value": "mrn-2"}}),
    )
    client.post(SELECT, json=hook_request(prefetch=prefetch))
    record = captured["record"]
    assert [c["id"] for c in record.resources["Condition"]] == ["by-mrn"]
    assert record.not_this_patient == 1


def test_a_key_whose_every_result_is_someone_elses_is_incomplete(client, captured):
    prefetch = full_prefetch()
    prefetch["conditions"] = bundle(condition("theirs", pid="other"), condition("theirs-2", pid="other"))
    client.post(SELECT, json=hook_request(prefetch=prefetch))
    record = captured["record"]
    assert "Condition" not in record.resources
    assert record.incomplete == ("conditions",)
    assert record.not_this_patient == 2


def test_fhir_fallback_results_go_through_the_same_check(client, captured, fhir):
    prefetch = full_prefetch()
    del prefetch["conditions"]
    fhir.get(re.compile(rf"{re.escape(FHIR)}/Condition\?.*"), json=bundle(
        _with_subject(condition("theirs"), {"reference": "urn:uuid:123"}),
        _with_subject(condition("theirs-2"), {"identifier": {"system": MRN, "value": "x"}}),
    ))
    client.post(SELECT, json=with_server(hook_request(prefetch=prefetch)))
    record = captured["record"]
    assert "Condition" not in record.resources
    assert record.incomplete == ("conditions",)  # the server's answer held none of the patient's data
    assert record.not_this_patient == 2


def test_fhir_fallback_urn_uuid_subject_resolves_through_an_included_patient(client, captured, fhir):
    prefetch = full_prefetch()
    del prefetch["conditions"]
    urn = "urn:uuid:8c5a1d2e-1111-4222-8333-944455550000"
    fhir.get(re.compile(rf"{re.escape(FHIR)}/Condition\?.*"), json={
        "resourceType": "Bundle", "type": "searchset",
        "entry": [{"fullUrl": urn, "resource": patient()},
                  {"resource": _with_subject(condition("c1"), {"reference": urn})}],
    })
    client.post(SELECT, json=with_server(hook_request(prefetch=prefetch)))
    assert [c["id"] for c in captured["record"].resources["Condition"]] == ["c1"]
    assert captured["record"].incomplete == ()


def test_dropped_resources_lower_confidence_on_the_card(client):
    # End to end through the engine: the answer says data is missing.
    prefetch = full_prefetch()
    prefetch["conditions"] = bundle(condition("theirs", pid="other"))
    body = client.post(SELECT, json=hook_request(prefetch=prefetch)).get_json()
    details = " ".join(card["detail"] for card in body["cards"])
    assert "belong to another patient" in details
    assert "could not retrieve conditions" in details


def _med_request(mid: str, reference: str) -> dict:
    return {"resourceType": "MedicationRequest", "id": mid, "status": "active", "intent": "order",
            "subject": {"reference": f"Patient/{PATIENT_ID}"},
            "medicationReference": {"reference": reference}}


def test_a_referenced_medication_nobody_sent_is_read_from_the_server(client, captured, fhir):
    # The EHR ignored _include: the order names Medication/enza, which is not in prefetch.
    prefetch = full_prefetch()
    prefetch["medications"] = bundle(
        _med_request("m1", "Medication/enza"),
        _med_request("m2", f"{FHIR}/Medication/enza"),  # the same one, absolute: read once
        _med_request("m3", "https://elsewhere.example/fhir/Medication/x"),  # another server: never
    )
    fhir.get(f"{FHIR}/Medication/enza", json={"resourceType": "Medication", "id": "enza", "code": {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1307298"}]}})
    assert client.post(SELECT, json=with_server(hook_request(prefetch=prefetch))).status_code == 200
    assert [m["id"] for m in captured["record"].resources["Medication"]] == ["enza"]
    assert [c.request.url for c in fhir.calls] == [f"{FHIR}/Medication/enza"]


def test_a_medication_already_sent_is_not_read_again(client, captured, fhir):
    prefetch = full_prefetch()
    prefetch["medications"] = bundle(_med_request("m1", "Medication/enza"),
                                     {"resourceType": "Medication", "id": "enza"})
    assert client.post(SELECT, json=with_server(hook_request(prefetch=prefetch))).status_code == 200
    assert len(fhir.calls) == 0


def test_an_unreadable_referenced_medication_degrades_quietly(client, captured, fhir):
    prefetch = full_prefetch()
    prefetch["medications"] = bundle(_med_request("m1", "Medication/gone"))
    fhir.get(f"{FHIR}/Medication/gone", status=404, json={"resourceType": "OperationOutcome", "issue": []})
    assert client.post(SELECT, json=with_server(hook_request(prefetch=prefetch))).status_code == 200
    assert "Medication" not in captured["record"].resources

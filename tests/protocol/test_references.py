"""reasonReference targets the prefetch did not bring are read from fhirServer, within the same rules."""

from __future__ import annotations

import re

import responses

from cds_service.protocol.references import missing_targets

from .conftest import FHIR, PATIENT_ID, full_prefetch, hook_request, service_request

SELECT = "/cds-services/imaging-appropriateness"
TOKEN = "secret-access-token"


def observation(oid: str, pid: str = PATIENT_ID) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "102568007"}]},
    }


def call(*references, prefetch=None, server=FHIR):
    order = service_request()
    order["reasonReference"] = list(references)
    body = hook_request(prefetch=prefetch if prefetch is not None else full_prefetch())
    body["context"]["draftOrders"]["entry"] = [{"resource": order}]
    body["fhirServer"] = server
    body["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cds-service",
    }
    return body


def test_a_target_missing_from_prefetch_is_read_with_the_token(client, captured, fhir):
    fhir.get(f"{FHIR}/Observation/neuro-1", json=observation("neuro-1"))
    response = client.post(SELECT, json=call({"reference": "Observation/neuro-1"}))
    assert response.status_code == 200
    assert [c.request.url for c in fhir.calls] == [f"{FHIR}/Observation/neuro-1"]
    assert fhir.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert [o["id"] for o in captured["record"].resources["Observation"]] == ["neuro-1"]
    assert captured["record"].incomplete == ()


def test_a_target_already_in_prefetch_is_not_read_again(client, captured, fhir):
    response = client.post(SELECT, json=call({"reference": f"{FHIR}/Condition/c1/_history/3"}))
    assert response.status_code == 200
    assert len(fhir.calls) == 0
    assert [c["id"] for c in captured["record"].resources["Condition"]] == ["c1"]


def test_another_patients_target_never_reaches_the_record(client, captured, fhir):
    fhir.get(f"{FHIR}/Observation/neuro-2", json=observation("neuro-2", pid="someone-else"))
    response = client.post(SELECT, json=call({"reference": "Observation/neuro-2"}))
    assert response.status_code == 200
    assert len(fhir.calls) == 1
    assert "Observation" not in captured["record"].resources


def test_a_failed_read_is_left_out_and_the_call_still_answers(client, captured, fhir):
    fhir.get(f"{FHIR}/Observation/gone", status=404, json={"resourceType": "OperationOutcome"})
    fhir.get(f"{FHIR}/DiagnosticReport/slow", body=responses.ConnectionError("timed out"))
    body = call({"reference": "Observation/gone"}, {"reference": "DiagnosticReport/slow"})
    response = client.post(SELECT, json=body)
    assert response.status_code == 200
    assert "Observation" not in captured["record"].resources
    assert "DiagnosticReport" not in captured["record"].resources


def test_a_server_answering_another_resource_is_not_believed(client, captured, fhir):
    fhir.get(f"{FHIR}/Observation/neuro-1", json=observation("neuro-9"))
    assert client.post(SELECT, json=call({"reference": "Observation/neuro-1"})).status_code == 200
    assert "Observation" not in captured["record"].resources


def test_no_read_without_an_allowed_server(client, captured, fhir):
    body = call({"reference": "Observation/neuro-1"}, server="https://not-allowed.example.com/fhir")
    assert client.post(SELECT, json=body).status_code == 200
    assert len(fhir.calls) == 0


def test_contained_uuid_other_server_and_foreign_types_are_not_read():
    orders = [
        {
            "reasonReference": [
                {"reference": "#reason-1"},
                {"reference": "urn:uuid:5b1c3c2e-0f3e-4a51-9d0c-0d1c1f6c7a11"},
                {"reference": "https://other-ehr.example.com/fhir/Condition/x"},
                {"reference": "Patient/pat-1"},
                {"display": "back pain"},
                "not a reference",
                {"reference": "Condition/c2"},
                {"reference": f"{FHIR}/Observation/o1"},
                {"reference": "Condition/c2"},  # twice: read once
            ]
        },
        {"reasonReference": {"reference": "DiagnosticReport/r1"}},  # sandbox: a single object
        "not an order",
    ]
    assert missing_targets(orders, {("Condition", "c1")}, FHIR + "/") == [
        ("Condition", "c2"),
        ("Observation", "o1"),
        ("DiagnosticReport", "r1"),
    ]


def test_reads_are_capped_per_call():
    orders = [{"reasonReference": [{"reference": f"Condition/c{n}"} for n in range(50)]}]
    assert len(missing_targets(orders, set(), FHIR)) == 10


def test_every_read_has_a_timeout(client, captured, fhir):
    seen = []

    def answer(request):
        seen.append(request.req_kwargs.get("timeout"))
        return 200, {"Content-Type": "application/fhir+json"}, '{"resourceType": "Observation", "id": "x"}'

    fhir.add_callback(responses.GET, re.compile(rf"{re.escape(FHIR)}/Observation/neuro-1"), callback=answer)
    assert client.post(SELECT, json=call({"reference": "Observation/neuro-1"})).status_code == 200
    assert len(seen) == 1
    connect, read = seen[0]
    assert connect > 0 and read > 0

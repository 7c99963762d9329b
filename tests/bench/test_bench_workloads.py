"""The synthetic workload generator: sizes, determinism, codes, and prefetch filled from discovery."""

import base64
import json

import pytest

from bench import workloads as wl

DISCOVERY = {
    "services": [
        {"id": "imaging-appropriateness-sign", "hook": "order-sign", "prefetch": {}},
        {
            "id": "imaging-appropriateness",
            "hook": "order-select",
            "prefetch": {
                "patient": "Patient/{{context.patientId}}",
                "psa": "Observation?patient={{context.patientId}}&code=http://loinc.org|2857-1&_count=200",
                "meds": "MedicationRequest?patient={{context.patientId}}&status=active",
                "everything-else": "Procedure?patient={{context.patientId}}&date=ge2020-01-01",
                "me": "Practitioner/{{userPractitionerId}}",
            },
        },
    ]
}


def _codes(resource, element="code"):
    return {(c["system"], c["code"]) for c in resource[element]["coding"]}


@pytest.mark.parametrize("total", [5, 100, 150, 1000, 2000, 5000])
def test_chart_has_exactly_the_requested_resources(total):
    chart = wl.generate_chart(total)
    assert chart.count() == total
    ids = [(t, r["id"]) for t, rs in chart.resources.items() for r in rs]
    assert len(ids) == len(set(ids))
    assert all(r["resourceType"] == t for t, rs in chart.resources.items() for r in rs)


def test_workload_sizes_follow_the_issue():
    assert wl.SIZES == {"small": 5, "typical": 150, "large": 2000}
    assert wl.SCALING_SIZES == (100, 1000, 5000)
    typical = wl.generate_chart(150)
    assert len(typical.resources["Observation"]) == 60
    assert set(typical.resources) == {
        "Condition",
        "Observation",
        "MedicationRequest",
        "Procedure",
        "DiagnosticReport",
    }


def test_chart_is_deterministic():
    assert json.dumps(wl.generate_chart(1000).resources) == json.dumps(wl.generate_chart(1000).resources)


def test_chart_carries_the_metastatic_prostate_picture():
    for total in (5, 150):
        chart = wl.generate_chart(total)
        conditions = set().union(*(_codes(c) for c in chart.resources["Condition"]))
        assert (wl.ICD10, "C61") in conditions and (wl.SNOMED, "399068003") in conditions
        assert (wl.SNOMED, "94222008") in conditions
        meds = set().union(
            *(_codes(m, "medicationCodeableConcept") for m in chart.resources["MedicationRequest"])
        )
        assert (wl.RXNORM, "752899") in meds  # leuprolide SCD, as Synthea writes it
        assert any(r.get("conclusionCode") for r in chart.resources["DiagnosticReport"])
    typical = wl.generate_chart(150)
    obs_codes = [c["code"]["coding"][0]["code"] for c in typical.resources["Observation"]]
    assert obs_codes.count("2857-1") >= 6  # a PSA series
    assert {"6768-6", "1920-8", "1742-6", "1975-2", "33914-3"} <= set(obs_codes)  # CMP labs
    psa = [o for o in typical.resources["Observation"] if o["code"]["coding"][0]["code"] == "2857-1"]
    assert psa[-1]["valueQuantity"]["value"] > psa[0]["valueQuantity"]["value"]  # rising on ADT
    assert all(o["valueQuantity"]["unit"] == "ng/mL" for o in psa)


def test_chart_refuses_fewer_than_five_resources():
    with pytest.raises(ValueError):
        wl.generate_chart(4)


def test_fill_template_tokens():
    ctx = {"patientId": "p1", "userId": "Practitioner/u1", "draftOrders": {}}
    assert wl.fill_template("Patient/{{context.patientId}}", ctx) == "Patient/p1"
    assert wl.fill_template("Practitioner/{{userPractitionerId}}", ctx) == "Practitioner/u1"
    with pytest.raises(KeyError):
        wl.fill_template("X?a={{context.draftOrders}}", ctx)  # not a primitive: not a 2.0 token
    with pytest.raises(KeyError):
        wl.fill_template("X?a={{userPatientId}}", ctx)


def test_search_filters_by_patient_code_and_status():
    chart = wl.generate_chart(150)
    kind, psa = wl.search(chart, f"Observation?patient={wl.PATIENT_ID}&code=http://loinc.org|2857-1")
    assert kind == "search" and psa and all(o["code"]["coding"][0]["code"] == "2857-1" for o in psa)
    _, either = wl.search(chart, "Observation?code=2857-1,6768-6")
    assert len(either) > len(psa)
    _, wrong_system = wl.search(chart, "Observation?code=http://snomed.info/sct|2857-1")
    assert wrong_system == []
    _, other_patient = wl.search(chart, "Condition?patient=Patient/someone-else")
    assert other_patient == []
    _, active = wl.search(chart, "MedicationRequest?status=active")
    assert active and all(m["status"] == "active" for m in active)
    _, unknown_param = wl.search(chart, "Procedure?date=ge2020-01-01")  # unknown filter: all of the type
    assert len(unknown_param) == len(chart.resources["Procedure"])
    assert wl.search(chart, f"Patient/{wl.PATIENT_ID}") == ("read", chart.patient)
    assert wl.search(chart, "Patient/nobody") == ("read", None)


def test_request_uses_discovered_prefetch_keys():
    service = wl.pick_service(DISCOVERY)
    assert service["id"] == "imaging-appropriateness"
    chart = wl.generate_chart(150)
    body = wl.build_request(service, chart)
    assert body["hook"] == "order-select"
    assert set(body["prefetch"]) == set(service["prefetch"])
    assert body["prefetch"]["patient"]["id"] == wl.PATIENT_ID
    assert body["prefetch"]["me"] is None  # a read the chart cannot answer is null, as a client sends
    psa = body["prefetch"]["psa"]
    assert psa["resourceType"] == "Bundle" and psa["type"] == "searchset"
    assert psa["total"] == len(psa["entry"]) == 10  # the monthly PSA series of the typical chart
    assert body["prefetch"]["everything-else"]["total"] == len(chart.resources["Procedure"])
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    assert order["code"]["coding"][0] == {
        "system": wl.CPT,
        "code": "78306",
        "display": "Bone and/or joint imaging; whole body",
    }
    assert body["context"]["selections"] == ["ServiceRequest/bench-order-1"]
    assert "fhirServer" not in body


def test_fallback_request_has_no_prefetch_and_names_the_server():
    service = wl.pick_service(DISCOVERY)
    body = wl.build_request(service, wl.generate_chart(5), prefetch=False, fhir_server="http://127.0.0.1:9")
    assert "prefetch" not in body
    assert body["fhirServer"] == "http://127.0.0.1:9"
    assert body["fhirAuthorization"]["token_type"] == "Bearer"


def test_pick_service_falls_back_to_first_order_select():
    assert wl.pick_service({"services": [{"id": "x", "hook": "order-select"}]}, "missing")["id"] == "x"
    with pytest.raises(LookupError):
        wl.pick_service({"services": [{"id": "y", "hook": "order-sign"}]}, "missing")


def test_text_chart_has_three_text_only_reports_and_keeps_its_size():
    base = wl.generate_chart(150)
    text = wl.text_only_reports(base)
    assert text.count() == base.count()
    reports = text.of_type("DiagnosticReport")[:3]
    assert all("conclusionCode" not in r and r["conclusion"] for r in reports)
    assert reports[0]["conclusion"] in base64.b64decode(reports[0]["presentedForm"][0]["data"]).decode()
    assert any("conclusionCode" in r for r in base.of_type("DiagnosticReport"))  # the original is untouched


def test_first_seen_chart_changes_every_id_and_report_text():
    chart = wl.text_only_reports(wl.generate_chart(150))
    seen = wl.first_seen(chart, 7)
    before = {r["id"] for rs in chart.resources.values() for r in rs}
    after = {r["id"] for rs in seen.resources.values() for r in rs}
    assert before.isdisjoint(after) and len(after) == len(before)
    texts = {r["conclusion"] for r in seen.of_type("DiagnosticReport")}
    assert all(t.endswith("Accession 7.") for t in texts)
    form = seen.of_type("DiagnosticReport")[0]["presentedForm"][0]["data"]
    assert base64.b64decode(form).decode().endswith("Accession 7.")


def test_text_reason_replaces_the_coded_reason():
    request = wl.build_request(DISCOVERY["services"][1], wl.generate_chart(5), text_reason=True)
    order = request["context"]["draftOrders"]["entry"][0]["resource"]
    assert order["reasonCode"] == [{"text": wl.TEXT_REASON}]


def test_first_seen_chart_is_another_patient_in_every_reference():
    chart = wl.generate_chart(150)
    seen = wl.first_seen(chart, 3)
    pid = seen.patient["id"]
    assert pid != chart.patient["id"] and chart.patient["id"] == wl.PATIENT_ID  # original untouched
    assert all(r["subject"] == {"reference": f"Patient/{pid}"} for rs in seen.resources.values() for r in rs)
    request = wl.build_request(DISCOVERY["services"][1], seen, hook_instance="h-3")
    context = request["context"]
    assert context["patientId"] == pid and request["hookInstance"] == "h-3"
    assert context["draftOrders"]["entry"][0]["resource"]["subject"] == {"reference": f"Patient/{pid}"}
    assert request["prefetch"]["patient"]["id"] == pid
    assert len(request["prefetch"]["psa"]["entry"]) > 0  # the search found the new patient's data


def test_case_requests_fill_prefetch_from_each_fixture_bundle():
    service = {"id": "imaging-appropriateness", "hook": "order-select",
               "prefetch": {"patient": "Patient/{{context.patientId}}",
                            "conditions": "Condition?patient={{context.patientId}}"}}
    requests = wl.case_requests(service)
    assert len(requests) >= 30
    for request in requests.values():
        assert request["hook"] == "order-select" and request["context"]["selections"]
        assert request["prefetch"]["patient"]["id"] == request["context"]["patientId"]
        assert request["prefetch"]["conditions"]["resourceType"] == "Bundle"

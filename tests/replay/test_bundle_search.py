"""bundle_search: FHIR reads and searches answered from one Bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import responses

from cds_service.bundle_search import BundleStore, SearchError

PATIENTS = Path(__file__).resolve().parents[2] / "fixtures" / "patients"
PID = "prostate-mets-adt-rising-psa"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.fixture
def store() -> BundleStore:
    return BundleStore(json.loads((PATIENTS / f"{PID}.json").read_text()), base_url="https://fhir.test/r4")


def ids(result) -> list[str]:
    return [e["resource"]["id"] for e in result.body["entry"]]


def test_rejects_non_bundle():
    with pytest.raises(SearchError):
        BundleStore({"resourceType": "Patient"})


def test_read_and_not_found(store):
    assert store.get(f"Patient/{PID}").body["id"] == PID
    missing = store.get("Patient/nobody")
    assert missing.status == 404 and missing.body["resourceType"] == "OperationOutcome"


def test_absolute_url_under_base(store):
    assert store.get(f"https://fhir.test/r4/Patient/{PID}").status == 200


def test_patient_and_subject_filters(store):
    assert store.get(f"Condition?patient={PID}").body["total"] == 2
    assert store.get(f"Condition?subject=Patient/{PID}").body["total"] == 2
    assert store.get("Condition?patient=someone-else").body["total"] == 0


def test_code_tokens(store):
    both = store.get(f"Observation?patient={PID}&code=http://loinc.org|2857-1,http://loinc.org|98979-8")
    assert both.body["total"] == 5
    assert store.get("Observation?code=2857-1").body["total"] == 4  # code without system
    assert store.get("Observation?code=http://snomed.info/sct|2857-1").body["total"] == 0
    assert store.get("Observation?code=http://loinc.org|").body["total"] == 5  # any code of the system
    assert store.get("Observation?code=|2857-1").body["total"] == 0  # explicitly no system
    meds = store.get("MedicationRequest?code=http://www.nlm.nih.gov/research/umls/rxnorm|1307298")
    assert meds.body["total"] == 1  # MedicationRequest searches medicationCodeableConcept


def test_status_category_clinical_status(store):
    assert store.get("Condition?clinical-status=active").body["total"] == 2
    assert store.get("Condition?clinical-status=resolved").body["total"] == 0
    assert store.get("Observation?category=laboratory").body["total"] == 5
    rad = "DiagnosticReport?category=http://terminology.hl7.org/CodeSystem/v2-0074|RAD"
    assert store.get(rad).body["total"] == 1
    assert store.get("MedicationRequest?status=active,completed").body["total"] == 2
    assert store.get("MedicationRequest?status=stopped").body["total"] == 0


def test_date_filter_and_sort(store):
    psa = "Observation?code=http://loinc.org|2857-1"
    assert store.get(psa + "&date=ge2026-06-01").body["total"] == 3
    assert store.get(psa + "&date=lt2026-06-01").body["total"] == 1
    dates = [e["resource"]["effectiveDateTime"] for e in store.get(psa + "&_sort=-date").body["entry"]]
    assert dates == sorted(dates, reverse=True)


def test_count_and_next_links_page_through_everything(store):
    first = store.get("Observation?_count=2")
    assert first.body["total"] == 5 and len(first.body["entry"]) == 2
    seen = ids(first)
    link = {lk["relation"]: lk["url"] for lk in first.body["link"]}
    while "next" in link:
        page = store.get(link["next"])
        seen += ids(page)
        link = {lk["relation"]: lk["url"] for lk in page.body["link"]}
    assert len(seen) == 5 == len(set(seen))


def test_unknown_parameters_are_ignored_and_reported(store):
    result = store.get("Observation?patient=x&_include=Observation:performer&code:in=http://vs")
    assert result.status == 200
    assert set(result.ignored) == {"_include", "code:in"}


def medication_bundle() -> dict:
    """A transaction-style Bundle: the order names its Medication by the entry's urn:uuid."""
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "id": "p"}},
        {"fullUrl": "urn:uuid:med-1", "resource": {
            "resourceType": "Medication", "id": "med-1",
            "code": {"coding": [{"system": RXNORM, "code": "1307298"}]}}},
        {"fullUrl": "urn:uuid:mr-1", "resource": {
            "resourceType": "MedicationRequest", "id": "mr-1", "status": "active", "intent": "order",
            "subject": {"reference": "urn:uuid:p"}, "medicationReference": {"reference": "urn:uuid:med-1"}}},
        {"fullUrl": "urn:uuid:ma-1", "resource": {
            "resourceType": "MedicationAdministration", "id": "ma-1", "status": "completed",
            "subject": {"reference": "urn:uuid:p"},
            "medicationReference": {"reference": "Medication/med-1"}}},
    ]}


@pytest.mark.parametrize("rtype", ["MedicationRequest", "MedicationAdministration"])
def test_include_brings_the_referenced_medication_once(rtype):
    store = BundleStore(medication_bundle())
    result = store.get(f"{rtype}?patient=p&_include={rtype}:medication")
    assert result.status == 200 and result.ignored == ()
    modes = [(e["resource"]["resourceType"], e["search"]["mode"]) for e in result.body["entry"]]
    assert modes == [(rtype, "match"), ("Medication", "include")]
    assert result.body["total"] == 1  # included resources are not matches


def test_without_include_no_medication_comes_along():
    result = BundleStore(medication_bundle()).get("MedicationRequest?patient=p")
    assert [e["resource"]["resourceType"] for e in result.body["entry"]] == ["MedicationRequest"]


def test_include_for_another_resource_type_is_ignored():
    result = BundleStore(medication_bundle()).get(
        "MedicationRequest?patient=p&_include=MedicationStatement:medication")
    assert result.ignored == ("_include",)
    assert [e["resource"]["resourceType"] for e in result.body["entry"]] == ["MedicationRequest"]


def test_bad_path(store):
    assert store.get("metadata").status == 400


@responses.activate
def test_serves_a_fhir_server_through_responses(store):
    import re

    responses.add_callback(responses.GET, re.compile(r"https://fhir\.test/r4/.*"),
                           callback=store.responses_callback)
    resp = requests.get(f"https://fhir.test/r4/Condition?patient={PID}", timeout=5)
    assert resp.status_code == 200 and resp.json()["total"] == 2
    assert requests.get("https://fhir.test/r4/Patient/none", timeout=5).status_code == 404


def test_transaction_bundle_urn_uuid_references_resolve_like_a_server():
    # Synthea-style transaction bundle: the subject is the Patient entry's urn:uuid fullUrl.
    pid = "9efca32a-04f9-438a-990c-a287e8b62aac"
    bundle = {
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": f"urn:uuid:{pid}", "resource": {"resourceType": "Patient", "id": pid}},
            {"fullUrl": "urn:uuid:c1", "resource": {
                "resourceType": "Condition", "id": "c1", "subject": {"reference": f"urn:uuid:{pid}"},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "314994000"}]}}},
            {"fullUrl": "urn:uuid:o1", "resource": {
                "resourceType": "Observation", "id": "o1", "status": "final",
                "subject": {"reference": "urn:uuid:someone-else"}}},
        ],
    }
    store = BundleStore(bundle)
    found = store.get(f"Condition?patient={pid}").body["entry"]
    assert [e["resource"]["subject"]["reference"] for e in found] == [f"Patient/{pid}"]
    assert store.get(f"Observation?patient={pid}").body["entry"] == []  # unresolved: not this patient
    assert bundle["entry"][1]["resource"]["subject"]["reference"] == f"urn:uuid:{pid}"  # input untouched


def _store_with(*resources):
    patient = {"resourceType": "Patient", "id": "p1",
               "identifier": [{"system": "urn:mrn", "value": "m1"}]}
    entries = [{"fullUrl": "urn:uuid:p1-entry", "resource": patient}]
    entries += [{"resource": r} for r in resources]
    return BundleStore({"resourceType": "Bundle", "type": "collection", "entry": entries})


def _cond(cid, subject):
    return {"resourceType": "Condition", "id": cid, "subject": subject, "code": {"text": "x"}}


def test_search_by_patient_uses_the_service_identity_rule():
    store = _store_with(
        _cond("rel", {"reference": "Patient/p1"}),
        _cond("abs", {"reference": "https://ehr.example/fhir/Patient/p1"}),
        _cond("urn", {"reference": "urn:uuid:p1-entry"}),  # rewritten to Patient/p1, as a server does
        _cond("mrn", {"identifier": {"system": "urn:mrn", "value": "m1"}}),
        _cond("typed", {"reference": "p1", "type": "Patient"}),
        _cond("other", {"reference": "Patient/p2"}),
        _cond("other-mrn", {"identifier": {"system": "urn:mrn", "value": "m2"}}),
        _cond("lower", {"reference": "patient/p1"}),
        _cond("display", {"display": "P One"}),
        _cond("contained", {"reference": "#p"}),
        {"resourceType": "Condition", "id": "none", "code": {"text": "x"}},
    )
    assert ids(store.get("Condition?patient=p1")) == ["rel", "abs", "urn", "mrn", "typed"]
    assert ids(store.get("Condition?patient=Patient/p1")) == ["rel", "abs", "urn", "mrn", "typed"]


def test_value_concept_search_matches_the_coded_value():
    sct = "http://snomed.info/sct"
    weakness = {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"},
                "code": {"coding": [{"system": sct, "code": "102957003"}]},
                "valueCodeableConcept": {"coding": [{"system": sct, "code": "26544005"}]}}
    other = {**weakness, "id": "o2", "valueCodeableConcept": {"coding": [{"system": sct, "code": "1"}]}}
    store = _store_with(weakness, other)
    assert ids(store.get(f"Observation?patient=p1&value-concept={sct}|26544005")) == ["o1"]

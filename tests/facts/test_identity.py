"""Patient identity: which resources are the context patient's (every FHIR reference form)."""

from __future__ import annotations

import pytest

from cds_service.facts import extract_facts
from cds_service.identity import (
    NO_SUBJECT,
    NOT_SCOPED,
    OTHER,
    OWN,
    UNRESOLVED,
    PatientIdentity,
    belongs,
    patient_full_urls,
    resolve_reference,
    usable,
)

from .conftest import LNC, SCT, condition, observation, quantity, record

MRN = "urn:oid:1.2.36.146.595.217.0.1"
PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "identifier": [{"system": MRN, "value": "12345"}, {"value": "no-system"}],
}
ME = PatientIdentity.of("p1", PATIENT, full_urls=["urn:uuid:7f3c2a1e-0000-4000-8000-000000000001"])


@pytest.mark.parametrize(
    ("reference", "verdict"),
    [
        ({"reference": "Patient/p1"}, OWN),
        ({"reference": "Patient/p1/_history/3"}, OWN),
        ({"reference": "https://ehr.example.org/fhir/r4/Patient/p1"}, OWN),
        ({"reference": "http://other-base.example/Patient/p1/_history/1"}, OWN),
        ({"reference": "urn:uuid:7f3c2a1e-0000-4000-8000-000000000001"}, OWN),
        ({"reference": "urn:uuid:p1"}, OWN),  # Synthea names each entry urn:uuid:<its id>
        ({"reference": "p1", "type": "Patient"}, OWN),
        ({"reference": "Patient/p1", "type": "Patient"}, OWN),
        ({"identifier": {"system": MRN, "value": "12345"}}, OWN),
        ({"identifier": {"system": MRN, "value": "12345"}, "type": "Patient", "display": "Doe"}, OWN),
        ({"reference": "Patient/p1", "identifier": {"system": MRN, "value": "12345"}}, OWN),
        ({"reference": "Patient/p2"}, OTHER),
        ({"reference": "https://ehr.example.org/fhir/r4/Patient/p2"}, OTHER),
        ({"reference": "p2", "type": "Patient"}, OTHER),
        ({"reference": "p1", "type": "Group"}, OTHER),
        ({"reference": "Patient/p1", "type": "Group"}, OTHER),
        ({"identifier": {"system": MRN, "value": "99999"}}, OTHER),
        ({"reference": "Patient/p1", "identifier": {"system": MRN, "value": "99999"}}, OTHER),
        ({"identifier": {"system": "urn:other-hospital", "value": "12345"}}, UNRESOLVED),
        ({"identifier": {"value": "12345"}}, UNRESOLVED),  # no system: cannot be matched
        ({"identifier": {"value": "no-system"}}, UNRESOLVED),
        ({"reference": "urn:uuid:00000000-0000-4000-8000-000000000099"}, UNRESOLVED),
        ({"reference": "#pat"}, UNRESOLVED),
        ({"reference": "patient/p1"}, UNRESOLVED),  # resource types are case-sensitive
        ({"reference": "PATIENT/p1"}, UNRESOLVED),
        ({"reference": "Group/p1"}, UNRESOLVED),
        ({"reference": "p1"}, UNRESOLVED),  # a bare id without a type
        ({"reference": "https://ehr.example.org/Patient/p1/extra"}, UNRESOLVED),
        ({"display": "John Doe (p1)"}, UNRESOLVED),
        ({}, UNRESOLVED),
        ("Patient/p1", UNRESOLVED),  # not a Reference object
    ],
)
def test_every_reference_form(reference, verdict):
    assert resolve_reference(reference, ME) == verdict


def _cond(**fields):
    return {"resourceType": "Condition", "id": "c", "code": {"text": "x"}, **fields}


def test_resources_kept_and_dropped():
    assert belongs(_cond(subject={"reference": "Patient/p1"}), ME) == OWN
    assert belongs(_cond(subject={"reference": "Patient/p2"}), ME) == OTHER
    assert belongs(_cond(), ME) == NO_SUBJECT
    assert belongs({"resourceType": "Observation", "id": "o"}, ME) == NO_SUBJECT
    allergy = {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p2"}}
    assert belongs(allergy, ME) == OTHER
    # `patient` and `subject` both present: both must name the patient
    both = {"resourceType": "Basic", "subject": {"reference": "Patient/p1"},
            "patient": {"reference": "Patient/p9"}}
    assert belongs(both, ME) == OTHER
    # a Medication (or Practitioner) names no patient: nothing to check, usable
    assert belongs({"resourceType": "Medication", "id": "m"}, ME) == NOT_SCOPED
    assert usable(NOT_SCOPED) and usable(OWN)
    assert not any(usable(v) for v in (OTHER, UNRESOLVED, NO_SUBJECT))


def test_the_patient_resource_itself():
    assert belongs({"resourceType": "Patient", "id": "p1"}, ME) == OWN
    assert belongs({"resourceType": "Patient", "id": "p2"}, ME) == OTHER
    # no id (a transaction entry): the same person only through a shared identifier
    assert belongs({"resourceType": "Patient", "identifier": [{"system": MRN, "value": "12345"}]}, ME) == OWN
    assert belongs({"resourceType": "Patient"}, ME) == OTHER


def test_fast_path_does_not_skip_a_conflicting_type_or_identifier():
    typed = _cond(subject={"reference": "Patient/p1", "type": "Group"})
    assert belongs(typed, ME) == OTHER
    other_mrn = _cond(subject={"reference": "Patient/p1", "identifier": {"system": MRN, "value": "1"}})
    assert belongs(other_mrn, ME) == OTHER


def test_full_urls_come_only_from_the_context_patients_entry():
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:aaaa", "resource": {"resourceType": "Patient", "id": "p1"}},
            {"fullUrl": "urn:uuid:bbbb", "resource": {"resourceType": "Patient", "id": "p2"}},
            {"fullUrl": "urn:uuid:cccc", "resource": {"resourceType": "Condition", "id": "c"}},
            {"fullUrl": "urn:uuid:dddd", "resource": {"resourceType": "Patient",
                                                    "identifier": [{"system": MRN, "value": "12345"}]}},
            "junk",
        ],
    }
    identity = PatientIdentity.of("p1", PATIENT)
    urls = patient_full_urls(bundle, identity)
    assert urls == {"urn:uuid:aaaa", "urn:uuid:dddd"}
    identity = identity.with_urls(urls)
    assert belongs(_cond(subject={"reference": "urn:uuid:aaaa"}), identity) == OWN
    assert belongs(_cond(subject={"reference": "urn:uuid:bbbb"}), identity) == UNRESOLVED
    assert belongs(_cond(subject={"reference": "urn:uuid:cccc"}), identity) == UNRESOLVED


# --- the facts stage never lets another patient's resource reach the rules ----------------------

FOREIGN_SUBJECTS = [
    {"reference": "Patient/p2"},
    {"reference": "https://ehr.example.org/fhir/Patient/p2"},
    {"reference": "urn:uuid:00000000-0000-4000-8000-000000000099"},
    {"reference": "p2", "type": "Patient"},
    {"reference": "#contained-patient"},
    {"reference": "patient/p1"},
    {"display": "Someone Else"},
    {"identifier": {"system": MRN, "value": "99999"}},
]


@pytest.mark.parametrize("subject", FOREIGN_SUBJECTS)
def test_facts_stage_leaves_out_foreign_resources(valuesets, subject):
    mine = observation((LNC, "2857-1"), valueQuantity=quantity(0.05, "ng/mL", "ng/mL"))
    theirs = observation((LNC, "2857-1"), when="2026-11-01", valueQuantity=quantity(12.0, "ng/mL", "ng/mL"))
    theirs["subject"] = subject
    foreign_cancer = condition((SCT, "399068003"))
    foreign_cancer["subject"] = subject
    facts = extract_facts(record(mine, theirs, foreign_cancer, patient=PATIENT), valuesets)
    assert [m.value for m in facts.psa] == [0.05]
    assert {m.source for m in facts.psa} == {f"Observation/{mine['id']}"}
    sources = {e.source for evidence in facts.concepts.values() for e in evidence}
    assert f"Condition/{foreign_cancer['id']}" not in sources
    assert not facts.has("prostate-cancer")
    assert any("not attributable to this patient" in i for i in facts.data_issues)


def test_facts_stage_accepts_every_own_form(valuesets):
    forms = [
        {"reference": "Patient/p1"},
        {"reference": "https://ehr.example.org/fhir/Patient/p1/_history/2"},
        {"reference": "p1", "type": "Patient"},
        {"identifier": {"system": MRN, "value": "12345"}},
    ]
    resources = []
    for n, subject in enumerate(forms):
        obs = observation((LNC, "2857-1"), when=f"2026-0{n + 1}-01", valueQuantity=quantity(n + 1.0, "ng/mL"))
        obs["subject"] = subject
        resources.append(obs)
    facts = extract_facts(record(*resources, patient=PATIENT), valuesets)
    assert [m.value for m in facts.psa] == [1.0, 2.0, 3.0, 4.0]
    assert not any("attributable" in i for i in facts.data_issues)


def test_protocol_layer_drop_count_is_a_data_issue(valuesets):
    from dataclasses import replace

    rec = replace(record(patient=PATIENT), not_this_patient=3)
    facts = extract_facts(rec, valuesets)
    assert any(i.startswith("3 record(s)") and "another patient" in i for i in facts.data_issues)

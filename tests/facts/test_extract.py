from datetime import date

from cds_service.facts import extract_facts
from tests.facts.conftest import ICD, LNC, RXN, SCT, cc, condition, observation, quantity, record


def test_metastatic_prostate_on_adt_end_to_end(valuesets):
    patient = {"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1955-02-01"}
    rec = record(
        condition((ICD, "C61"), onset="2021-03-01"),
        condition((SCT, "94222008"), onset="2025-05-01"),
        observation((LNC, "2857-1"), when="2026-04-01", valueQuantity=quantity(1.2, "ng/mL", "ng/mL")),
        observation((LNC, "2857-1"), when="2026-10-01", valueQuantity=quantity(3.4, "ng/mL", "ng/mL")),
        {
            "resourceType": "MedicationRequest",
            "id": "mr1",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/p1"},
            "authoredOn": "2025-06-01",
            "medicationCodeableConcept": cc((RXN, "752899")),
        },
        patient=patient,
    )
    facts = extract_facts(rec, valuesets)
    assert facts.as_of == date(2026, 11, 22) and facts.age == 71 and facts.sex == "male"
    assert {"prostate-cancer", "metastatic-disease", "metastasis-bone"} <= facts.concepts.keys()
    assert [m.value for m in facts.psa] == [1.2, 3.4]
    assert facts.medications[0].classes == frozenset({"adt"})
    assert facts.data_issues == ()


def test_empty_record(valuesets):
    facts = extract_facts(record(), valuesets)
    assert facts.concepts == {} and facts.psa == () and facts.age is None


def test_incomplete_and_deceased_are_reported(valuesets):
    patient = {"resourceType": "Patient", "id": "p1", "deceasedDateTime": "2020-01-01"}
    facts = extract_facts(record(patient=patient, incomplete=("medications",)), valuesets)
    assert any("deceased" in i for i in facts.data_issues)
    assert any("medications" in i for i in facts.data_issues)


def test_a_resource_sent_twice_gives_one_fact(valuesets):
    med = {
        "resourceType": "MedicationRequest",
        "id": "mr1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2025-06-01",
        "medicationCodeableConcept": cc((RXN, "752899")),
    }
    psa = observation((LNC, "2857-1"), valueQuantity=quantity(1.2, "ng/mL"))
    bone = condition((SCT, "94222008"))
    facts = extract_facts(record(med, dict(med), psa, dict(psa), bone, dict(bone)), valuesets)
    assert len(facts.medications) == 1 and len(facts.psa) == 1
    assert len(facts.concepts["metastasis-bone"]) == 1

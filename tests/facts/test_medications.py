from datetime import date

from cds_service.facts import extract_facts
from tests.facts.conftest import RXN, SCT, cc, record


def med_request(*codings, status="active", authored="2026-09-01", **extra):
    res = {
        "resourceType": "MedicationRequest",
        "id": f"m-{status}-{authored}",
        "status": status,
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "authoredOn": authored,
    }
    if codings:
        res["medicationCodeableConcept"] = cc(*codings)
    res.update(extra)
    return res


def test_clinical_drug_and_ingredient_give_the_same_fact(valuesets):
    for code in ("752899", "42375"):
        (fact,) = extract_facts(record(med_request((RXN, code))), valuesets).medications
        assert fact.ingredient == "leuprolide" and fact.classes == frozenset({"adt"})
        assert fact.start == date(2026, 9, 1) and fact.status == "active"


def test_synthea_chemotherapy_scds(valuesets):
    codes = {
        "1860480": "docetaxel",
        "1790099": "doxorubicin",
        "1734919": "cyclophosphamide",
        "583214": "paclitaxel",
        "597195": "carboplatin",
    }
    for scd, ingredient in codes.items():
        (fact,) = extract_facts(record(med_request((RXN, scd))), valuesets).medications
        assert fact.ingredient == ingredient and "chemotherapy" in fact.classes


def test_vsac_adt_clinical_drug_is_adt(valuesets):
    (fact,) = extract_facts(record(med_request((RXN, "752884"))), valuesets).medications
    assert fact.classes == frozenset({"adt"})


def test_snomed_substance(valuesets):
    (fact,) = extract_facts(record(med_request((SCT, "387003001"))), valuesets).medications
    assert fact.ingredient == "trastuzumab" and fact.classes == frozenset({"her2-targeted"})


def test_contained_medication_reference(valuesets):
    res = med_request(
        medicationReference={"reference": "#med"},
        contained=[{"resourceType": "Medication", "id": "med", "code": cc((RXN, "1307298"))}],
    )
    (fact,) = extract_facts(record(res), valuesets).medications
    assert fact.ingredient == "enzalutamide" and fact.classes == frozenset({"arpi"})


def test_referenced_medication_resource(valuesets):
    medication = {"resourceType": "Medication", "id": "abi", "code": cc((RXN, "1100072"))}
    res = med_request(medicationReference={"reference": "Medication/abi"})
    (fact,) = extract_facts(record(res, medication), valuesets).medications
    assert fact.ingredient == "abiraterone"


def test_status_filter(valuesets):
    facts = extract_facts(
        record(
            med_request((RXN, "42375"), status="cancelled"),
            med_request((RXN, "42375"), status="entered-in-error", authored="2026-01-01"),
            med_request((RXN, "42375"), status="completed", authored="2025-01-01"),
            med_request((RXN, "42375"), status="on-hold", authored="2025-06-01"),
        ),
        valuesets,
    )
    assert [m.status for m in facts.medications] == ["completed", "on-hold"]


def test_start_is_the_earliest_known_date(valuesets):
    res = med_request(
        (RXN, "42375"),
        authored="2026-09-01",
        dosageInstruction=[{"timing": {"repeat": {"boundsPeriod": {"start": "2026-08-15"}}}}],
    )
    (fact,) = extract_facts(record(res), valuesets).medications
    assert fact.start == date(2026, 8, 15)


def test_administration_and_statement(valuesets):
    admin = {
        "resourceType": "MedicationAdministration",
        "id": "a1",
        "status": "completed",
        "medicationCodeableConcept": cc((RXN, "72962")),
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-07-01",
    }
    statement = {
        "resourceType": "MedicationStatement",
        "id": "s1",
        "status": "active",
        "medicationCodeableConcept": cc((RXN, "10324")),
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": "2026-02-01"},
    }
    facts = extract_facts(record(admin, statement), valuesets)
    assert [(m.ingredient, m.start) for m in facts.medications] == [
        ("tamoxifen", date(2026, 2, 1)),
        ("docetaxel", date(2026, 7, 1)),
    ]


def test_unrelated_drug_is_ignored(valuesets):
    assert extract_facts(record(med_request((RXN, "313782"))), valuesets).medications == ()

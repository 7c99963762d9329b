from datetime import date

from cds_service.facts import extract_facts
from tests.facts.conftest import ICD, SCT, cc, condition, record


def procedure(code, status="completed", when="2025-04-01", system=SCT):
    return {
        "resourceType": "Procedure",
        "id": f"p{code}{status}",
        "status": status,
        "code": cc((system, code)),
        "subject": {"reference": "Patient/p1"},
        "performedDateTime": when,
    }


def test_prostatectomy_codes(valuesets):
    for code in ("26294005", "90470006"):
        facts = extract_facts(record(procedure(code)), valuesets)
        assert [(p.concept, p.date) for p in facts.procedures] == [
            ("radical-prostatectomy", date(2025, 4, 1))
        ]


def test_radiotherapy_codes(valuesets):
    for code in ("1217123003", "108290001", "448385000", "152198000", "425767004"):
        (fact,) = extract_facts(record(procedure(code)), valuesets).procedures
        assert fact.concept == "radiotherapy"


def test_breast_surgery(valuesets):
    (fact,) = extract_facts(record(procedure("64368001")), valuesets).procedures
    assert fact.concept == "breast-surgery"


def test_only_completed_procedures_count(valuesets):
    facts = extract_facts(
        record(
            procedure("26294005", status="in-progress"),
            procedure("26294005", status="not-done"),
            procedure("26294005", status="entered-in-error"),
        ),
        valuesets,
    )
    assert facts.procedures == ()


def test_performed_period_start(valuesets):
    res = procedure("1217123003")
    del res["performedDateTime"]
    res["performedPeriod"] = {"start": "2025-01-10", "end": "2025-02-20"}
    (fact,) = extract_facts(record(res), valuesets).procedures
    assert fact.date == date(2025, 1, 10)


def test_dialysis_from_procedure_or_condition(valuesets):
    facts = extract_facts(record(procedure("302497006")), valuesets)
    assert "dialysis" in facts.concepts and facts.procedures[0].concept == "dialysis"
    assert "dialysis" in extract_facts(record(condition((ICD, "Z99.2"))), valuesets).concepts
    assert "dialysis" in extract_facts(record(condition((ICD, "Z49.01"))), valuesets).concepts


def test_unrelated_procedure_is_ignored(valuesets):
    assert extract_facts(record(procedure("73761001")), valuesets).procedures == ()

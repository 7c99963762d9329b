from datetime import date

from cds_service.facts import extract_facts
from tests.facts.conftest import CPT, HCPCS, ICD, LNC, SCT, cc, record


def report(*codings, conclusion_codes=(), status="final", when="2026-06-01", conclusion=None):
    res = {
        "resourceType": "DiagnosticReport",
        "id": f"dr{len(codings)}{when}",
        "status": status,
        "code": cc(*codings),
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": when,
        "conclusionCode": [cc(c) for c in conclusion_codes],
    }
    if conclusion:
        res["conclusion"] = conclusion
    return res


def test_bone_scan_with_bone_metastases(valuesets):
    facts = extract_facts(record(report((CPT, "78306"), conclusion_codes=[(SCT, "94222008")])), valuesets)
    (fact,) = facts.imaging
    assert fact.procedure == "bone-scan" and fact.date == date(2026, 6, 1)
    assert fact.findings == frozenset({"bone-metastases"})


def test_ct_with_icd_coded_bone_and_liver_findings(valuesets):
    res = report((LNC, "72254-6"), conclusion_codes=[(ICD, "C79.51"), (SCT, "94381002")])
    (fact,) = extract_facts(record(res), valuesets).imaging
    assert fact.procedure == "ct"
    assert fact.findings == frozenset({"bone-metastases", "visceral-metastases"})


def test_text_is_not_read_when_the_conclusion_is_coded(valuesets):
    res = report((CPT, "78306"), conclusion_codes=[(SCT, "359746009")], conclusion="Multiple bone metastases")
    (fact,) = extract_facts(record(res), valuesets).imaging
    assert fact.findings == frozenset({"stable"}) and not fact.from_text
    assert fact.conclusion == "Multiple bone metastases"


def test_conclusion_text_is_read_when_no_conclusion_code(valuesets):
    res = report((CPT, "78306"), conclusion="Multiple bone metastases")
    (fact,) = extract_facts(record(res), valuesets).imaging
    assert fact.findings == frozenset({"bone-metastases"}) and fact.from_text
    assert fact.conclusion == "'Multiple bone metastases'"


def test_pet_typed_by_tracer_code(valuesets):
    psma = report((CPT, "78815"), (HCPCS, "A9595"))
    (fact,) = extract_facts(record(psma), valuesets).imaging
    assert fact.procedure == "psma-pet"
    (generic,) = extract_facts(record(report((CPT, "78815"))), valuesets).imaging
    assert generic.procedure == "other-pet"


def test_stable_and_progression(valuesets):
    res = report((CPT, "78306"), conclusion_codes=[(SCT, "359746009")])
    assert extract_facts(record(res), valuesets).imaging[0].findings == frozenset({"stable"})
    res = report((LNC, "36813-4"), conclusion_codes=[(SCT, "271299001")])
    assert extract_facts(record(res), valuesets).imaging[0].findings == frozenset({"progression"})


def test_generic_absent_code_means_no_bone_metastases_only_on_a_bone_scan(valuesets):
    bone = report((CPT, "78306"), conclusion_codes=[(SCT, "373572006")])
    assert extract_facts(record(bone), valuesets).imaging[0].findings == frozenset({"no-bone-metastases"})
    ct = report((LNC, "72254-6"), conclusion_codes=[(SCT, "373572006")])
    assert extract_facts(record(ct), valuesets).imaging[0].findings == frozenset()


def test_contradictory_conclusion_codes_go_to_data_issues(valuesets):
    res = report((CPT, "78306"), conclusion_codes=[(SCT, "94222008"), (SCT, "373572006")])
    facts = extract_facts(record(res), valuesets)
    assert facts.imaging[0].findings == frozenset()
    assert any("both bone metastases and none" in i for i in facts.data_issues)


def test_preliminary_and_lab_reports_are_not_imaging(valuesets):
    facts = extract_facts(
        record(report((CPT, "78306"), status="preliminary"), report((LNC, "24323-8"))), valuesets
    )
    assert facts.imaging == ()


def test_imaging_procedure_resource(valuesets):
    proc = {
        "resourceType": "Procedure",
        "id": "ip1",
        "status": "completed",
        "code": cc((CPT, "70553")),
        "subject": {"reference": "Patient/p1"},
        "performedDateTime": "2026-02-02",
    }
    (fact,) = extract_facts(record(proc), valuesets).imaging
    assert (fact.procedure, fact.date, fact.findings) == ("mri", date(2026, 2, 2), frozenset())
    assert extract_facts(record(proc), valuesets).procedures == ()


def test_dicom_recist_and_new_finding_codes(valuesets):
    dcm = "http://dicom.nema.org/resources/ontology/DCM"
    res = report((CPT, "78815"), conclusion_codes=[(dcm, "112047"), (SCT, "129721008")])
    (fact,) = extract_facts(record(res), valuesets).imaging
    assert fact.findings == frozenset({"progression", "new-lesions"})

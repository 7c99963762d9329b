import base64
from datetime import date

from cds_service.facts import extract_facts
from cds_service.facts import text as text_module
from cds_service.model import ImagingFact
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


# --- reports whose findings are text only (issue 8) --------------------------------------------


def attachment(body: str, content_type: str | None = "text/plain") -> dict:
    out = {"data": base64.b64encode(body.encode()).decode()}
    if content_type:
        out["contentType"] = content_type
    return out


def text_report(*codings, conclusion=None, forms=(), when="2026-11-09", code_text=None):
    res = report(*codings, when=when, conclusion=conclusion)
    del res["conclusionCode"]
    if code_text is not None:
        res["code"] = {"text": code_text}
    if forms:
        res["presentedForm"] = list(forms)
    return res


def only_fact(valuesets, res) -> ImagingFact:
    (fact,) = extract_facts(record(res), valuesets).imaging
    return fact


def test_ct_text_new_lytic_lesions_suspicious_for_metastases(valuesets):
    sentence = "New lytic lesions in T10 and L2, suspicious for osseous metastases."
    fact = only_fact(valuesets, text_report((LNC, "72254-6"), conclusion=sentence))
    assert (fact.procedure, fact.date) == ("ct", date(2026, 11, 9))
    assert fact.findings == frozenset({"bone-metastases", "new-lesions"})
    assert fact.from_text and fact.conclusion == f"'{sentence}'"


def test_bone_scan_text_negative(valuesets):
    fact = only_fact(
        valuesets,
        text_report((CPT, "78306"), conclusion="No scintigraphic evidence of osseous metastatic disease."),
    )
    assert fact.findings == frozenset({"no-bone-metastases"}) and fact.from_text


def test_negative_text_means_no_bone_metastases_only_on_a_bone_scan(valuesets):
    fact = only_fact(valuesets, text_report((LNC, "72254-6"), conclusion="No osseous metastases."))
    assert fact.findings == frozenset()


def test_bone_scan_text_stable_without_new_lesions(valuesets):
    fact = only_fact(
        valuesets, text_report((CPT, "78306"), conclusion="Stable osseous metastases, no new lesions.")
    )
    assert fact.findings == frozenset({"bone-metastases", "stable"})


def test_presented_form_plain_text_and_html(valuesets):
    plain = attachment(
        "BONE SCAN\nIndication: evaluate for osseous metastases.\n"
        "Impression: No scintigraphic evidence of osseous metastatic disease.\n"
    )
    fact = only_fact(valuesets, text_report((CPT, "78306"), forms=[plain]))
    assert fact.findings == frozenset({"no-bone-metastases"})
    html = attachment(
        "<html><body><h2>Impression</h2><p>Stable osseous <b>metastases</b>, no new lesions.</p>"
        "<script>var x = 'osseous metastases';</script></body></html>",
        "text/html; charset=utf-8",
    )
    fact = only_fact(valuesets, text_report((CPT, "78306"), forms=[html]))
    assert fact.findings == frozenset({"bone-metastases", "stable"})
    assert "<" not in (fact.conclusion or "")


def test_presented_form_without_content_type_is_read_when_plainly_text(valuesets):
    form = attachment("Impression: new sclerotic lesions suspicious for osseous metastases.", None)
    fact = only_fact(valuesets, text_report((CPT, "78306"), forms=[form]))
    assert fact.findings == frozenset({"bone-metastases", "new-lesions"})


def test_rtf_and_pdf_are_not_read_and_say_so(valuesets):
    rtf = attachment(r"{\rtf1 No osseous metastases.}", "text/rtf")
    pdf = {"contentType": "application/pdf", "data": base64.b64encode(b"%PDF-1.4").decode()}
    facts = extract_facts(record(text_report((CPT, "78306"), forms=[rtf, pdf])), valuesets)
    (fact,) = facts.imaging
    assert fact.findings == frozenset() and not fact.from_text
    assert any("RTF is not read" in i for i in facts.data_issues)
    assert any("application/pdf is not read" in i for i in facts.data_issues)


def test_text_only_report_code_gives_the_modality(valuesets):
    res = text_report(
        conclusion="No scintigraphic evidence of osseous metastatic disease.",
        code_text="NM bone scan whole body",
    )
    fact = only_fact(valuesets, res)
    assert fact.procedure == "bone-scan" and fact.findings == frozenset({"no-bone-metastases"})


def test_mri_report_text_cord_compression_is_a_concept(valuesets):
    res = text_report((CPT, "72156"), conclusion="Epidural tumour at T6 with spinal cord compression.")
    facts = extract_facts(record(res), valuesets)
    (ev,) = facts.concepts["cord-compression"]
    assert ev.from_text and ev.source == f"DiagnosticReport/{res['id']}"


def test_coded_reports_are_never_run_through_the_nlp(valuesets, monkeypatch):
    calls = []
    monkeypatch.setattr(text_module, "mentions", lambda *a, **k: calls.append(a) or ())
    res = report((CPT, "78306"), conclusion_codes=[(SCT, "94222008")], conclusion="No osseous metastases.")
    fact = only_fact(valuesets, res)
    assert fact.findings == frozenset({"bone-metastases"}) and calls == []


def test_malformed_presented_form_never_drops_a_coded_report(valuesets):
    res = report((CPT, "78306"), conclusion_codes=[(SCT, "94222008")])
    res["presentedForm"] = [
        {"contentType": "text/plain", "data": "%%% not base64 %%%"},
        "garbage",
        {"data": 12},
    ]
    assert only_fact(valuesets, res).findings == frozenset({"bone-metastases"})


def test_malformed_presented_form_of_a_text_report_is_named(valuesets):
    res = text_report((CPT, "78306"), forms=[{"contentType": "text/plain", "data": "%%% not base64 %%%"}])
    facts = extract_facts(record(res), valuesets)
    assert facts.imaging[0].findings == frozenset()
    assert any("not valid base64" in i for i in facts.data_issues)


def test_equivocal_or_indeterminate_bone_scan(valuesets):
    # seeds 000/001: an indeterminate or equivocal bone scan -> targeted CT or MRI of the site
    for code in ("42425007", "82334004", "419984006"):
        res = report((CPT, "78306"), conclusion_codes=[(SCT, code)])
        (fact,) = extract_facts(record(res), valuesets).imaging
        assert fact.findings == frozenset({"equivocal"}), code

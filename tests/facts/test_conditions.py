from cds_service.facts import extract_facts
from tests.facts.conftest import ICD, SCT, cc, condition, record


def concepts(valuesets, *resources):
    return extract_facts(record(*resources), valuesets).concepts


def test_icd10cm_and_snomed_give_the_same_concept(valuesets):
    assert "prostate-cancer" in concepts(valuesets, condition((ICD, "C61")))
    assert "prostate-cancer" in concepts(valuesets, condition((SCT, "399068003")))
    assert "breast-cancer" in concepts(valuesets, condition((ICD, "C50.912")))
    assert "breast-cancer" in concepts(valuesets, condition((SCT, "254837009")))


def test_secondary_codes_give_metastatic_disease_and_site(valuesets):
    found = concepts(valuesets, condition((ICD, "C79.51")), condition((SCT, "94381002")))
    assert {"metastatic-disease", "metastasis-bone", "metastasis-liver"} <= found.keys()
    assert "prostate-cancer" not in found


def test_metastatic_prostate_snomed_gives_both_cancer_and_metastases(valuesets):
    found = concepts(valuesets, condition((SCT, "314994000")))
    assert {"prostate-cancer", "metastatic-disease"} <= found.keys()


def test_evidence_carries_code_date_and_reference(valuesets):
    res = condition((ICD, "C61"), onset="2024-03-05")
    (evidence,) = concepts(valuesets, res)["prostate-cancer"]
    assert "ICD-10-CM C61" in evidence.text
    assert "2024" not in evidence.text  # the date lives in Evidence.date; cards add " on <date>"
    assert evidence.date.isoformat() == "2024-03-05"
    assert evidence.source == f"Condition/{res['id']}"


def test_inactive_refuted_and_entered_in_error_are_ignored(valuesets):
    found = concepts(
        valuesets,
        condition((ICD, "C61"), clinical="resolved"),
        condition((ICD, "C50.911"), verification="refuted"),
        condition((ICD, "M54.50"), verification="entered-in-error"),
        condition((SCT, "25064002"), clinical="inactive"),
    )
    assert found == {}


def test_recurrence_relapse_and_absent_status_count(valuesets):
    found = concepts(
        valuesets,
        condition((ICD, "C61"), clinical="recurrence"),
        condition((ICD, "C50.911"), clinical="relapse"),
        condition((SCT, "12584003"), clinical=None, verification=None),
    )
    assert {"prostate-cancer", "breast-cancer", "bone-pain"} <= found.keys()


def test_absent_status_with_abatement_is_not_active(valuesets):
    found = concepts(valuesets, condition((SCT, "12584003"), clinical=None, abatementDateTime="2026-02-01"))
    assert "bone-pain" not in found


def test_neoplasm_of_prostate_is_not_assumed_malignant(valuesets):
    facts = extract_facts(record(condition((SCT, "126906006"))), valuesets)
    assert "prostate-cancer" not in facts.concepts
    assert any("does not say malignant" in i for i in facts.data_issues)


def test_symptoms_red_flags_and_kidney(valuesets):
    found = concepts(
        valuesets,
        condition((ICD, "M54.50")),
        condition((ICD, "G95.20")),
        condition((SCT, "26544005")),
        condition((ICD, "R51.9")),
        condition((ICD, "N18.5")),
        condition((ICD, "Z99.2")),
        condition((ICD, "Z19.2")),
        condition((ICD, "R97.21")),
        condition((ICD, "R63.4")),
        condition((ICD, "R05.9")),
    )
    assert {
        "back-pain",
        "cord-compression",
        "focal-neuro-deficit",
        "headache",
        "ckd-severe",
        "dialysis",
        "castration-resistant",
        "rising-psa-after-treatment",
        "weight-loss",
        "pulmonary-symptoms",
    } <= found.keys()


def test_other_cancer_excludes_prostate_breast_and_skin(valuesets):
    found = concepts(valuesets, condition((ICD, "C18.7")))
    assert "other-cancer" in found
    assert "other-cancer" not in concepts(valuesets, condition((ICD, "C61")), condition((ICD, "C44.311")))


def test_secondary_cancer_body_site_gives_the_site_concept(valuesets):
    generic = condition((SCT, "128462008"), bodySite=[cc((SCT, "272673000"))])
    found = concepts(valuesets, generic)
    assert {"metastatic-disease", "metastasis-bone"} <= found.keys()
    assert "site" in found["metastasis-bone"][0].text


def test_primary_tumour_body_site_is_not_a_metastasis(valuesets):
    primary = condition((ICD, "C50.911"), bodySite=[cc((SCT, "10200004"))])
    assert "metastasis-liver" not in concepts(valuesets, primary)


# --- problems recorded as text only (issue 8) ----------------------------------------------------


def text_condition(label, **extra):
    res = condition(**extra)
    res["code"] = {"text": label} if label is not None else {}
    return res


def test_text_only_problem_is_read(valuesets):
    found = concepts(valuesets, text_condition("Metastatic prostate adenocarcinoma"))
    assert {"prostate-cancer", "metastatic-disease"} <= found.keys()
    (ev,) = found["prostate-cancer"]
    assert ev.from_text and ev.text == "'Metastatic prostate adenocarcinoma'"


def test_text_problem_note_is_read(valuesets):
    res = text_condition(None, note=[{"text": "Invasive ductal carcinoma of the breast, ER positive"}])
    assert "breast-cancer" in concepts(valuesets, res)


def test_text_problems_follow_the_status_rules_of_coded_ones(valuesets):
    assert concepts(valuesets, text_condition("Breast cancer", clinical="resolved")) == {}
    assert concepts(valuesets, text_condition("Breast cancer", verification="refuted")) == {}
    assert concepts(valuesets, text_condition("Breast cancer", verification="entered-in-error")) == {}


def test_negated_or_family_text_problems_are_not_concepts(valuesets):
    assert concepts(valuesets, text_condition("No evidence of metastatic disease")) == {}
    assert concepts(valuesets, text_condition("Family history of breast cancer")) == {}


def test_a_coded_condition_is_never_read_by_its_text(valuesets):
    res = condition((ICD, "C61"))
    res["code"]["text"] = "Breast cancer"  # a wrong label: the code decides
    assert set(concepts(valuesets, res)) == {"prostate-cancer"}


def test_a_coding_without_system_or_code_is_not_usable(valuesets):
    res = text_condition("Low back pain")
    res["code"]["coding"] = [{"display": "Low back pain"}]
    assert "back-pain" in concepts(valuesets, res)

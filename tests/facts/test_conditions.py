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
        condition((SCT, "102568007")),  # paresis of lower extremity
        condition((SCT, "26544005")),  # muscle weakness, not localised
        condition((ICD, "R33.9")),
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
        "weakness",
        "sphincter-dysfunction",
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


# --- the same fact, coded the ways EHRs code it, gives the same concepts ---------------------------

SAME_FACT = {
    # fact: [one encoding per entry; an entry is a tuple of codings of one CodeableConcept]
    "prostate cancer": [
        ((ICD, "C61"),),
        ((SCT, "399068003"),),
        ((SCT, "399490008"),),  # adenocarcinoma (histology)
        ((SCT, "93974005"),),  # primary malignant neoplasm
        ((SCT, "823017009"),),  # ductal adenocarcinoma
        ((ICD, "C61"), (SCT, "399490008")),  # both systems
    ],
    "breast cancer": [
        ((ICD, "C50.912"),),
        ((ICD, "C50911"),),  # no dot
        ((SCT, "254837009"),),
        ((SCT, "408643008"),),  # infiltrating duct carcinoma
        ((SCT, "278054005"),),  # lobular carcinoma
        ((SCT, "1080101000119105"),),  # IDC of left female breast
        ((SCT, "353431000119107"),),  # primary of left female breast
        ((ICD, "C50.912"), (SCT, "408643008")),
    ],
    "bone metastases": [
        ((ICD, "C79.51"),),
        ((SCT, "94222008"),),
        ((SCT, "94602001"),),  # vertebral column
        ((SCT, "94478006"),),  # pelvic bone
        ((SCT, "285618001"),),  # unknown primary
        ((ICD, "C79.51"), (SCT, "94222008")),
    ],
    "castration-resistant prostate cancer": [
        ((SCT, "427492003"),),
        ((ICD, "C61"), (SCT, "427492003")),
    ],
    "cord compression": [((ICD, "G95.20"),), ((SCT, "71286001"),), ((ICD, "G95.20"), (SCT, "71286001"))],
    "back pain": [
        ((ICD, "M54.50"),),
        ((ICD, "M54.41"),),  # lumbago with sciatica, right
        ((ICD, "M5442"),),
        ((ICD, "M54.30"),),  # sciatica
        ((ICD, "M54.16"),),  # lumbar radiculopathy
        ((ICD, "M54.89"),),
        ((ICD, "M54.9"),),
        ((SCT, "279039007"),),
        ((SCT, "23056005"),),
        ((SCT, "48926009"),),
    ],
    "weakness": [((ICD, "M62.81"),), ((ICD, "R53.1"),), ((ICD, "R29.898"),), ((SCT, "26544005"),)],
    "focal deficit": [((SCT, "102568007"),), ((SCT, "16018391000119104"),), ((ICD, "G82.20"),)],
    "sphincter dysfunction": [
        ((ICD, "R33.9"),),
        ((ICD, "R33.8"),),
        ((SCT, "267064002"),),
        ((SCT, "236648008"),),  # acute retention
        ((ICD, "R32"),),
        ((SCT, "165232002"),),
        ((ICD, "R15.9"),),
        ((SCT, "72042002"),),
        ((ICD, "N31.9"),),
        ((ICD, "N39.490"),),  # overflow incontinence
    ],
}
EXPECTED = {
    "prostate cancer": {"prostate-cancer"},
    "breast cancer": {"breast-cancer"},
    "bone metastases": {"metastasis-bone", "metastatic-disease"},
    "castration-resistant prostate cancer": {"prostate-cancer", "castration-resistant"},
    "cord compression": {"cord-compression"},
    "back pain": {"back-pain"},
    "weakness": {"weakness"},
    "focal deficit": {"focal-neuro-deficit"},
    "sphincter dysfunction": {"sphincter-dysfunction"},
}


def test_every_encoding_of_a_fact_gives_exactly_the_same_concepts(valuesets):
    for fact, encodings in SAME_FACT.items():
        for codings in encodings:
            found = set(concepts(valuesets, condition(*codings)))
            assert found == EXPECTED[fact], (fact, codings)


def test_codes_with_a_named_non_neurological_cause_are_not_sphincter_dysfunction(valuesets):
    for codings in [(ICD, "R33.0"), (ICD, "N39.3"), (ICD, "N39.41"), (ICD, "R39.81"), (SCT, "236652008")]:
        assert "sphincter-dysfunction" not in concepts(valuesets, condition(codings)), codings


def test_cancers_spreading_to_or_from_the_prostate_are_read_by_their_primary(valuesets):
    # a bladder cancer invading the prostate is not prostate cancer, a metastasis to the prostate
    # is metastatic disease from elsewhere, a prostate cancer invading the bladder is prostate cancer
    assert set(concepts(valuesets, condition((SCT, "369485004")))) == {"other-cancer"}
    assert set(concepts(valuesets, condition((SCT, "94503003")))) == {"metastatic-disease"}
    assert set(concepts(valuesets, condition((SCT, "369472002")))) == {"prostate-cancer"}
    separate_metastasis = set(concepts(valuesets, condition((SCT, "369479006"))))
    assert separate_metastasis == {"prostate-cancer", "metastatic-disease"}


def test_metastasis_to_the_breast_is_not_breast_cancer(valuesets):
    assert set(concepts(valuesets, condition((SCT, "145501000119108")))) == {"metastatic-disease"}
    assert "breast-cancer" not in concepts(valuesets, condition((SCT, "278053004")))  # intraductal (in situ)


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


def test_a_malformed_note_never_drops_a_coded_condition(valuesets):
    res = condition((ICD, "C61"), note=[{"text": 12}, "garbage", {"authorString": []}])
    assert set(concepts(valuesets, res)) == {"prostate-cancer"}


def test_text_history_of_cancer_is_a_history_concept_never_active_cancer(valuesets):
    found = concepts(valuesets, text_condition("History of breast cancer, treated 2015"))
    assert {"history-of-breast-cancer", "history-of-cancer"} <= found.keys()
    assert "breast-cancer" not in found
    assert all(e.from_text for e in found["history-of-breast-cancer"])

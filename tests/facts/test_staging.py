import pytest

from cds_service.facts import extract_facts
from tests.facts.conftest import ICD, LNC, SCT, cc, condition, observation, record


def test_stage_group_from_snomed_and_loinc_codes(valuesets):
    mcode = observation((SCT, "399537006"), valueCodeableConcept=cc((SCT, "1222769001")))
    assert extract_facts(record(mcode), valuesets).stage_group == "IIB"
    loinc = observation((LNC, "21908-9"), valueCodeableConcept=cc((SCT, "13104003")))
    assert extract_facts(record(loinc), valuesets).stage_group == "I"


def test_ajcc_qualifier_values(valuesets):
    stage = observation((SCT, "399588009"), valueCodeableConcept=cc((SCT, "1222724007")))
    n = observation((SCT, "399534004"), valueCodeableConcept=cc((SCT, "1229967007")))
    t = observation((LNC, "21905-5"), valueCodeableConcept=cc((SCT, "1228931008")))
    pm1c = observation((SCT, "371497001"), valueCodeableConcept=cc((SCT, "1229923005")))
    facts = extract_facts(record(stage, n, t, pm1c), valuesets)
    assert facts.stage_group == "IA"
    assert facts.tnm == {"T": "T2a", "N": "N0", "M": "M1c"}
    assert "metastatic-disease" in facts.concepts


def test_latest_stage_wins_and_same_day_conflict_is_reported(valuesets):
    older = observation((SCT, "399537006"), when="2025-01-01", valueCodeableConcept=cc((SCT, "1222724007")))
    newer = observation((SCT, "399537006"), when="2026-01-01", valueCodeableConcept=cc((SCT, "1222769001")))
    assert extract_facts(record(older, newer), valuesets).stage_group == "IIB"
    clash = observation((SCT, "399537006"), when="2026-01-01", valueCodeableConcept=cc((SCT, "1222837003")))
    facts = extract_facts(record(older, newer, clash), valuesets)
    assert facts.stage_group is None
    assert any("conflicting values" in i for i in facts.data_issues)


def test_unknown_stage_value_is_reported_not_guessed(valuesets):
    obs = observation((SCT, "399537006"), valueCodeableConcept=cc((SCT, "0000000"), text="Stage IIA"))
    facts = extract_facts(record(obs), valuesets)
    assert facts.stage_group is None
    assert any("stage group" in i for i in facts.data_issues)


def test_tnm_categories_and_m1_adds_metastatic_disease(valuesets):
    facts = extract_facts(
        record(
            observation((SCT, "399504009"), valueCodeableConcept=cc((SCT, "433361000124104"))),
            observation((SCT, "399387003"), valueCodeableConcept=cc((SCT, "1229907005"))),
        ),
        valuesets,
    )
    assert facts.tnm == {"T": "T2a", "M": "M1b"}
    assert "metastatic-disease" in facts.concepts


def test_m0_does_not_add_metastatic_disease(valuesets):
    facts = extract_facts(
        record(observation((SCT, "399387003"), valueCodeableConcept=cc((SCT, "1229901006")))), valuesets
    )
    assert facts.tnm == {"M": "M0"}
    assert "metastatic-disease" not in facts.concepts


def test_pm1_from_loinc_category(valuesets):
    facts = extract_facts(
        record(observation((LNC, "21901-4"), valueCodeableConcept=cc((SCT, "14926007")))), valuesets
    )
    assert facts.tnm["M"] == "M1"


def test_mcode_gleason_grade_group(valuesets):
    obs = observation((SCT, "385377005"), valueCodeableConcept=cc((SCT, "1279718003")))
    assert extract_facts(record(obs), valuesets).grade_group == 4


@pytest.mark.parametrize(
    ("value", "group"),
    [
        ({"valueString": "3+4=7"}, 2),
        ({"valueString": "4 + 3"}, 3),
        ({"valueInteger": 6}, 1),
        ({"valueInteger": 8}, 4),
        ({"valueInteger": 9}, 5),
        ({"valueCodeableConcept": {"coding": [{"system": LNC, "code": "LA30796-9"}]}}, 3),
    ],
)
def test_gleason_score_to_grade_group(valuesets, value, group):
    facts = extract_facts(record(observation((LNC, "35266-6"), **value)), valuesets)
    assert facts.grade_group == group


def test_bare_gleason_7_is_ambiguous(valuesets):
    facts = extract_facts(record(observation((LNC, "35266-6"), valueInteger=7)), valuesets)
    assert facts.grade_group is None
    assert any("Gleason" in i for i in facts.data_issues)


def test_history_of_metastatic_cancer_true_and_false(valuesets):
    yes = observation((SCT, "1287652008"), valueBoolean=True)
    assert "metastatic-disease" in extract_facts(record(yes), valuesets).concepts
    no = observation((SCT, "1287652008"), valueBoolean=False)
    facts = extract_facts(record(no), valuesets)
    assert "metastatic-disease" not in facts.concepts
    assert facts.data_issues == ()


def test_later_history_false_contradicts_active_bone_metastases(valuesets):
    mets = condition((ICD, "C79.51"), onset="2025-06-01")
    denial = observation((SCT, "1287652008"), when="2026-09-01", valueBoolean=False)
    facts = extract_facts(record(mets, denial), valuesets)
    assert "metastasis-bone" in facts.concepts  # not silently dropped
    assert any("contradicts" in i for i in facts.data_issues)


def test_earlier_history_false_does_not_contradict_new_metastases(valuesets):
    denial = observation((SCT, "1287652008"), when="2024-01-01", valueBoolean=False)
    mets = condition((ICD, "C79.51"), onset="2025-06-01")
    assert extract_facts(record(mets, denial), valuesets).data_issues == ()


def test_history_without_a_yes_no_value_is_not_guessed(valuesets):
    facts = extract_facts(record(observation((SCT, "1287652008"))), valuesets)
    assert "metastatic-disease" not in facts.concepts
    assert any("no yes/no value" in i for i in facts.data_issues)


# --- AJCC codes, written notation, text-only codes and Condition.stage (issue 8) ----------------

AJCC = "http://cancerstaging.org"
LOCAL = "urn:oid:2.16.840.1.113883.3.9999.1"  # an EHR's local code system


def test_ajcc_codes_as_in_the_mcode_examples(valuesets):
    # mCODE examples: stage group AJCC#3C "IIIC", categories AJCC#cT3 / #cN0 / #pM0
    facts = extract_facts(
        record(
            observation((LNC, "21908-9"), valueCodeableConcept=cc((AJCC, "3C"))),
            observation((LNC, "21905-5"), valueCodeableConcept=cc((AJCC, "cT3"))),
            observation((LNC, "21906-3"), valueCodeableConcept=cc((AJCC, "cN0"))),
            observation((LNC, "21907-1"), valueCodeableConcept=cc((AJCC, "cM1b"))),
        ),
        valuesets,
    )
    assert facts.stage_group == "IIIC"
    assert facts.tnm == {"T": "T3", "N": "N0", "M": "M1b"}
    assert "metastatic-disease" in facts.concepts
    assert not facts.staging_evidence["stage_group"].from_text  # a code, not text
    assert facts.data_issues == ()


def test_unknown_ajcc_code_is_reported(valuesets):
    facts = extract_facts(
        record(observation((LNC, "21908-9"), valueCodeableConcept=cc((AJCC, "9Z"), text="Stage IIA"))),
        valuesets,
    )
    assert facts.stage_group is None
    assert any("value code not recognised" in i for i in facts.data_issues)


def test_snomed_pathological_categories_and_sub_groups(valuesets):
    facts = extract_facts(
        record(
            observation((SCT, "384625004"), valueCodeableConcept=cc((SCT, "1229860005"))),  # pT3a
            observation((SCT, "371494008"), valueCodeableConcept=cc((SCT, "1229949000"))),  # pN0(i+)
            observation((SCT, "399588009"), valueCodeableConcept=cc((SCT, "1222807007"))),  # IIIC1
        ),
        valuesets,
    )
    assert facts.tnm == {"T": "T3a", "N": "N0"}
    assert facts.stage_group == "IIIC"


@pytest.mark.parametrize(
    "value",
    [
        {"valueString": "Stage IIA"},
        {"valueString": "stage 2A"},
        {"valueCodeableConcept": {"text": "IIA"}},
        {"valueCodeableConcept": {"coding": [{}], "text": "Stage IIA (AJCC 8th)"}},
        {"valueCodeableConcept": cc((LOCAL, "STG2A"), text="2A")},
    ],
)
def test_stage_written_as_text(valuesets, value):
    facts = extract_facts(record(observation((LNC, "21908-9"), **value)), valuesets)
    assert facts.stage_group == "IIA"
    evidence = facts.staging_evidence["stage_group"]
    assert evidence.from_text
    original = value.get("valueString") or value["valueCodeableConcept"]["text"]
    assert original in evidence.text  # the card quotes what the chart said


def test_stage_text_that_is_not_a_stage_is_reported(valuesets):
    facts = extract_facts(record(observation((LNC, "21908-9"), valueString="pending")), valuesets)
    assert facts.stage_group is None
    assert any('text "pending" not understood' in i for i in facts.data_issues)


@pytest.mark.parametrize(
    ("code", "text", "category", "label"),
    [
        ((LNC, "21905-5"), "cT2b", "T", "T2b"),
        ((SCT, "399504009"), "T2b", "T", "T2b"),
        ((SCT, "78873005"), "pT3a", "T", "T3a"),
        ((LNC, "21905-5"), "2b", "T", "T2b"),
        ((LNC, "21906-3"), "N1mi", "N", "N1mi"),
        ((LNC, "21907-1"), "cM0", "M", "M0"),
    ],
)
def test_category_written_as_text(valuesets, code, text, category, label):
    facts = extract_facts(record(observation(code, valueString=text)), valuesets)
    assert facts.tnm == {category: label}
    assert facts.staging_evidence[category].from_text


def test_category_text_of_another_category_is_not_read(valuesets):
    facts = extract_facts(record(observation((LNC, "21905-5"), valueString="N1")), valuesets)
    assert facts.tnm == {}
    assert any("TNM T category" in i for i in facts.data_issues)


@pytest.mark.parametrize(
    ("code", "text", "group"),
    [
        ((SCT, "385377005"), "Grade group 1 (Gleason 3+3=6)", 1),
        ((LNC, "35266-6"), "Gleason 3+4=7", 2),
        ((LNC, "35266-6"), "GG 2", 2),
        ((SCT, "372278000"), "ISUP grade 3", 3),
    ],
)
def test_grade_written_as_text(valuesets, code, text, group):
    facts = extract_facts(record(observation(code, valueString=text)), valuesets)
    assert facts.grade_group == group
    assert facts.staging_evidence["grade_group"].from_text


def test_grade_text_whose_parts_disagree_is_reported(valuesets):
    obs = observation((SCT, "385377005"), valueString="Grade group 1 (Gleason 3+4=7)")
    facts = extract_facts(record(obs), valuesets)
    assert facts.grade_group is None
    assert any("disagree" in i for i in facts.data_issues)


@pytest.mark.parametrize(
    ("code", "value", "expected"),
    [
        ({"text": "Clinical stage"}, {"valueString": "IIA"}, {"stage_group": "IIA"}),
        ({"text": "AJCC stage"}, {"valueCodeableConcept": cc((SCT, "1222766008"))}, {"stage_group": "IIA"}),
        ({"text": "Stage IIA breast cancer"}, {}, {"stage_group": "IIA"}),
        ({"text": "TNM"}, {"valueString": "cT2b N0 M0"}, {"tnm": {"T": "T2b", "N": "N0", "M": "M0"}}),
        ({"text": "Gleason score"}, {"valueString": "3+4=7"}, {"grade_group": 2}),
        ({"text": "Gleason score"}, {"valueInteger": 8}, {"grade_group": 4}),
        (
            {"coding": [{"system": LOCAL, "code": "PGG"}], "text": "ISUP grade group"},
            {"valueString": "1"},
            {"grade_group": 1},
        ),
    ],
)
def test_observation_coded_only_by_text(valuesets, code, value, expected):
    obs = observation(**value)
    obs["code"] = code
    facts = extract_facts(record(obs), valuesets)
    for attr, want in expected.items():
        assert getattr(facts, attr) == want
    assert all(e.from_text for e in facts.staging_evidence.values())


def test_text_coded_observation_that_is_not_staging_is_ignored(valuesets):
    obs = observation(valueString="normal")
    obs["code"] = {"text": "Hemoglobin"}
    facts = extract_facts(record(obs), valuesets)
    assert (facts.stage_group, facts.tnm, facts.grade_group, facts.data_issues) == (None, {}, None, ())


def test_ambiguous_gleason_7_in_a_text_coded_observation_is_reported(valuesets):
    obs = observation(valueString="7")
    obs["code"] = {"text": "Gleason score"}
    facts = extract_facts(record(obs), valuesets)
    assert facts.grade_group is None
    assert any("ambiguous" in i for i in facts.data_issues)


def _cancer(*stages, code=(SCT, "353431000119107"), **extra):
    return condition(code, onset="2026-10-30", stage=list(stages), **extra)


@pytest.mark.parametrize(
    "summary",
    [
        cc((SCT, "1222724007")),
        cc((AJCC, "1A")),
        {"text": "Stage IA"},
        {"coding": [{"system": LOCAL, "code": "1A"}], "text": "stage 1A"},
    ],
)
def test_condition_stage_summary(valuesets, summary):
    facts = extract_facts(record(_cancer({"summary": summary})), valuesets)
    assert facts.stage_group == "IA"
    assert facts.staging_evidence["stage_group"].source.startswith("Condition/")
    written = "coding" not in summary or summary["coding"][0]["system"] == LOCAL
    assert facts.staging_evidence["stage_group"].from_text is written


def test_condition_stage_summary_with_tnm_text(valuesets):
    facts = extract_facts(record(_cancer({"summary": {"text": "cT2b N0 M0"}}, code=(ICD, "C61"))), valuesets)
    assert facts.tnm == {"T": "T2b", "N": "N0", "M": "M0"}


def test_condition_stage_assessment_reference_is_read(valuesets):
    # the assessment Observation has a local code only: read because the cancer's stage points to it
    stage_obs = observation((LOCAL, "STAGE"), when="2026-11-02", valueCodeableConcept=cc((SCT, "1222724007")))
    cancer = _cancer(
        {"assessment": [{"reference": f"Observation/{stage_obs['id']}"}], "type": cc((SCT, "260998006"))}
    )
    facts = extract_facts(record(cancer, stage_obs), valuesets)
    assert facts.stage_group == "IA"
    assert facts.staging_evidence["stage_group"].source == f"Observation/{stage_obs['id']}"


def test_condition_stage_assessment_of_another_subject_is_not_read(valuesets):
    stage_obs = observation((LOCAL, "STAGE"), valueCodeableConcept=cc((SCT, "1222724007")))
    stage_obs["subject"] = {"reference": "Patient/someone-else"}
    cancer = _cancer({"assessment": [{"reference": f"Observation/{stage_obs['id']}"}]})
    assert extract_facts(record(cancer, stage_obs), valuesets).stage_group is None


@pytest.mark.parametrize(
    "extra",
    [
        {"verification": "refuted"},
        {"verification": "entered-in-error"},
        {"clinical": "resolved"},
    ],
)
def test_stage_of_a_condition_that_does_not_count_is_not_read(valuesets, extra):
    facts = extract_facts(record(_cancer({"summary": cc((SCT, "1222724007"))}, **extra)), valuesets)
    assert facts.stage_group is None


def test_stage_of_another_cancer_does_not_stage_breast_or_prostate(valuesets):
    colon = condition((ICD, "C18.9"), stage=[{"summary": cc((SCT, "1222837003"))}])
    breast = _cancer()
    facts = extract_facts(record(colon, breast), valuesets)
    assert facts.stage_group is None


def test_condition_summary_and_observation_disagreeing_on_the_same_date_is_a_contradiction(valuesets):
    cancer = _cancer({"summary": cc((SCT, "1222724007"))})  # IA, dated by the condition: 2026-10-30
    obs = observation((SCT, "399537006"), when="2026-10-30", valueCodeableConcept=cc((SCT, "1222769001")))
    facts = extract_facts(record(cancer, obs), valuesets)
    assert facts.stage_group is None
    assert any("conflicting values" in i for i in facts.data_issues)


def test_latest_wins_across_text_and_codes(valuesets):
    old_text = observation((LNC, "21908-9"), when="2025-01-01", valueString="Stage IIB")
    new_code = observation((LNC, "21908-9"), when="2026-01-01", valueCodeableConcept=cc((AJCC, "1A")))
    facts = extract_facts(record(old_text, new_code), valuesets)
    assert facts.stage_group == "IA"
    assert not facts.staging_evidence["stage_group"].from_text


def test_same_value_coded_and_written_on_one_date_agrees_and_keeps_the_coded_evidence(valuesets):
    coded = observation((SCT, "399537006"), valueCodeableConcept=cc((SCT, "1222766008")))
    written = observation((LNC, "21908-9"), valueString="stage 2A")
    facts = extract_facts(record(written, coded), valuesets)
    assert facts.stage_group == "IIA"
    assert not facts.staging_evidence["stage_group"].from_text
    assert facts.data_issues == ()


@pytest.mark.parametrize(
    "stage",
    [
        {"summary": cc((SCT, "1222724007"))},  # an object where R4 has a list (sandbox shape)
        [{"summary": "Stage IA"}],  # a string where R4 has a CodeableConcept
        [{"assessment": {"reference": "Observation/x"}}],
    ],
)
def test_a_malformed_stage_never_costs_the_diagnosis(valuesets, stage):
    cancer = _cancer()
    cancer["stage"] = stage
    facts = extract_facts(record(cancer), valuesets)
    assert "breast-cancer" in facts.concepts
    assert facts.stage_group is None
    assert any("stage unreadable" in i for i in facts.data_issues)


@pytest.mark.parametrize(
    ("code_text", "value"),
    [
        ("CKD stage", {"valueString": "4"}),
        ("Chronic kidney disease stage 3", {}),
        ("Pressure ulcer stage", {"valueString": "II"}),
        ("Hypertension stage 1", {}),
        ("Stage", {"valueString": "IIA"}),  # no sign that this is a cancer stage
        ("CKD stage", {"valueCodeableConcept": cc((SCT, "431857002"))}),
    ],
)
def test_text_coded_staging_of_something_else_is_not_a_cancer_stage(valuesets, code_text, value):
    obs = observation(**value)
    obs["code"] = {"text": code_text}
    facts = extract_facts(record(obs), valuesets)
    assert (facts.stage_group, facts.tnm, facts.grade_group, facts.data_issues) == (None, {}, None, ())


def test_staging_whose_focus_is_another_cancer_is_not_used(valuesets):
    colon = condition((ICD, "C18.9"))
    prostate = condition((ICD, "C61"))
    colon_stage = observation((SCT, "399537006"), valueCodeableConcept=cc((SCT, "1222837003")))
    colon_stage["focus"] = [{"reference": f"Condition/{colon['id']}"}]
    prostate_grade = observation((SCT, "385377005"), valueCodeableConcept=cc((SCT, "1279715000")))
    prostate_grade["focus"] = [{"reference": f"https://ehr.example.org/fhir/Condition/{prostate['id']}"}]
    facts = extract_facts(record(colon, prostate, colon_stage, prostate_grade), valuesets)
    assert facts.stage_group is None
    assert facts.grade_group == 1
    assert any("about another cancer" in i for i in facts.data_issues)

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

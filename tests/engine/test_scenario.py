"""Facts -> scenario: every scenario fires on its case and not on its look-alike; red flags come first."""

from __future__ import annotations

import pytest

from cds_service.engine.scenario import INSUFFICIENT_DATA, NO_CRITERIA_APPLY, select_scenario
from tests.engine.builders import KNOWLEDGE, facts, lab, med, prior, proc, psa

ADT = med("leuprolide", "adt", started=540)
NEOADJ = med("doxorubicin", "chemotherapy", started=60)

CASES = {
    # seed 000: metastatic prostate cancer on ADT, rising PSA, mild back pain (no deficit: not a red flag)
    "prostate-metastatic-systemic-therapy": facts(
        "prostate-cancer", "metastatic-disease", "back-pain", psa=psa(2.0, 3.1, 4.4), medications=(ADT,)
    ),
    # seed 001: breast cancer on neoadjuvant chemo with back pain and raised ALP
    "breast-neoadjuvant-suspected-metastases": facts(
        "breast-cancer", "back-pain", medications=(NEOADJ,), labs={"alp": lab(190, 120)}
    ),
    "breast-early-stage-asymptomatic": facts("breast-cancer", stage_group="IA"),
    # seed 004: rising PSA 0.4 after prostatectomy
    "prostate-biochemical-recurrence": facts(
        "prostate-cancer", procedures=(proc("radical-prostatectomy"),), psa=psa(0.05, 0.2, 0.4)
    ),
    "prostate-initial-staging": facts("prostate-cancer", grade_group=4, tnm={"T": "cT2b"}, psa=psa(12.0)),
    # seed 003: CT shows bone metastases, bone scan negative
    "breast-metastatic-discordant-bone-imaging": facts(
        "breast-cancer",
        "metastatic-disease",
        imaging=(prior("ct", "bone-metastases", ago=20), prior("bone-scan", "no-bone-metastases", ago=15)),
    ),
}

LOOK_ALIKES = {
    # breast cancer with bone pain but not on neoadjuvant therapy (already operated)
    "breast-neoadjuvant-suspected-metastases": facts(
        "breast-cancer", "bone-pain", procedures=(proc("breast-surgery", 30),), medications=(NEOADJ,)
    ),
    # early-stage but symptomatic
    "breast-early-stage-asymptomatic": facts("breast-cancer", "weight-loss", stage_group="IIA"),
    # prostatectomy with undetectable PSA
    "prostate-biochemical-recurrence": facts(
        "prostate-cancer", procedures=(proc("radical-prostatectomy"),), psa=psa(0.02, 0.01)
    ),
    # metastatic but with no systemic therapy recorded (the follow-up variant needs therapy)
    "prostate-metastatic-systemic-therapy": facts("prostate-cancer", "metastatic-disease", psa=psa(3.0)),
    # bone scan negative but no CT showing bone metastases
    "breast-metastatic-discordant-bone-imaging": facts(
        "breast-cancer", "metastatic-disease", imaging=(prior("bone-scan", "no-bone-metastases"),)
    ),
    # prior radiotherapy: not initial staging
    "prostate-initial-staging": facts(
        "prostate-cancer", grade_group=4, procedures=(proc("radiotherapy"),), psa=psa(0.5, 0.6)
    ),
}


@pytest.mark.parametrize("scenario_id", sorted(CASES))
def test_scenario_fires_on_its_case(scenario_id):
    selection = select_scenario(CASES[scenario_id], KNOWLEDGE)
    assert not selection.red_flags
    assert selection.outcome == scenario_id
    assert selection.match.evidence  # the card can say why


@pytest.mark.parametrize("scenario_id", sorted(LOOK_ALIKES))
def test_scenario_does_not_fire_on_its_look_alike(scenario_id):
    assert select_scenario(LOOK_ALIKES[scenario_id], KNOWLEDGE).outcome != scenario_id


def test_initial_staging_picks_the_variant_by_risk_group():
    def variant(f):
        return select_scenario(f, KNOWLEDGE).match.variant.id

    assert variant(facts("prostate-cancer", grade_group=1, tnm={"T": "T1c"}, psa=psa(5.0))) == (
        "low-or-favorable-intermediate"
    )
    assert variant(facts("prostate-cancer", grade_group=3, tnm={"T": "T2a"}, psa=psa(6.0))) == (
        "unfavorable-intermediate"
    )
    assert variant(CASES["prostate-initial-staging"]) == "high-or-very-high"


def test_low_risk_with_bone_pain_gets_the_bone_symptom_variant():
    # Issue 9 point 3: J Nucl Med 2020;61(3):405 Table 1, initial staging, ACR 2017 "Usually
    # appropriate" for "Bone symptom"; AUA Statement 6 (usually not appropriate) is for
    # asymptomatic patients only. Only the bone scan is rated: no source rates PSMA PET here.
    for symptom in ("bone-pain", "back-pain"):
        f = facts("prostate-cancer", symptom, grade_group=1, tnm={"T": "T1c"}, psa=psa(5.0))
        match = select_scenario(f, KNOWLEDGE).match
        assert match is not None and match.variant.id == "low-or-favorable-intermediate-bone-symptoms"
        assert match.variant.ratings["bone-scan-whole-body"].category == "usually-appropriate"
        assert "psma-pet-ct" not in match.variant.ratings
    asymptomatic = facts("prostate-cancer", grade_group=1, tnm={"T": "T1c"}, psa=psa(5.0))
    assert select_scenario(asymptomatic, KNOWLEDGE).match.variant.id == "low-or-favorable-intermediate"


def test_radiotherapy_recurrence_uses_nadir_plus_two():
    base = {"procedures": (proc("radiotherapy"),)}
    assert select_scenario(facts("prostate-cancer", psa=psa(3.0, 0.4, 2.5), **base), KNOWLEDGE).outcome == (
        "prostate-biochemical-recurrence"
    )
    assert select_scenario(facts("prostate-cancer", psa=psa(3.0, 0.4, 1.9), **base), KNOWLEDGE).outcome == (
        NO_CRITERIA_APPLY
    )


def test_coded_rising_psa_after_treatment_is_enough():
    f = facts(
        "prostate-cancer",
        "rising-psa-after-treatment",
        procedures=(proc("radical-prostatectomy"),),
        psa=psa(0.3),
    )
    assert select_scenario(f, KNOWLEDGE).outcome == "prostate-biochemical-recurrence"


@pytest.mark.parametrize(
    ("f", "needed"),
    [
        (facts("prostate-cancer", "metastatic-disease"), "systemic therapy"),
        (facts("breast-cancer"), "stage group"),
        (facts("prostate-cancer", procedures=(proc("radical-prostatectomy"),)), "PSA"),
        (facts("prostate-cancer", procedures=(proc("radical-prostatectomy"),), psa=psa(0.5)), "PSA trend"),
        (facts("prostate-cancer", grade_group=2), "missing PSA, T category"),
    ],
)
def test_missing_facts_give_insufficient_data_naming_them(f, needed):
    selection = select_scenario(f, KNOWLEDGE)
    assert selection.outcome == INSUFFICIENT_DATA
    assert any(needed in label for m in selection.missing for label in m.missing)


@pytest.mark.parametrize("f", [facts(), facts("back-pain"), facts("other-cancer", "weight-loss")])
def test_no_oncology_scenario_means_no_criteria_apply(f):
    selection = select_scenario(f, KNOWLEDGE)
    assert selection.outcome == NO_CRITERIA_APPLY and not selection.missing


def test_cord_compression_red_flag_from_code_or_back_pain_with_deficit():
    coded = select_scenario(facts("breast-cancer", "cord-compression"), KNOWLEDGE)
    inferred = select_scenario(facts("metastasis-bone", "back-pain", "focal-neuro-deficit"), KNOWLEDGE)
    assert [m.scenario.id for m in coded.red_flags] == ["red-flag-cord-compression"]
    assert [m.scenario.id for m in inferred.red_flags] == ["red-flag-cord-compression"]


def test_back_pain_without_deficit_is_not_a_red_flag():
    assert not select_scenario(CASES["prostate-metastatic-systemic-therapy"], KNOWLEDGE).red_flags


def test_new_neuro_symptoms_red_flag_needs_cancer():
    hit = select_scenario(facts("breast-cancer", "seizure", medications=(NEOADJ,)), KNOWLEDGE)
    assert [m.scenario.id for m in hit.red_flags] == ["red-flag-new-neuro-symptoms"]
    assert not select_scenario(facts("headache"), KNOWLEDGE).red_flags


def test_red_flags_are_reported_alongside_the_underlying_scenario():
    f = facts(
        "prostate-cancer",
        "metastatic-disease",
        "back-pain",
        "focal-neuro-deficit",
        "headache",
        medications=(ADT,),
    )
    selection = select_scenario(f, KNOWLEDGE)
    assert [m.scenario.id for m in selection.red_flags] == [
        "red-flag-cord-compression",
        "red-flag-new-neuro-symptoms",
    ]
    assert selection.match.scenario.id == "prostate-metastatic-systemic-therapy"

"""Issue 9 point 2: each rule applies to the population its source describes, and no card contradicts
the source. Every test quotes the seed line or reference section it pins."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cds_service.engine.scenario import INSUFFICIENT_DATA, NO_CRITERIA_APPLY, select_scenario
from cds_service.knowledge.predicates import check, evaluate
from cds_service.model import Evidence, MedicationFact
from tests.engine.builders import KNOWLEDGE, cpt, days_ago, facts, med, pama, prior, proc, psa, run

STAGING = "prostate-initial-staging"
METASTATIC = "prostate-metastatic-systemic-therapy"
NONMETASTATIC_TREATED = "prostate-nonmetastatic-systemic-therapy"
EARLY_BREAST = "breast-early-stage-asymptomatic"
# a chart that keeps its diagnosis-time grade group and T category: GG1, cT1c, PSA 5 = "low risk"
DIAGNOSIS_TIME_LOW_RISK = {"grade_group": 1, "tnm": {"T": "cT1c"}, "psa": psa(5.0)}
ADT_3_YEARS = med("leuprolide", "adt", started=3 * 365)


def diagnosed(concept: str, ago: int, **kw):
    """Facts whose cancer Condition was first recorded `ago` days before today."""
    f = facts(concept, **kw)
    concepts = dict(f.concepts)
    concepts[concept] = (Evidence(f"{concept} (coded)", days_ago(ago), f"Condition/{concept}"),)
    return replace(f, concepts=concepts)


def outcome(f) -> str:
    return select_scenario(f, KNOWLEDGE).outcome


# --- initial staging is for newly diagnosed, untreated disease ---------------------------------


def test_cm0_patient_on_adt_for_three_years_is_not_initial_staging():
    """Seed 000 lists "Initial staging of newly diagnosed prostate cancer" apart from treated disease;
    ACR topic 35 is *pretreatment* staging. Years of ADT with a diagnosis-time GG1 + cT1c used to
    read as "low risk, bone scan usually not appropriate, remove the order"."""
    f = diagnosed("prostate-cancer", 3 * 365 + 30, medications=(ADT_3_YEARS,), **DIAGNOSIS_TIME_LOW_RISK)
    assert outcome(f) == NONMETASTATIC_TREATED
    result = run(f, cpt("bs", "78306"))
    assert pama(result) == {"bs": "no-criteria-apply"}  # not rated, never "not appropriate"
    actions = [a for c in result.cards for s in c.get("suggestions", []) for a in s["actions"]]
    assert not any(a["type"] == "delete" for a in actions)


def test_metastatic_patient_on_adt_gets_the_seed_000_rating_not_staging():
    """Seed 000: "the American College of Radiology (ACR) Appropriateness Criteria rate a whole body
    bone scan as Usually Appropriate" for known metastatic prostate cancer on ADT."""
    f = diagnosed("prostate-cancer", 3 * 365, medications=(ADT_3_YEARS,), **DIAGNOSIS_TIME_LOW_RISK)
    f = replace(f, concepts={**f.concepts, **facts("metastatic-disease").concepts})
    assert outcome(f) == METASTATIC
    assert pama(run(f, cpt("bs", "78306"))) == {"bs": "appropriate"}


@pytest.mark.parametrize(
    "therapy",
    [
        med("leuprolide", "adt", started=40),  # started after the diagnosis, before staging imaging
        med("bicalutamide", "antiandrogen", status="stopped", started=900),  # stopped long ago
        MedicationFact("orchiectomy", frozenset({"adt"}), days_ago(500), "completed", permanent=True),
        med("docetaxel", "chemotherapy", status="completed", started=300),
    ],
    ids=["adt-current", "antiandrogen-stopped", "orchiectomy", "chemotherapy-completed"],
)
def test_any_prior_systemic_therapy_excludes_initial_staging(therapy):
    """Absence of prior treatment: ADT incl. orchiectomy and any systemic therapy, stopped included."""
    f = diagnosed("prostate-cancer", 60, medications=(therapy,), **DIAGNOSIS_TIME_LOW_RISK)
    assert outcome(f) != STAGING


@pytest.mark.parametrize("local", ["radical-prostatectomy", "radiotherapy"])
def test_prior_local_treatment_excludes_initial_staging(local):
    f = diagnosed("prostate-cancer", 60, procedures=(proc(local, 30),), **DIAGNOSIS_TIME_LOW_RISK)
    assert outcome(f) != STAGING


def test_coded_castration_resistance_excludes_initial_staging():
    """Castration resistance (Z19.2) presupposes androgen deprivation: not pretreatment disease."""
    f = diagnosed("prostate-cancer", 60, **DIAGNOSIS_TIME_LOW_RISK)
    f = replace(f, concepts={**f.concepts, **facts("castration-resistant").concepts})
    assert outcome(f) == NONMETASTATIC_TREATED


@pytest.mark.parametrize(("ago", "expected"), [(60, STAGING), (183, STAGING), (184, NO_CRITERIA_APPLY)])
def test_initial_staging_window_is_six_months_from_diagnosis(ago, expected):
    """Window 6 months (183 days): 96% of 3,149 men whose first treatment was radical prostatectomy
    were operated within 6 months of diagnosis (Vickers, Cancer 2006). Untreated for longer is
    surveillance, which no rule rates."""
    assert outcome(diagnosed("prostate-cancer", ago, **DIAGNOSIS_TIME_LOW_RISK)) == expected


def test_undated_diagnosis_is_asked_for_not_guessed():
    f = replace(
        facts(**DIAGNOSIS_TIME_LOW_RISK),
        concepts={"prostate-cancer": (Evidence("Malignant neoplasm of prostate", None, "Condition/c"),)},
    )
    selection = select_scenario(f, KNOWLEDGE)
    assert selection.outcome == INSUFFICIENT_DATA
    assert any(
        "date of the prostate cancer diagnosis" in label for m in selection.missing for label in m.missing
    )


def test_the_orders_own_indication_is_not_a_diagnosis_date():
    """A reasonCode C61 is dated today by definition; an older chart diagnosis decides."""
    f = diagnosed("prostate-cancer", 3 * 365, **DIAGNOSIS_TIME_LOW_RISK)
    order = Evidence("Malignant neoplasm of prostate", days_ago(0), "ServiceRequest/bs", from_order=True)
    f = replace(f, concepts={"prostate-cancer": (*f.concepts["prostate-cancer"], order)})
    assert outcome(f) != STAGING


def test_a_history_code_or_staging_record_dates_the_diagnosis():
    """The cancer is as old as its first record: a "history of" code (Z85.x) or the staging
    observations (grade group, TNM, stage group are recorded at diagnosis) count; an order-only
    cancer code with an old history code is not newly diagnosed."""
    order = Evidence("C50.912", days_ago(0), "ServiceRequest/bs", from_order=True)
    history = Evidence("Z85.3", days_ago(2 * 365), "Condition/h")
    f = replace(
        facts(stage_group="IA"), concepts={"breast-cancer": (order,), "history-of-breast-cancer": (history,)}
    )
    assert outcome(f) == NO_CRITERIA_APPLY
    staged = replace(
        facts(stage_group="IA"),
        concepts={"breast-cancer": (order,)},
        staging_evidence={"stage_group": Evidence("stage group IA", days_ago(20), "Observation/s")},
    )
    assert outcome(staged) == EARLY_BREAST
    old_staging = replace(
        staged, staging_evidence={"stage_group": Evidence("IA", days_ago(400), "Observation/s")}
    )
    assert outcome(old_staging) == NO_CRITERIA_APPLY


def test_staging_card_names_the_recent_diagnosis():
    f = diagnosed("prostate-cancer", 26, **DIAGNOSIS_TIME_LOW_RISK)
    match = select_scenario(f, KNOWLEDGE).match
    assert any("first recorded on" in line and "(26 days ago)" in line for line in match.evidence)


# --- early breast cancer: ACR 310 V2 "Newly diagnosed clinical stage I-IIA" -------------------


@pytest.mark.parametrize(
    ("ago", "expected"), [(20, EARLY_BREAST), (183, EARLY_BREAST), (2 * 365, NO_CRITERIA_APPLY)]
)
def test_early_breast_rule_needs_a_recent_diagnosis(ago, expected):
    """clinical-knowledge 1.B: "V2: Newly diagnosed clinical stage I-IIA. Evaluation for distant
    disease." Two years after diagnosis an asymptomatic scan is surveillance (V10), not rated."""
    assert outcome(diagnosed("breast-cancer", ago, stage_group="IA")) == expected


def test_early_breast_rule_asks_for_an_undated_diagnosis():
    f = replace(
        facts(stage_group="IA"), concepts={"breast-cancer": (Evidence("C50.912", None, "Condition/b"),)}
    )
    selection = select_scenario(f, KNOWLEDGE)
    assert selection.outcome == INSUFFICIENT_DATA
    assert any(
        "date of the breast cancer diagnosis" in label for m in selection.missing for label in m.missing
    )


# --- unfavourable-intermediate bone scan: only where its source row applies --------------------


@pytest.mark.parametrize(
    ("grade_group", "t", "psa_value", "bone_scan"),
    [
        (3, "cT2b", 12.0, "may-be-appropriate"),  # the source row: intermediate, PSA > 10 and T2
        (3, "cT2a", 6.0, None),  # PSA <= 10
        (3, "cT1c", 12.0, None),  # not T2
        (2, "cT2b", 10.0, None),  # PSA 10 is not > 10
    ],
)
def test_unfavourable_intermediate_bone_scan_rating_keeps_its_source_condition(
    grade_group, t, psa_value, bone_scan
):
    """clinical-knowledge 1.C: the ACR 2017 version (J Nucl Med 2020;61(3):405 Table 1) "rates bone
    scan 'May be appropriate' for intermediate risk with PSA > 10 and T2"."""
    f = diagnosed("prostate-cancer", 30, grade_group=grade_group, tnm={"T": t}, psa=psa(psa_value))
    match = select_scenario(f, KNOWLEDGE).match
    assert match is not None and match.scenario.id == STAGING
    assert "psma-pet-ct" in match.variant.ratings  # PSMA PET stays usually appropriate (seed 002)
    rating = match.variant.ratings.get("bone-scan-whole-body")
    assert (rating.category if rating else None) == bone_scan


# --- seed 000: "currently undergoing or have been treated with" --------------------------------


def test_metastatic_follow_up_counts_past_systemic_therapy():
    """Seed 000: "patients with a confirmed diagnosis of metastatic prostate cancer who are currently
    undergoing or have been treated with systemic therapies"."""
    stopped = med("docetaxel", "chemotherapy", status="completed", started=700)
    f = facts("prostate-cancer", "metastatic-disease", psa=psa(3.0), medications=(stopped,))
    assert outcome(f) == METASTATIC
    scenario = next(s for s in KNOWLEDGE.scenarios if s.id == METASTATIC)
    assert [r.when for r in scenario.requires] == [
        {
            "treated_with_med_class": [
                "adt",
                "arpi",
                "antiandrogen",
                "chemotherapy",
                "immunotherapy",
                "radioligand",
                "parp-inhibitor",
            ]
        }
    ]


# --- cord compression: "sphincter dysfunction" is a neurological sign -------------------------


@pytest.mark.parametrize(
    "cancer", ["prostate-cancer", "breast-cancer", "metastasis-bone", "history-of-cancer"]
)
def test_back_pain_with_sphincter_dysfunction_raises_the_cord_compression_red_flag(cancer):
    """clinical-knowledge 1.A: suspected cord compression is "new back pain with motor or sensory
    deficit, sphincter dysfunction, or known vertebral metastases"; NICE NG234 names bladder or
    bowel dysfunction (value set cards/valuesets/sphincter-dysfunction.yaml)."""
    hit = select_scenario(facts(cancer, "back-pain", "sphincter-dysfunction"), KNOWLEDGE)
    assert [m.scenario.id for m in hit.red_flags] == ["red-flag-cord-compression"]
    assert not select_scenario(facts(cancer, "sphincter-dysfunction"), KNOWLEDGE).red_flags
    assert not select_scenario(facts(cancer, "back-pain"), KNOWLEDGE).red_flags


# --- wording that contradicted the sources ------------------------------------------------------


def test_lu177_note_gives_the_selection_indication_to_gozetotide_only():
    """clinical-knowledge 1.C (CGS Medicare, rev. 2024-08-30): piflufolastat and flotufolastat are
    indicated for staging and suspected recurrence; "Ga-68 gozetotide ...: the same two indications
    plus selection for Lu-177 vipivotide tetraxetan"."""
    text = " ".join(KNOWLEDGE.pitfalls["psma-radioligand-eligibility"].text.split())
    assert "FDA-indicated for selecting patients for it is Ga-68 gozetotide" in text
    assert "piflufolastat and flotufolastat labels cover staging and suspected recurrence only" in text
    assert "(Ga-68 gozetotide or piflufolastat) also selects" not in text


def test_psma_pet_is_never_shown_with_more_radiation_than_conventional_staging():
    """Seed 002: "a PSMA PET scan delivered substantially less radiation than the conventional
    CT-plus-bone-scan approach" (proPSMA, 8.4 vs 19.2 mSv)."""
    procs = KNOWLEDGE.catalog.procedures
    psma = procs["psma-pet-ct"].rrl
    assert psma <= procs["bone-scan-whole-body"].rrl and psma < procs["ct-cap-contrast"].rrl


# --- the predicates these rules use --------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "problem"),
    [
        ({"diagnosed_within_days": {"concept": "prostate-cancer", "days": 183}}, "expected {concepts"),
        ({"diagnosed_over_days_ago": {"concepts": ["prostate-cancr"], "days": 183}}, "unknown concept"),
        ({"t_category_in": ["T2d"]}, "unknown T category"),
        ({"psa_above": -1}, "non-negative number"),
    ],
)
def test_new_predicates_reject_bad_arguments(pred, problem):
    errors = check(pred, "population")
    assert errors and problem in errors[0]


def test_t_category_in_matches_sub_categories_of_a_listed_category():
    assert evaluate({"t_category_in": ["T2"]}, facts(tnm={"T": "cT2c"})).ok
    assert evaluate({"t_category_in": ["T2"]}, facts(tnm={"T": "T2"})).ok
    assert not evaluate({"t_category_in": ["T2a"]}, facts(tnm={"T": "cT2b"})).ok
    assert not evaluate({"t_category_in": ["T2"]}, facts()).ok


# --- flare: a therapy change within 3 months AND a prior bone scan to compare with --------------


@pytest.mark.parametrize(
    ("chart", "therapy"),
    [
        (("breast-cancer", "bone-pain"), med("doxorubicin", "chemotherapy", started=60)),
        (("prostate-cancer", "metastatic-disease"), med("abiraterone", "arpi", started=40)),
    ],
    ids=["breast-neoadjuvant", "prostate-metastatic"],
)
def test_flare_caution_needs_a_recent_therapy_change_and_a_prior_bone_scan(chart, therapy):
    """Seed 000 (Pitfalls): new or brighter lesions early after a therapy change may be flare, read
    against a scan >= 3 months after the change; clinical-knowledge 1.A: "new bone-scan lesions
    within about 3 months of a therapy change should be confirmed on a later scan". At first imaging
    there is no earlier scan to misread (issue 9: neoadjuvant chemotherapy, first bone scan)."""
    first = facts(*chart, medications=(therapy,))
    result = run(first, cpt("bs", "78306"))
    assert "flare-phenomenon" not in result.rule_ids
    compared = replace(first, imaging=(prior("bone-scan", "bone-metastases", ago=150),))
    assert "flare-phenomenon" in run(compared, cpt("bs", "78306")).rule_ids
    old_change = replace(compared, medications=(replace(therapy, start=days_ago(200)),))
    assert "flare-phenomenon" not in run(old_change, cpt("bs", "78306")).rule_ids

"""Issue 9 point 3: seed situations that had no rule and were answered silently.

Each test pins the seed line the rule rests on (quoted) and the section of the shared reference
(clinical-knowledge.md); the rule files in cards/ quote the same lines. Every rule is checked to
fire on its situation and to stay quiet on the nearest look-alike. End-to-end cases for the same
situations are in fixtures/cases (written by fixtures/generate_cases.py, `build_seed_rules`).
"""

from __future__ import annotations

from cds_service.engine.orders import studies_to_rate
from cds_service.engine.rating import rate_study
from cds_service.engine.scenario import select_scenario
from tests.engine.builders import (
    HCPCS,
    KNOWLEDGE,
    cpt,
    facts,
    lab,
    med,
    prior,
    proc,
    psa,
    service_request,
)

ADT = med("leuprolide", "adt", started=900)
METASTATIC_PROSTATE = ("prostate-cancer", "metastatic-disease")
RP = (proc("radical-prostatectomy", 900),)
CANCER_REASON = "399068003"  # the order's reason is the cancer itself, not a symptom


def rate(f, *orders):
    studies = studies_to_rate("order-sign", orders, (), KNOWLEDGE.catalog)
    selection = select_scenario(f, KNOWLEDGE)
    return [rate_study(s, selection, f, KNOWLEDGE) for s in studies]


def pitfall_ids(rated):
    return {p.pitfall.id for p in rated.pitfalls}


def psma_pet():
    return service_request("pet", ("http://www.ama-assn.org/go/cpt", "78815"), (HCPCS, "A9595"))


# 1. Seed 004: "initiating salvage radiation when PSA rises to 0.1-0.2 ng/mL improves outcomes ...
#    PSMA PET/CT enhances this approach"; seed 002: "European guidelines suggest a PSMA PET scan when
#    PSA is above 0.2 ng/mL". Reference 1.C and section 4. No source rates it: no category.
def test_psa_rising_below_recurrence_threshold_recommends_psma_pet_without_a_rating():
    f = facts("prostate-cancer", procedures=RP, psa=psa(0.04, 0.08, 0.15))
    [r] = rate(f, psma_pet())
    assert r.scenario_id == "prostate-post-prostatectomy-early-rising-psa"
    assert r.category is None and r.pama == "no-criteria-apply"
    assert pitfall_ids(r) == {"early-rising-psa-psma-pet"}
    [bone] = rate(f, cpt("bs", "78306", reason=CANCER_REASON))
    assert pitfall_ids(bone) == {"low-psa-conventional-imaging-low-yield"}
    assert [a.procedure.id for a in bone.replacements] == ["psma-pet-ct"]


def test_psa_0_15_not_rising_and_psa_0_2_rising_are_not_the_early_rule():
    stable = facts("prostate-cancer", procedures=RP, psa=psa(0.15, 0.15))
    assert select_scenario(stable, KNOWLEDGE).outcome == "prostate-post-prostatectomy-undetectable-psa"
    single = facts("prostate-cancer", procedures=RP, psa=psa(0.15))  # one value: rising or not is unknown
    assert select_scenario(single, KNOWLEDGE).outcome == "insufficient-data"
    recurrence = facts("prostate-cancer", procedures=RP, psa=psa(0.1, 0.15, 0.25))
    assert select_scenario(recurrence, KNOWLEDGE).outcome == "prostate-biochemical-recurrence"


def test_undetectable_psa_after_prostatectomy_says_no_criteria_apply_on_a_card():
    f = facts("prostate-cancer", procedures=RP, psa=psa(0.02, 0.01))
    [r] = rate(f, psma_pet())
    assert r.scenario_id == "prostate-post-prostatectomy-undetectable-psa"
    assert r.category is None and pitfall_ids(r) == {"undetectable-psa-imaging-low-yield"}
    # "<0.1" keeps its bound as the value: a PSA that stays at "<0.1" is not rising
    below_assay = facts("prostate-cancer", procedures=RP, psa=psa(0.1, 0.1))
    assert select_scenario(below_assay, KNOWLEDGE).outcome == "prostate-post-prostatectomy-undetectable-psa"
    # with bone pain the undetectable-PSA advice must not be given (pain is its own question)
    painful = facts("prostate-cancer", "bone-pain", procedures=RP, psa=psa(0.02, 0.01))
    assert select_scenario(painful, KNOWLEDGE).outcome != "prostate-post-prostatectomy-undetectable-psa"


# 2. Seed 002: "the scan is used to check eligibility for PSMA-targeted radioligand therapy in certain
#    men with advanced, treatment-resistant prostate cancer". Reference 1.A: Ga-68 gozetotide is the
#    agent FDA-indicated for selecting patients for Lu-177 vipivotide tetraxetan (after ARPI + taxane).
MCRPC_TREATED = (
    ADT,
    med("enzalutamide", "arpi", started=700, status="stopped"),
    med("docetaxel", "chemotherapy", started=300, status="completed"),
)


def test_mcrpc_after_arpi_and_taxane_without_psma_pet_gets_the_lu177_card():
    f = facts(*METASTATIC_PROSTATE, "castration-resistant", medications=MCRPC_TREATED, psa=psa(10, 15))
    [r] = rate(f, cpt("bs", "78306"))
    assert r.category == "usually-appropriate"
    assert "psma-pet-for-lu177-selection" in pitfall_ids(r)
    assert "psma-pet-ct" in [a.procedure.id for a in r.replacements]
    text = KNOWLEDGE.pitfalls["psma-pet-for-lu177-selection"].text
    assert "Ga-68 gozetotide" in text and "piflufolastat" not in text


def test_rising_psa_on_adt_counts_as_castration_resistance():
    f = facts(*METASTATIC_PROSTATE, medications=MCRPC_TREATED, psa=psa(10, 15))
    assert "psma-pet-for-lu177-selection" in pitfall_ids(rate(f, cpt("bs", "78306"))[0])


def test_no_lu177_card_with_a_psma_pet_on_record_or_without_a_taxane_or_when_hormone_sensitive():
    on_record = facts(
        *METASTATIC_PROSTATE, "castration-resistant", medications=MCRPC_TREATED, imaging=(prior("psma-pet"),)
    )
    no_taxane = facts(*METASTATIC_PROSTATE, "castration-resistant", medications=MCRPC_TREATED[:2])
    sensitive = facts(*METASTATIC_PROSTATE, medications=MCRPC_TREATED, psa=psa(15, 10))
    for f in (on_record, no_taxane, sensitive):
        assert "psma-pet-for-lu177-selection" not in pitfall_ids(rate(f, cpt("bs", "78306"))[0])


# 5. Seed 000 FAQ: "For asymptomatic patients with a stable PSA, imaging might be performed every
#    6-12 months." Reference 1.A. Not blocking: the ACR rating stays, an info card names the date.
def test_repeat_bone_scan_six_weeks_after_a_stable_one_is_flagged_as_a_short_interval():
    f = facts(*METASTATIC_PROSTATE, medications=(ADT,), psa=psa(0.7, 0.6, 0.6),
              imaging=(prior("bone-scan", "bone-metastases", "stable", ago=42),))
    [r] = rate(f, cpt("bs", "78306", reason=CANCER_REASON))
    assert r.category == "usually-appropriate"
    [fired] = [p for p in r.pitfalls if p.pitfall.id == "short-interval-repeat-bone-scan"]
    assert fired.pitfall.indicator == "info"
    assert any("2026-10-11" in line for line in fired.evidence)  # the last scan's date is on the card


def test_no_short_interval_card_when_psa_rises_symptoms_appear_or_the_scan_is_old():
    scan = (prior("bone-scan", "stable", ago=42),)
    rising = facts(*METASTATIC_PROSTATE, medications=(ADT,), psa=psa(0.6, 0.9), imaging=scan)
    painful = facts(*METASTATIC_PROSTATE, "bone-pain", medications=(ADT,), psa=psa(0.6, 0.6), imaging=scan)
    old = facts(*METASTATIC_PROSTATE, medications=(ADT,), psa=psa(0.6, 0.6),
                imaging=(prior("bone-scan", "stable", ago=200),))
    for f in (rising, painful, old):
        assert "short-interval-repeat-bone-scan" not in pitfall_ids(rate(f, cpt("bs", "78306"))[0])


# 6. Seed 001: "If a patient has persistent, severe, and localized bone pain despite a negative bone
#    scan, a targeted MRI of that specific area should be considered"; seed 000: "If the scan is
#    indeterminate ... a problem-solving CT or MRI of the specific area may be necessary".
def test_pain_after_negative_or_equivocal_bone_scan_points_to_targeted_mri():
    for finding in ("no-bone-metastases", "equivocal"):
        f = facts(*METASTATIC_PROSTATE, "back-pain", medications=(ADT,), psa=psa(1.0, 1.0),
                  imaging=(prior("bone-scan", finding, ago=14),))
        [mri] = rate(f, cpt("mri", "72158"))
        assert mri.category is None
        assert pitfall_ids(mri) == {"focal-pain-after-negative-or-equivocal-bone-scan"}
    without_pain = facts(*METASTATIC_PROSTATE, medications=(ADT,), psa=psa(1.0, 1.0),
                         imaging=(prior("bone-scan", "equivocal", ago=14),))
    assert not rate(without_pain, cpt("mri", "72158", reason=CANCER_REASON))[0].pitfalls


# 7. Seed 001: visceral metastases "Symptoms may be vague (fatigue, weight loss)"; "If there is any
#    clinical concern for visceral disease ... a bone scan alone is insufficient". Reference 1.B, 2.2.
def test_weight_loss_alone_on_neoadjuvant_therapy_warns_that_a_bone_scan_is_insufficient():
    chemo = (med("doxorubicin", "chemotherapy", started=120),)
    f = facts("breast-cancer", "weight-loss", medications=chemo)
    [r] = rate(f, cpt("bs", "78306", reason=CANCER_REASON))
    assert r.scenario_id == "breast-neoadjuvant-suspected-metastases"
    assert "visceral-suspicion-bone-scan-insufficient" in pitfall_ids(r)
    bone_pain_only = facts("breast-cancer", "bone-pain", medications=chemo)
    [bone_pain_rated] = rate(bone_pain_only, cpt("bs", "78306"))
    assert "visceral-suspicion-bone-scan-insufficient" not in pitfall_ids(bone_pain_rated)


# 8. The early-breast rule rates contrast CT: the kidney pitfall must apply there too (seed 001 FAQ:
#    "a radionuclide bone scan is generally considered safe in patients with renal insufficiency").
def test_early_breast_contrast_ct_with_egfr_24_carries_the_kidney_warning():
    f = facts("breast-cancer", stage_group="IA", labs={"egfr": lab(24, None)})
    [r] = rate(f, cpt("ch", "71260", reason=CANCER_REASON), cpt("ap", "74177", reason=CANCER_REASON))
    assert r.category == "usually-not-appropriate" and "contrast-kidney-risk" in pitfall_ids(r)
    normal = facts("breast-cancer", stage_group="IA", labs={"egfr": lab(90, None)})
    orders = (cpt("ch", "71260", reason=CANCER_REASON), cpt("ap", "74177", reason=CANCER_REASON))
    [normal_rated] = rate(normal, *orders)
    assert not normal_rated.pitfalls


def test_untraced_pet_is_answered_where_the_scenario_rates_no_tracer():
    # The scenario rates and recommends no tracer-specific PET: the tracer cannot change the answer,
    # so a PET/CT without a tracer is no longer a silent no-criteria-apply (the coverage check).
    untraced = cpt("pet", "78815", reason=CANCER_REASON)
    undetectable = facts("prostate-cancer", procedures=RP, psa=psa(0.02, 0.01))
    [r] = rate(undetectable, untraced)
    assert r.rule_id == "prostate-post-prostatectomy-undetectable-psa" and r.pama == "no-criteria-apply"
    assert pitfall_ids(r) == {"undetectable-psa-imaging-low-yield"}
    low_risk_pain = facts("prostate-cancer", "bone-pain", grade_group=1, tnm={"T": "T1c"}, psa=psa(5.0))
    [r] = rate(low_risk_pain, untraced)
    assert r.pama == "no-criteria-apply" and r.coverage is not None and r.category is None
    # where the scenario rates tracers differently, the tracer is still asked for
    early = facts("prostate-cancer", procedures=RP, psa=psa(0.04, 0.08, 0.15))
    assert rate(early, untraced)[0].rule_id == "pet-tracer-unspecified"

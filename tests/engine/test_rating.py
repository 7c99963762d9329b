"""Study + scenario + facts -> rating, pitfalls and alternatives (never an invented category)."""

from __future__ import annotations

import pytest

from cds_service.engine.orders import studies_to_rate
from cds_service.engine.rating import rate_study
from cds_service.engine.scenario import select_scenario
from tests.engine.builders import (
    HCPCS,
    KNOWLEDGE,
    SNOMED,
    cpt,
    facts,
    lab,
    med,
    prior,
    proc,
    psa,
    service_request,
)

ADT_OLD = med("leuprolide", "adt", started=540)
METASTATIC_PROSTATE = ("prostate-cancer", "metastatic-disease")
NEOADJ = med("paclitaxel", "chemotherapy", started=200)


def rate(f, *orders):
    studies = studies_to_rate("order-sign", orders, (), KNOWLEDGE.catalog)
    selection = select_scenario(f, KNOWLEDGE)
    return [rate_study(s, selection, f, KNOWLEDGE) for s in studies]


def pitfall_ids(rated):
    return {p.pitfall.id for p in rated.pitfalls}


def test_usually_appropriate_maps_to_pama_appropriate():
    [r] = rate(facts(*METASTATIC_PROSTATE, medications=(ADT_OLD,)), cpt("bs", "78306"))
    assert (r.category, r.pama, r.scenario_id) == (
        "usually-appropriate",
        "appropriate",
        "prostate-metastatic-systemic-therapy",
    )
    assert not r.pitfalls


def test_usually_not_appropriate_maps_to_not_appropriate_with_replacements():
    f = facts("breast-cancer", "bone-pain", medications=(NEOADJ,))
    [r] = rate(f, cpt("mri1", "71552"), cpt("mri2", "74183"), cpt("mri3", "72197"))
    assert r.procedure.id == "mri-cap" and r.pama == "not-appropriate"
    assert [a.procedure.id for a in r.replacements] == [
        "bone-scan-whole-body",
        "ct-cap-contrast",
        "fdg-pet-ct",
    ]


def test_study_not_rated_by_the_scenario_gets_no_criteria_apply_and_no_category():
    [r] = rate(facts(*METASTATIC_PROSTATE, medications=(ADT_OLD,)), cpt("mam", "77065"))
    assert r.pama == "no-criteria-apply" and r.category is None


def test_may_be_appropriate_is_appropriate_for_pama():
    f = facts("prostate-cancer", procedures=(proc("radical-prostatectomy"),), psa=psa(0.8, 1.5, 3.0))
    [r] = rate(f, cpt("bs", "78306"))
    assert (r.category, r.pama) == ("may-be-appropriate", "appropriate")
    assert not r.pitfalls  # PSA 3 is not below 1 ng/mL


def test_flare_pitfall_when_therapy_changed_within_three_months():
    f = facts(
        *METASTATIC_PROSTATE,
        medications=(ADT_OLD, med("enzalutamide", "arpi", started=45)),
        imaging=(prior("bone-scan", "bone-metastases"),),  # a prior bone scan to compare with
    )
    [r] = rate(f, cpt("bs", "78306"))
    assert pitfall_ids(r) == {"flare-phenomenon"}
    assert r.pama == "appropriate"


def test_discordant_progression_suggests_ct_or_psma_instead_of_repeat_bone_scan():
    f = facts(
        *METASTATIC_PROSTATE,
        medications=(ADT_OLD,),
        psa=psa(2.0, 4.0),
        imaging=(prior("bone-scan", "stable", ago=90),),
    )
    [r] = rate(f, cpt("bs", "78306"))
    assert pitfall_ids(r) == {"discordant-psa-progression"}
    assert [a.procedure.id for a in r.replacements] == ["ct-cap-contrast", "psma-pet-ct"]


def test_no_discordance_when_the_latest_bone_scan_showed_progression():
    f = facts(
        *METASTATIC_PROSTATE,
        medications=(ADT_OLD,),
        psa=psa(2.0, 4.0),
        imaging=(prior("bone-scan", "stable", ago=300), prior("bone-scan", "progression", ago=40)),
    )
    [r] = rate(f, cpt("bs", "78306"))
    assert not r.pitfalls


def test_visceral_suspicion_makes_bone_scan_alone_insufficient():
    f = facts("breast-cancer", "back-pain", medications=(NEOADJ,), labs={"ast": lab(90, 40)})
    [r] = rate(f, cpt("bs", "78306"))
    assert pitfall_ids(r) == {"visceral-suspicion-bone-scan-insufficient"}
    assert r.replacements[0].procedure.id == "ct-cap-contrast"


@pytest.mark.parametrize("subtype", [("triple-negative",), ("inflammatory-breast-cancer",)])
def test_aggressive_subtype_prefers_fdg(subtype):
    f = facts("breast-cancer", "bone-pain", *subtype, medications=(NEOADJ,))
    [r] = rate(f, cpt("bs", "78306"))
    assert pitfall_ids(r) == {"aggressive-subtype-prefer-fdg"}
    assert [a.procedure.id for a in r.replacements] == ["fdg-pet-ct"]


def test_triple_negative_from_receptor_results():
    f = facts(
        "breast-cancer",
        "bone-pain",
        medications=(NEOADJ,),
        receptors={"er": "negative", "pr": "negative", "her2": "negative"},
    )
    [r] = rate(f, cpt("ch", "71260"), cpt("ap", "74177"))
    assert pitfall_ids(r) == {"aggressive-subtype-prefer-fdg"}


def test_fdg_order_in_aggressive_subtype_has_no_pitfall():
    f = facts("breast-cancer", "bone-pain", "triple-negative", medications=(NEOADJ,))
    [r] = rate(f, service_request("pet", ("http://www.ama-assn.org/go/cpt", "78815"), (HCPCS, "A9552")))
    assert r.procedure.id == "fdg-pet-ct" and not r.pitfalls and r.pama == "appropriate"


def test_low_psa_recurrence_warns_that_conventional_imaging_has_low_yield():
    f = facts("prostate-cancer", procedures=(proc("radical-prostatectomy"),), psa=psa(0.1, 0.3, 0.5))
    [bs, psma] = rate(
        f,
        cpt("bs", "78306"),
        service_request("pet", ("http://www.ama-assn.org/go/cpt", "78815"), (HCPCS, "A9595")),
    )
    assert pitfall_ids(bs) == {"low-psa-conventional-imaging-low-yield"}
    assert bs.replacements[0].procedure.id == "psma-pet-ct"
    assert (psma.category, psma.pitfalls) == ("usually-appropriate", ())


@pytest.mark.parametrize(
    "kidney",
    [
        {"labs": {"egfr": lab(24, None, "mL/min/1.73m2")}},
        {"concepts": ("dialysis",)},
        {"concepts": ("ckd-severe",)},
    ],
)
def test_iodinated_contrast_with_severe_kidney_disease_warns_and_offers_non_iodinated(kidney):
    concepts = (*METASTATIC_PROSTATE, *kidney.get("concepts", ()))
    f = facts(*concepts, medications=(ADT_OLD,), labs=kidney.get("labs", {}))
    [r] = rate(f, cpt("ch", "71260"), cpt("ap", "74177"))
    assert pitfall_ids(r) == {"contrast-kidney-risk"}
    assert r.replacements and all(a.procedure.contrast != "iodinated" for a in r.replacements)
    assert "bone-scan-whole-body" in [a.procedure.id for a in r.replacements]


def test_no_kidney_warning_with_normal_egfr_or_without_contrast():
    f = facts(*METASTATIC_PROSTATE, medications=(ADT_OLD,), labs={"egfr": lab(75, None)})
    assert not rate(f, cpt("ap", "74177"))[0].pitfalls
    f_low = facts(*METASTATIC_PROSTATE, medications=(ADT_OLD,), labs={"egfr": lab(20, None)})
    assert not rate(f_low, cpt("bs", "78306"))[0].pitfalls


def test_psma_in_castration_resistant_disease_notes_radioligand_eligibility():
    f = facts(*METASTATIC_PROSTATE, "castration-resistant", medications=(ADT_OLD,))
    [r] = rate(f, service_request("pet", ("http://www.ama-assn.org/go/cpt", "78815"), (HCPCS, "A9596")))
    assert pitfall_ids(r) == {"psma-radioligand-eligibility"} and r.pama == "appropriate"


def test_lytic_lesions_warning_on_bone_scan_in_discordant_breast_disease():
    f = facts(
        "breast-cancer",
        "metastatic-disease",
        imaging=(prior("ct", "bone-metastases", ago=20), prior("bone-scan", "no-bone-metastases", ago=10)),
    )
    [r] = rate(f, cpt("bs", "78306"))
    assert r.pama == "no-criteria-apply" and r.category is None  # no ACR variant: no category invented
    assert pitfall_ids(r) == {"lytic-lesions-missed-on-bone-scan"}
    assert [a.procedure.id for a in r.replacements] == ["ct-cap-contrast", "fdg-pet-ct", "spect-ct"]


def test_pet_without_tracer_gets_no_rating_when_the_tracer_decides():
    f = facts(*METASTATIC_PROSTATE, medications=(ADT_OLD,))
    [r] = rate(f, service_request("pet", (SNOMED, "443897008")))
    assert r.pama is None and r.rule_id == "pet-tracer-unspecified"
    assert {a.procedure.id for a in r.tracer_options} == {"psma-pet-ct", "fluciclovine-pet-ct"}


def test_pet_without_tracer_is_no_criteria_apply_when_no_tracer_is_rated():
    f = facts("breast-cancer", stage_group="I")
    [r] = rate(f, cpt("pet", "78815"))
    assert r.pama is None  # FDG is rated (not appropriate) in early breast cancer, so the tracer matters
    [r2] = rate(facts("other-cancer"), cpt("pet", "78815"))
    assert r2.pama == "no-criteria-apply"


def test_red_flag_outranks_the_scenario_rating():
    f = facts(*METASTATIC_PROSTATE, "back-pain", "focal-neuro-deficit", medications=(ADT_OLD,))
    bs, mri = rate(f, cpt("bs", "78306"), cpt("l", "72158"))
    assert (bs.scenario_id, bs.pama) == ("red-flag-cord-compression", "no-criteria-apply")
    assert (mri.scenario_id, mri.category) == ("red-flag-cord-compression", "usually-appropriate")


def test_insufficient_data_gives_no_rating_only_when_the_missing_facts_matter():
    f = facts("breast-cancer")  # stage unknown
    [bs] = rate(f, cpt("bs", "78306"))
    assert bs.pama is None and bs.scenario_id == "insufficient-data"
    [mam] = rate(f, cpt("mam", "77065"))  # no breast scenario rates mammography: stage cannot matter
    assert mam.pama == "no-criteria-apply"


def test_non_oncology_patient_is_no_criteria_apply():
    [r] = rate(facts("back-pain"), cpt("l", "72158"))
    assert (r.pama, r.scenario_id) == ("no-criteria-apply", "no-criteria-apply")

"""Concise, honest card wording (issue 9 points 5 and 6): provenance on the card, tracers of the
patient's cancer only, unverified figures never shown as facts, summaries that fit."""

from __future__ import annotations

import dataclasses

from cds_service.engine import EngineOptions, evaluate_facts
from cds_service.engine import card_text as ct
from tests.engine.builders import (
    KNOWLEDGE,
    SNOMED,
    cpt,
    facts,
    lab,
    med,
    proc,
    psa,
    record,
    request,
    run,
    service_request,
)

PET_NO_TRACER = (SNOMED, "443897008")
LOW_RISK = facts("prostate-cancer", grade_group=1, tnm={"T": "cT1c"}, psa=psa(4.1))
NEOADJ = facts(
    "breast-cancer", "bone-pain", medications=(med("paclitaxel", "chemotherapy", started=200),),
    labs={"alp": lab(190, 120)},
)
META = facts("prostate-cancer", "metastatic-disease", medications=(med("leuprolide", "adt", started=540),))


def test_translated_rating_says_so_on_the_card():
    [card] = run(LOW_RISK, cpt("bs", "78306")).cards
    assert "translated by this service from AUA" in card["detail"]
    assert "not an ACR rating" in card["detail"]
    assert "ACR Appropriateness Criteria" not in card["detail"]


def test_acr_rating_names_topic_and_variant_on_the_card():
    result = run(NEOADJ, cpt("bs", "78306"), options=EngineOptions(quiet_appropriate=False))
    [card] = result.cards
    assert "*Source*: ACR Appropriateness Criteria: Monitoring Response to Neoadjuvant Systemic Therapy" in (
        card["detail"]
    )
    assert "variant 6" in card["detail"]


def test_pet_tracer_card_names_only_the_tracers_used_for_prostate_cancer():
    [card] = run(META, service_request("pet", PET_NO_TRACER)).cards
    assert card["summary"] == (
        "PET/CT tracer not specified: choose PSMA or Fluciclovine PET/CT to get a rating"
    )
    assert "FDG" not in card["summary"] + card["detail"]


def test_pet_tracer_card_names_only_the_tracers_used_for_breast_cancer():
    [card] = run(NEOADJ, service_request("pet", PET_NO_TRACER)).cards
    assert card["summary"] == "PET/CT tracer not specified: choose FDG PET/CT to get a rating"
    assert "PSMA" not in card["summary"] + card["detail"]
    assert "fluciclovine" not in (card["summary"] + card["detail"]).lower()


def test_a_sentence_marked_unverified_is_never_shown_on_a_card():
    pitfall = KNOWLEDGE.pitfalls["low-psa-conventional-imaging-low-yield"]
    marked = dataclasses.replace(
        pitfall,
        text="Conventional CT and bone scan rarely show the site of recurrence. "
        "PSMA PET/CT detects 77% of recurrences at any PSA [I]. CONDOR found disease in 63%.",
    )
    knowledge = dataclasses.replace(KNOWLEDGE, pitfalls={**KNOWLEDGE.pitfalls, pitfall.id: marked})
    bcr = facts("prostate-cancer", procedures=(proc("radical-prostatectomy"),), psa=psa(0.1, 0.3, 0.5))
    result = evaluate_facts(request(cpt("bs", "78306")), record(), bcr, knowledge, EngineOptions())
    [card] = result.cards
    assert "rarely show the site of recurrence" in card["detail"]
    assert "77%" not in card["detail"] and "[I]" not in card["detail"]
    assert "CONDOR found disease in 63%" in card["detail"]


def test_verified_keeps_unmarked_sentences_in_order():
    text = "First fact (Lancet 2020). Second figure 45% [I]. Third, 3.5 ng/mL vs. 2.0 ng/mL."
    assert ct.verified(text) == "First fact (Lancet 2020). Third, 3.5 ng/mL vs. 2.0 ng/mL."
    assert ct.verified(text, limit=1) == "First fact (Lancet 2020)."


def test_summary_fits_by_shortening_names_before_cutting_words():
    assert ct.fit("x" * 150, "short enough") == "short enough"
    cut = ct.fit("word " * 40)
    assert len(cut) <= ct.SUMMARY_MAX and cut.endswith("…") and not cut.endswith(" …")
    ct_cap = KNOWLEDGE.catalog.procedures["ct-cap-contrast"]
    assert ct.short_name(ct_cap) == "CT chest/abdomen/pelvis with contrast"
    assert ct.short_name(KNOWLEDGE.catalog.procedures["bone-scan-whole-body"]) == "Bone scan whole body"


def test_not_appropriate_summary_names_the_better_study():
    result = run(NEOADJ, cpt("ch", "71250"), cpt("ap", "74176"))  # CT C/A/P without contrast
    [card] = result.cards
    assert "usually not appropriate" in card["summary"] and "consider Bone scan whole body" in card["summary"]


def test_confidence_line_appears_once_with_each_issue_once():
    f = dataclasses.replace(LOW_RISK, data_issues=("PSA on 2026-01-01 has unit 'NG/XX'",) * 2)
    [card] = run(f, cpt("bs", "78306"), rec=record(incomplete=("medications", "medications"))).cards
    assert card["detail"].count("Confidence lowered") == 1
    assert card["detail"].count("NG/XX") == 1 and card["detail"].count("could not retrieve medications") == 1


def test_shorten_rewrites_every_study_name_in_a_summary():
    text = "CT chest, abdomen and pelvis with IV contrast is not rated; FDG-PET/CT skull base to mid-thigh is"
    assert ct.shorten(text, KNOWLEDGE.catalog.procedures.values()) == (
        "CT chest/abdomen/pelvis with contrast is not rated; FDG-PET/CT is"
    )


def test_a_may_be_category_reads_as_a_sentence():
    assert ct.grammar("CT abdomen is may be appropriate for X") == "CT abdomen may be appropriate for X"

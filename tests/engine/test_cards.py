"""Ratings -> cards and rating systemActions, through the whole pipeline after the facts stage."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from cds_service.engine import EngineOptions, evaluate
from cds_service.model import Evidence, Facts, PatientRecord
from tests.engine.builders import (
    HCPCS,
    KNOWLEDGE,
    SNOMED,
    TODAY,
    counter_uuid,
    cpt,
    facts,
    lab,
    med,
    ours,
    pama,
    prior,
    proc,
    psa,
    record,
    request,
    run,
    service_request,
)
from tests.engine.spec_rules import problems

ADT_OLD = med("leuprolide", "adt", started=540)
META = facts("prostate-cancer", "metastatic-disease", medications=(ADT_OLD,))
NEOADJ_BACK_PAIN = facts(
    "breast-cancer",
    "back-pain",
    medications=(med("paclitaxel", "chemotherapy", started=200),),
    labs={"alp": lab(190, 120)},
)
CORD = facts(
    "prostate-cancer", "metastatic-disease", "back-pain", "focal-neuro-deficit", medications=(ADT_OLD,)
)


def mri_cap():
    return cpt("m1", "71552"), cpt("m2", "74183"), cpt("m3", "72197")


SCENARIO_RUNS = {
    "quiet appropriate": (META, (cpt("bs", "78306"),)),
    "not appropriate": (NEOADJ_BACK_PAIN, mri_cap()),
    "pitfall": (
        facts(
            "prostate-cancer", "metastatic-disease", medications=(med("enzalutamide", "arpi", started=20),)
        ),
        (cpt("bs", "78306"),),
    ),
    "red flag": (CORD, (cpt("bs", "78306"),)),
    "insufficient": (facts("breast-cancer"), (cpt("bs", "78306"),)),
    "tracer": (META, (service_request("pet", (SNOMED, "443897008")),)),
    "early breast": (facts("breast-cancer", stage_group="I"), (cpt("bs", "78306"),)),
    "kidney": (
        facts("prostate-cancer", "metastatic-disease", "dialysis", medications=(ADT_OLD,)),
        (cpt("ch", "71260"), cpt("ap", "74177")),
    ),
    "no criteria": (facts(), (cpt("l", "72158"),)),
}


@pytest.mark.parametrize("name", sorted(SCENARIO_RUNS))
def test_every_response_satisfies_cds_hooks_rules(name):
    f, orders = SCENARIO_RUNS[name]
    result = run(f, *orders)
    assert problems(result) == []
    for card in result.cards:
        assert set(result.card_index[card["uuid"]]) == {
            "rule_id",
            "scenario_id",
            "knowledge_version",
            "procedure_id",
            "indicator",
            "order_codes",
        }
        assert result.card_index[card["uuid"]]["indicator"] == card["indicator"]
        # every card about an order names its codes: the snooze key (issue 9.7); red flags need none
        assert card["indicator"] == "critical" or "|" in result.card_index[card["uuid"]]["order_codes"]
        assert (
            card["links"][0]["url"]
            == f"https://cds.example.org/rules/{result.card_index[card['uuid']]['rule_id']}"
        )


def test_usually_appropriate_without_pitfall_is_rated_without_a_card():
    result = run(META, cpt("bs", "78306"))
    assert result.cards == () and pama(result) == {"bs": "appropriate"}


def test_quiet_appropriate_can_be_turned_off():
    result = run(META, cpt("bs", "78306"), options=EngineOptions(quiet_appropriate=False))
    [card] = result.cards
    assert card["indicator"] == "info" and "usually appropriate" in card["summary"]


def test_rating_action_returns_the_order_whole_with_pama_and_our_extension():
    order = cpt(
        "bs",
        "78306",
        note=[{"text": "keep me"}],
        extension=[{"url": "http://example.org/other", "valueString": "kept"}],
    )
    original = copy.deepcopy(order)
    [action] = run(META, order).system_actions
    resource = action["resource"]
    assert {k: v for k, v in resource.items() if k != "extension"} == {
        k: v for k, v in original.items() if k != "extension"
    }
    urls = [e["url"] for e in resource["extension"]]
    assert urls[0] == "http://example.org/other"
    assert "http://fhir.org/argonaut/Extension/pama-rating-consult-id" in urls
    consult = next(e for e in resource["extension"] if e["url"].endswith("consult-id"))
    assert consult["valueUri"].startswith("urn:uuid:")
    assert (
        "http://fhir.org/argonaut/Extension/pama-rating-qcdsm-consulted" not in urls
    )  # only when configured
    assert ours(action) == {
        "category": "usually-appropriate",
        "sourceKind": "acr",
        "scenario": "prostate-metastatic-systemic-therapy",
        "rule": "prostate-metastatic-systemic-therapy",
        "procedure": "bone-scan-whole-body",
        "knowledgeVersion": KNOWLEDGE.version,
    }
    assert order == original  # the input is not mutated


def test_repeated_rating_replaces_earlier_rating_extensions():
    first = run(META, cpt("bs", "78306")).system_actions[0]["resource"]
    again = run(META, first).system_actions[0]["resource"]
    assert len(again["extension"]) == len(first["extension"])


def test_qcdsm_extension_when_configured():
    result = run(META, cpt("bs", "78306"), options=EngineOptions(qcdsm_id="G1011"))
    ext = {e["url"]: e for e in result.system_actions[0]["resource"]["extension"]}
    assert ext["http://fhir.org/argonaut/Extension/pama-rating-qcdsm-consulted"]["valueString"] == "G1011"


def test_not_appropriate_card_replaces_the_order_with_the_preferred_alternative():
    result = run(NEOADJ_BACK_PAIN, *mri_cap())
    assert set(pama(result).values()) == {"not-appropriate"} and len(result.system_actions) == 3
    [card] = result.cards
    assert card["indicator"] == "warning"
    assert card["summary"].startswith("MRI chest/abdomen/pelvis with and without contrast is usually not")
    assert card["summary"].endswith("consider Bone scan whole body")  # the preferred alternative
    assert card["selectionBehavior"] == "at-most-one"
    first = card["suggestions"][0]
    assert first["isRecommended"] and "Bone scan" in first["label"]
    assert [a["type"] for a in first["actions"]] == ["delete", "delete", "delete", "create"]
    assert [a["resourceId"] for a in first["actions"][:3]] == [
        "ServiceRequest/m1",
        "ServiceRequest/m2",
        "ServiceRequest/m3",
    ]
    created = first["actions"][3]["resource"]
    assert created["code"]["coding"] == [{"system": "http://www.ama-assn.org/go/cpt", "code": "78306"}]
    assert created["reasonCode"] == [{"coding": [{"system": SNOMED, "code": "12584003"}]}]
    assert created["subject"] == {"reference": "Patient/p1"} and created["status"] == "draft"
    assert not any(s["isRecommended"] for s in card["suggestions"][1:])


def test_detail_lists_facts_with_dates_the_better_study_with_radiation_and_the_acr_source():
    detail = run(NEOADJ_BACK_PAIN, *mri_cap()).cards[0]["detail"]
    assert "ALP 190 U/L (reference upper limit 120) on 2026-11-17" in detail
    assert "paclitaxel (chemotherapy, active) since" in detail
    better = "Bone scan whole body (Tc-99m MDP) (usually appropriate, ☢☢☢ 1-10 mSv)"
    assert f"**Consider instead**: {better}" in detail
    assert (
        "*Source*: ACR Appropriateness Criteria: Monitoring Response to Neoadjuvant Systemic Therapy for "
        "Breast Cancer (TopicId 235), variant 6" in detail
    )
    # the alternatives table and the source articles are on the rule page behind the card's link
    assert "| Study |" not in detail and "001_b0aab85b4ad18bf0.txt" not in detail


def test_combined_ct_cap_is_one_card_and_both_orders_are_rated():
    f = facts("breast-cancer", stage_group="IIA")
    result = run(f, cpt("ch", "71260"), cpt("ap", "74177"))
    assert pama(result) == {"ch": "not-appropriate", "ap": "not-appropriate"}
    [card] = result.cards
    assert "ServiceRequest/ch + ServiceRequest/ap" in card["detail"]


def test_not_appropriate_without_alternative_offers_removal():
    [card] = run(facts("breast-cancer", stage_group="I"), cpt("bs", "78306")).cards
    [suggestion] = card["suggestions"]
    assert suggestion["actions"] == [
        {
            "type": "delete",
            "description": "Remove the draft order ServiceRequest/bs",
            "resourceId": "ServiceRequest/bs",
        }
    ]


def test_pitfall_card_on_an_appropriate_order_is_a_warning_with_the_pitfall_text():
    f = facts(
        "prostate-cancer",
        "metastatic-disease",
        medications=(med("enzalutamide", "arpi", started=20),),
        imaging=(prior("bone-scan", "bone-metastases"),),  # the flare caution needs a scan to compare with
    )
    result = run(f, cpt("bs", "78306"))
    [card] = result.cards
    assert card["indicator"] == "warning" and "flare" in card["summary"]
    assert "started 20 days ago" in card["detail"]
    assert "flare-phenomenon" in result.rule_ids and pama(result) == {"bs": "appropriate"}
    assert card["links"][1]["url"] == "https://cds.example.org/rules/flare-phenomenon"


def test_psma_radioligand_note_is_info():
    f = facts("prostate-cancer", "metastatic-disease", "castration-resistant", medications=(ADT_OLD,))
    [card] = run(
        f, service_request("pet", ("http://www.ama-assn.org/go/cpt", "78815"), (HCPCS, "A9595"))
    ).cards
    assert card["indicator"] == "info" and "Lu-177" in card["summary"]


def test_kidney_warning_offers_only_non_iodinated_alternatives():
    f, orders = SCENARIO_RUNS["kidney"]
    [card] = run(f, *orders).cards
    assert card["indicator"] == "warning" and "eGFR below 30 or dialysis" in card["summary"]
    labels = [s["label"] for s in card["suggestions"]]
    assert labels and not any("IV contrast" in label and "without" not in label for label in labels)


def test_alternative_already_drafted_is_not_proposed():
    f = facts(
        "prostate-cancer",
        "metastatic-disease",
        medications=(ADT_OLD,),
        psa=psa(2.0, 4.0),
        imaging=(prior("bone-scan", "stable"),),
    )
    [card] = run(f, cpt("bs", "78306"), cpt("ch", "71260"), cpt("ap", "74177")).cards
    assert all("CT chest, abdomen" not in s["label"] for s in card["suggestions"])


def test_red_flag_card_is_critical_and_replaces_the_order_with_urgent_mri_whole_spine():
    result = run(CORD, cpt("bs", "78306"))
    [card] = result.cards
    assert card["indicator"] == "critical" and card["summary"].startswith("URGENT")
    first, second = card["suggestions"]
    assert first["isRecommended"] and not second["isRecommended"]
    creates = [a["resource"] for a in first["actions"] if a["type"] == "create"]
    assert [c["code"]["coding"][0]["code"] for c in creates] == ["72156", "72157", "72158"]
    assert all(c["priority"] == "urgent" for c in creates)
    assert [a["type"] for a in second["actions"]] == ["create", "create", "create"]
    assert pama(result) == {"bs": "no-criteria-apply"}
    assert result.card_index[card["uuid"]]["procedure_id"] == "mri-spine-whole-wwo"


def test_red_flag_with_the_right_mri_already_ordered_has_no_replacement():
    result = run(CORD, cpt("c", "72156"), cpt("t", "72157"), cpt("l", "72158"))
    [card] = result.cards
    assert card["indicator"] == "critical" and "suggestions" not in card
    assert set(pama(result).values()) == {"appropriate"}


def test_two_red_flags_give_two_critical_cards_and_no_scenario_card():
    f = facts("breast-cancer", "cord-compression", "seizure", stage_group="I")
    result = run(f, cpt("bs", "78306"))
    assert [c["indicator"] for c in result.cards] == ["critical", "critical"]
    assert "MRI brain" in result.cards[1]["summary"]


def test_insufficient_data_is_one_info_card_and_no_rating():
    result = run(facts("prostate-cancer"), cpt("bs", "78306"), cpt("ap", "74177"))
    [card] = result.cards
    assert card["indicator"] == "info" and result.system_actions == ()
    assert card["summary"] == "No rating: record is missing grade group, PSA, T category"
    assert "record grade group, PSA, T category" in card["detail"]
    assert result.card_index[card["uuid"]]["rule_id"] == "insufficient-data"


def test_partly_known_risk_inputs_give_one_info_card_per_order_and_no_rating():
    # grade group known: each order's card asks for the PSA and T category (engine/completions.py)
    result = run(facts("prostate-cancer", grade_group=2), cpt("bs", "78306"), cpt("ap", "74177"))
    assert result.system_actions == () and len(result.cards) == 2
    for card in result.cards:
        assert card["indicator"] == "info" and card["extension"] == {"missingFacts": ["psa", "t-category"]}
        assert result.card_index[card["uuid"]]["rule_id"] == "insufficient-data"


def test_unspecified_pet_tracer_card_asks_for_the_tracer():
    result = run(META, service_request("pet", (SNOMED, "443897008")))
    [card] = result.cards
    assert card["indicator"] == "warning" and "tracer" in card["summary"]
    assert result.system_actions == ()  # an undetermined rating is never sent
    labels = [s["label"] for s in card["suggestions"]]
    assert any(label.startswith("PSMA PET/CT") for label in labels)
    update = card["suggestions"][0]["actions"][0]
    assert update["type"] == "update" and update["resource"]["orderDetail"][0]["coding"][0]["system"] == HCPCS


def test_no_criteria_apply_is_rated_without_card():
    result = run(facts(), cpt("l", "72158"))
    assert result.cards == () and pama(result) == {"l": "no-criteria-apply"}


def test_unretrieved_data_gives_no_rating_instead_of_no_criteria_apply():
    # Conditions could not be fetched: whether a scenario applies is unknown, so no PAMA code is claimed.
    result = run(facts(), cpt("bs", "78306"), rec=record(incomplete=("conditions",)))
    assert pama(result) == {}
    [card] = result.cards
    assert card["indicator"] == "info" and "could not be retrieved (conditions)" in card["detail"]
    # A study no scenario rates stays no-criteria-apply whatever data is missing.
    knee = run(facts(), cpt("k", "73721"), rec=record(incomplete=("conditions",)))
    assert knee.cards == () and pama(knee) in ({}, {"k": "no-criteria-apply"})


def test_non_imaging_only_request_returns_nothing():
    result = run(META, service_request("lab", ("http://loinc.org", "2857-1")))
    assert result.cards == () and result.system_actions == ()


def test_order_select_rates_only_selected_orders():
    result = run(
        NEOADJ_BACK_PAIN,
        cpt("bs", "78306"),
        *mri_cap(),
        hook="order-select",
        selections=("ServiceRequest/bs",),
    )
    assert pama(result) == {"bs": "appropriate"} and result.cards == ()


def test_data_issues_and_incomplete_prefetch_lower_confidence_in_the_card():
    f = facts("breast-cancer", stage_group="I", data_issues=("two conflicting stage groups (I, IIIA)",))
    [card] = run(f, cpt("bs", "78306"), rec=record(incomplete=("medications",))).cards
    assert "Confidence lowered" in card["detail"]
    assert "conflicting stage groups" in card["detail"] and "could not retrieve medications" in card["detail"]


def test_record_text_cannot_inject_markup():
    f = facts("breast-cancer", stage_group="I", data_issues=("<img src=x onerror=alert(1)> | *bold*",))
    [card] = run(f, cpt("bs", "78306")).cards
    assert "<img" not in card["detail"] and "&lt;img" in card["detail"]


def test_uuids_come_from_the_options_and_are_unique():
    result = run(NEOADJ_BACK_PAIN, *mri_cap())
    ids = [c["uuid"] for c in result.cards] + [s["uuid"] for c in result.cards for s in c["suggestions"]]
    assert len(ids) == len(set(ids)) and all(i.startswith("00000000-0000-4000-8000-") for i in ids)


def test_biochemical_recurrence_card_gives_psma_detection_by_psa_level():
    """Only verified detection figures are shown as facts. clinical-knowledge.md section 4 marks the
    source articles' "~45% at PSA < 0.25 up to ~96% above 10" [I] ("primary source not located")
    and gives, [V]: "PSA < 0.2: 11.3-50%; 0.2-0.49: 20-72.7%; 0.5-< 1.0: 25-87.5%" (PMC7383738)."""
    f = facts("prostate-cancer", procedures=(proc("radical-prostatectomy"),), psa=psa(0.1, 0.3, 0.5))
    [card] = run(f, cpt("bs", "78306")).cards
    assert "45%" not in card["detail"] and "96%" not in card["detail"]
    assert "20-73% of men at PSA 0.2-0.49 ng/mL" in card["detail"] and "PMC7383738" in card["detail"]
    assert card["suggestions"][0]["label"].startswith("Replace with PSMA PET/CT")


def test_may_be_appropriate_summary_reads_as_a_sentence():
    f = facts("prostate-cancer", procedures=(proc("radical-prostatectomy"),), psa=psa(0.1, 0.3, 0.5))
    [card] = run(f, cpt("bs", "78306")).cards
    assert " may be appropriate, but " in card["summary"]
    assert "is may be" not in card["summary"]


def test_evaluate_runs_the_facts_stage_and_accepts_three_arguments():
    from cds_service.engine import evaluate
    from tests.engine.builders import request

    result = evaluate(request(cpt("l", "72158")), record(), KNOWLEDGE)
    assert pama(result) == {"l": "no-criteria-apply"}  # an empty record matches no oncology scenario


def test_engine_and_knowledge_stages_do_not_import_flask_or_requests():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "cds_service"
    for path in [*(root / "engine").glob("*.py"), *(root / "knowledge").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            assert not any(n.split(".")[0] in ("flask", "requests") for n in names), path.name


def test_proposed_orders_arrive_already_rated():
    [card] = run(NEOADJ_BACK_PAIN, *mri_cap()).cards
    created = card["suggestions"][0]["actions"][3]["resource"]
    rating = next(
        e for e in created["extension"] if e["url"] == "http://fhir.org/argonaut/Extension/pama-rating"
    )
    assert rating["valueCodeableConcept"]["coding"][0]["code"] == "appropriate"
    assert ours({"resource": created})["procedure"] == "bone-scan-whole-body"


def test_tracer_card_links_the_scenario_it_was_judged_in():
    [card] = run(META, service_request("pet", (SNOMED, "443897008"))).cards
    assert [link["url"].rsplit("/", 1)[1] for link in card["links"]] == [
        "pet-tracer-unspecified",
        "prostate-metastatic-systemic-therapy",
    ]


def test_proposed_pet_order_is_recognised_as_its_tracer_specific_study():
    from cds_service.engine.orders import studies_to_rate

    f = facts("prostate-cancer", procedures=(proc("radical-prostatectomy"),), psa=psa(0.1, 0.3, 0.5))
    [card] = run(f, cpt("bs", "78306")).cards
    created = [a["resource"] for a in card["suggestions"][0]["actions"] if a["type"] == "create"]
    assert [s.procedure_id for s in studies_to_rate("order-sign", created, (), KNOWLEDGE.catalog)] == [
        "psma-pet-ct"
    ]


# --- unreadable data is visible even in quiet mode ------------------------------------------------

UNREADABLE = "PSA 4.2 'NG/XX' on 2026-10-01 (Observation/o9): unit not recognised; not used"


def _with_issue(f, *issues):
    from dataclasses import replace

    return replace(f, data_issues=tuple(issues))


def test_quiet_appropriate_with_unreadable_data_gets_an_information_card():
    result = run(_with_issue(META, UNREADABLE), cpt("bs", "78306"))
    [card] = result.cards
    assert card["indicator"] == "info"
    assert card["source"]["topic"]["code"] == "unreadable-data"
    assert card["summary"].startswith("Check the chart: 1 item could not be read")
    assert len(card["summary"]) <= 140
    assert "NG/XX" in card["detail"] and "usually appropriate" in card["detail"]
    assert "suggestions" not in card
    assert pama(result) == {"bs": "appropriate"}  # the rating itself is unchanged


def test_no_criteria_apply_with_unreadable_data_gets_the_card_too():
    result = run(_with_issue(facts(), UNREADABLE), cpt("l", "72158"))
    [card] = result.cards
    assert card["source"]["topic"]["code"] == "unreadable-data"
    assert "no criteria apply" in card["detail"]
    assert pama(result) == {"l": "no-criteria-apply"}


def test_dropped_or_unretrieved_data_counts_in_the_card():
    result = run(META, cpt("bs", "78306"), rec=record(incomplete=("medications",)))
    [card] = result.cards
    assert card["source"]["topic"]["code"] == "unreadable-data"
    assert "could not retrieve medications" in card["detail"]


def test_no_notice_card_when_another_card_already_shows_the_issues():
    result = run(_with_issue(NEOADJ_BACK_PAIN, UNREADABLE), *mri_cap())
    codes = [c["source"]["topic"]["code"] for c in result.cards]
    assert "unreadable-data" not in codes and codes
    assert all("NG/XX" in c["detail"] for c in result.cards)  # confidence section of the rated card


def test_no_notice_card_for_a_clean_chart_or_a_study_nothing_rates():
    assert run(META, cpt("bs", "78306")).cards == ()
    assert run(_with_issue(facts(), UNREADABLE), cpt("k", "73721")).cards == ()  # knee MRI: out of scope


# --- order indications (issue 8) ------------------------------------------------------------------

FROM_ORDER = {
    "back-pain": Evidence("Low back pain (SNOMED 279039007)", TODAY, "ServiceRequest/l", from_order=True),
    "focal-neuro-deficit": Evidence(
        "Paresis of lower extremity (SNOMED 102568007)", TODAY, "ServiceRequest/l", from_order=True
    ),
}


def cord_from_the_order() -> Facts:
    chart = facts("prostate-cancer", "metastasis-bone", medications=(ADT_OLD,))
    return dataclasses.replace(chart, concepts={**chart.concepts, **{k: (v,) for k, v in FROM_ORDER.items()}})


def test_red_flag_card_says_which_facts_came_from_the_orders_indication():
    [card] = run(cord_from_the_order(), cpt("l", "72158")).cards
    assert card["indicator"] == "critical"
    assert "- from the order's indication: Low back pain (SNOMED 279039007)" in card["detail"]
    assert "- from the order's indication: Paresis of lower extremity (SNOMED 102568007)" in card["detail"]
    assert "- metastasis-bone (coded) on" in card["detail"]  # chart facts keep their date, no provenance


def test_scenario_card_says_which_facts_came_from_the_orders_indication():
    pain = Evidence("Bone pain (SNOMED 12584003)", TODAY, "ServiceRequest/bs", from_order=True)
    f = facts("breast-cancer", medications=(med("paclitaxel", "chemotherapy", started=200),))
    f = dataclasses.replace(f, concepts={**f.concepts, "bone-pain": (pain,)})
    [card] = run(
        f, cpt("bs", "78306"), options=EngineOptions(quiet_appropriate=False, new_uuid=_uuid())
    ).cards
    assert "neoadjuvant" in card["detail"]
    assert "- from the order's indication: Bone pain (SNOMED 12584003)" in card["detail"]


def _uuid():
    return counter_uuid().new_uuid


def _created_codes(suggestion: dict) -> list[str]:
    return [
        a["resource"]["code"]["coding"][0]["code"] for a in suggestion["actions"] if a["type"] == "create"
    ]


def test_red_flag_with_lumbar_mri_drafted_completes_the_whole_spine_without_a_second_lumbar_mri():
    result = run(cord_from_the_order(), cpt("l", "72158"))
    [card] = result.cards
    [complete] = card["suggestions"]
    assert complete["isRecommended"]
    assert _created_codes(complete) == ["72156", "72157"]  # cervical + thoracic, never 72158 again
    assert [a["type"] for a in complete["actions"]] == ["create", "create"]  # the lumbar draft is kept
    assert all(a["resource"]["priority"] == "urgent" for a in complete["actions"])
    assert "complete" in card["summary"] and "MRI whole spine" in card["summary"]
    assert "Already on the draft: MRI lumbar spine" in card["detail"]
    # the proposed orders carry the whole-spine rating, so an accepted suggestion arrives rated
    assert {ours({"resource": a["resource"]})["procedure"] for a in complete["actions"]} == {
        "mri-spine-whole-wwo"
    }


def test_red_flag_with_lumbar_mri_and_another_study_drafted_still_never_duplicates_the_lumbar_mri():
    result = run(cord_from_the_order(), cpt("bs", "78306"), cpt("l", "72158"))
    [card] = result.cards
    for suggestion in card["suggestions"]:
        assert "72158" not in _created_codes(suggestion)


def test_red_flag_with_the_urgent_study_drafted_but_not_selected_suggests_no_duplicate():
    f = facts("breast-cancer", "headache", "seizure")
    result = run(
        f, cpt("ct", "70450"), cpt("mri", "70553"), hook="order-select", selections=("ServiceRequest/ct",)
    )
    [card] = result.cards
    assert card["indicator"] == "critical"
    assert "suggestions" not in card
    assert "perform the ordered MRI brain" in card["summary"]


def test_red_flag_with_mri_brain_drafted_shows_the_card_without_a_duplicate_brain_mri():
    f = facts("breast-cancer", "headache", "seizure")
    [card] = run(f, cpt("mri", "70553")).cards
    assert card["indicator"] == "critical" and "suggestions" not in card


def test_a_red_flag_stated_only_in_the_order_raises_the_critical_card_through_the_whole_pipeline():
    chart = PatientRecord(
        patient={"resourceType": "Patient", "id": "p1"},
        resources={
            "Condition": (
                {
                    "resourceType": "Condition",
                    "id": "c1",
                    "subject": {"reference": "Patient/p1"},
                    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C61"}]},
                },
                {
                    "resourceType": "Condition",
                    "id": "c2",
                    "subject": {"reference": "Patient/p1"},
                    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C79.51"}]},
                },
            )
        },
        as_of=TODAY,
    )
    lumbar = cpt("l", "72158")
    lumbar["reasonCode"] = [
        {"coding": [{"system": SNOMED, "code": "279039007", "display": "Low back pain"}]},
        {"coding": [{"system": SNOMED, "code": "102568007", "display": "Paresis of lower extremity"}]},
    ]
    result = evaluate(request(lumbar), chart, KNOWLEDGE, counter_uuid())
    [card] = result.cards
    assert card["indicator"] == "critical" and card["source"]["topic"]["code"] == "red-flag-cord-compression"
    assert "from the order's indication: Low back pain (SNOMED 279039007)" in card["detail"]
    quiet = dict(lumbar, reasonCode=[{"coding": [{"system": SNOMED, "code": "12584003"}]}])  # bone pain only
    assert not any(c["indicator"] == "critical" for c in evaluate(request(quiet), chart, KNOWLEDGE).cards)

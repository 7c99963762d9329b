"""The engine at one site: given the site's knowledge view (knowledge/site.py `site_view`) it never
suggests a study the site does not offer, suggests the next study the same rule supports, says why,
and leaves ratings alone. Pure: the view and options are the only inputs."""

from __future__ import annotations

import json

from cds_service.engine import evaluate_facts
from cds_service.knowledge.site import SiteConfig, groups, site_view
from tests.engine.builders import (
    HCPCS,
    KNOWLEDGE,
    counter_uuid,
    cpt,
    facts,
    med,
    pama,
    proc,
    psa,
    record,
    request,
    service_request,
)

BCR = facts("prostate-cancer", procedures=(proc("radical-prostatectomy"),), psa=psa(0.1, 0.3, 0.5))
CORD = facts(
    "prostate-cancer", "metastatic-disease", "back-pain", "focal-neuro-deficit",
    medications=(med("leuprolide", "adt", started=540),),
)
PSMA_CODES = {"A9595", "A9593", "A9594", "A9596", "A9800", "A9608"}


def site(*unavailable: str, **kw) -> SiteConfig:
    ids: set[str] = set()
    for entry in unavailable:
        ids |= groups(KNOWLEDGE.catalog).get(entry, {entry})
    return SiteConfig(file="site.yaml", version="t1", site="Test Hospital", unavailable=frozenset(ids), **kw)


def run(config: SiteConfig | None, f, *orders):
    return evaluate_facts(request(*orders), record(), f, site_view(KNOWLEDGE, config), counter_uuid())


def codes(card) -> set[str]:
    return {
        c["code"]
        for s in card.get("suggestions", [])
        for a in s["actions"]
        if a["type"] == "create"
        for c in a["resource"]["code"]["coding"]
    }


def psma_pet():
    return service_request("pet", ("http://www.ama-assn.org/go/cpt", "78815"), (HCPCS, "A9595"))


def test_psma_not_offered_the_low_psa_caution_suggests_the_rules_other_tracer():
    [default] = run(None, BCR, cpt("bs", "78306")).cards
    assert PSMA_CODES & codes(default)
    result = run(site("psma-pet-ct"), BCR, cpt("bs", "78306"))
    [card] = result.cards
    assert not PSMA_CODES & codes(card) and "A9588" in codes(card)  # fluciclovine
    assert "**Not offered at Test Hospital**: PSMA PET/CT skull base to mid-thigh" in card["detail"]
    assert pama(result) == pama(run(None, BCR, cpt("bs", "78306")))  # availability never changes a rating


def test_no_pet_at_all_nothing_is_invented_and_the_card_says_so():
    [card] = run(site("pet"), BCR, cpt("bs", "78306")).cards
    assert "suggestions" not in card or not codes(card)
    assert "the rule supports no other study that is offered here" in card["detail"]
    assert "Consider instead" not in card["detail"]


def test_an_order_for_a_study_not_offered_is_answered_and_offers_the_same_kind():
    assert run(None, BCR, psma_pet()).cards == ()  # quiet: usually appropriate
    result = run(site("psma-pet-ct"), BCR, psma_pet())
    [card] = result.cards
    assert "not offered at Test Hospital" in card["summary"] and card["indicator"] == "info"
    assert "the order is not blocked" in card["detail"] and "A9588" in codes(card)
    assert pama(result) == {"pet": "appropriate"}


def test_an_order_not_offered_with_no_other_tracer_falls_back_to_the_rules_alternatives_in_order():
    [card] = run(site("pet"), BCR, psma_pet()).cards
    offered = codes(card)
    assert offered and not offered & (PSMA_CODES | {"A9588"})
    first = card["suggestions"][0]["label"]
    assert first.startswith("Replace with MRI pelvis")  # the rule's preferred study after PSMA PET/CT


def test_untraced_pet_offers_only_the_tracers_the_site_has():
    untraced = service_request("pet", ("http://www.ama-assn.org/go/cpt", "78815"))
    [card] = run(site("psma-pet-ct"), BCR, untraced).cards
    labels = [s["label"] for s in card["suggestions"]]
    assert labels and not any("PSMA" in label for label in labels)
    assert "Not offered at Test Hospital" in card["detail"]


def test_red_flag_without_mri_here_still_critical_and_says_to_arrange_it_elsewhere():
    [default] = run(None, CORD, cpt("bs", "78306")).cards
    assert default["suggestions"]
    [card] = run(site("modality:mri"), CORD, cpt("bs", "78306")).cards
    assert card["indicator"] == "critical" and "suggestions" not in card
    assert "not offered at Test Hospital: arrange it urgently elsewhere" in card["detail"]


def test_contact_link_and_local_names():
    config = site("psma-pet-ct", contact=("Radiology consult", "https://intra.example.org/rad"),
                  display_names={"fluciclovine-pet-ct": "Axumin scan"})
    [card] = run(config, BCR, cpt("bs", "78306")).cards
    assert card["links"][-1] == {"label": "Radiology consult", "url": "https://intra.example.org/rad",
                                 "type": "absolute"}
    assert card["suggestions"][0]["label"].startswith("Replace with Axumin scan")
    assert "Axumin scan" in card["detail"] and "Fluciclovine (18F)" not in json.dumps(card)


def test_a_downgraded_scenario_shows_its_usually_not_appropriate_verdict_as_info(tmp_path):
    from cds_service.knowledge.site import RuleOverride

    early = facts("breast-cancer", stage_group="IA")
    ct_cap = (cpt("c", "71260"), cpt("ap", "74177"))
    [default] = run(None, early, *ct_cap).cards
    assert default["indicator"] == "warning"
    rule = RuleOverride("breast-early-stage-asymptomatic", False, "info", "committee", "Dr Y")
    result = run(site(rules={rule.rule_id: rule}), early, *ct_cap)
    [card] = result.cards
    assert card["indicator"] == "info" and pama(result) == pama(run(None, early, *ct_cap))


def test_an_order_no_rule_rates_for_a_study_not_offered_gets_a_card_saying_so():
    nothing = facts()
    assert run(None, nothing, psma_pet()).cards == ()
    result = run(site("psma-pet-ct"), nothing, psma_pet())
    [card] = result.cards
    assert card["summary"] == "PSMA PET/CT skull base to mid-thigh is not offered at Test Hospital"
    assert card["indicator"] == "info" and "suggestions" not in card
    assert pama(result) == {"pet": "no-criteria-apply"}


def test_a_red_flag_card_marks_an_order_the_site_does_not_offer():
    [card] = run(site("psma-pet-ct"), CORD, psma_pet()).cards
    assert card["indicator"] == "critical"
    line = "PSMA PET/CT skull base to mid-thigh: no criteria apply (not offered at Test Hospital)"
    assert line in card["detail"]


def test_the_card_names_only_the_studies_it_would_have_offered_first():
    """A usually-not-appropriate order: the card's "consider instead" names two studies. A study not
    offered is named as such only when it would have been one of them."""
    from tests.engine.test_cards import NEOADJ_BACK_PAIN, mri_cap

    [default] = run(None, NEOADJ_BACK_PAIN, *mri_cap()).cards
    assert default["suggestions"][0]["label"].startswith("Replace with Bone scan whole body")
    [card] = run(site("bone-scan-whole-body"), NEOADJ_BACK_PAIN, *mri_cap()).cards
    assert "**Not offered at Test Hospital**: Bone scan whole body (Tc-99m MDP);" in card["detail"]
    assert not any("Bone scan" in s["label"] for s in card["suggestions"])
    [card] = run(site("fdg-pet-ct"), NEOADJ_BACK_PAIN, *mri_cap()).cards  # third: never named
    assert "Not offered" not in card["detail"]
    labels = [s["label"] for s in card["suggestions"]]
    assert labels == [s["label"] for s in default["suggestions"][:2]]

"""Orders the scenario does not rate (engine/coverage.py): parts, contrast protocols, wider studies.

Seed 001 rates CT chest, abdomen and pelvis as one study: "CT Chest, Abdomen, and Pelvis with IV
Contrast: Also rated Usually Appropriate, this study is the workhorse for evaluating visceral (liver,
lungs) and nodal metastases" and "CT without IV Contrast: This is also rated Usually Not Appropriate.
Omitting IV contrast severely limits the ability to detect or characterize visceral metastases,
particularly in the liver". A part never takes "usually appropriate"; it takes "usually not
appropriate" only when the rule says the reason holds for each part (`applies_to_parts`).
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from cds_service.engine import evaluate_facts
from cds_service.engine.coverage import missing_parts
from cds_service.engine.orders import studies_to_rate
from cds_service.engine.rating import rate_study
from cds_service.engine.scenario import select_scenario
from cds_service.knowledge import DEFAULT_CARDS_DIR, KnowledgeError, load_knowledge
from tests.engine.builders import KNOWLEDGE, counter_uuid, cpt, facts, med, record, request

NEOADJ = med("paclitaxel", "chemotherapy", started=60)
BREAST_SUSPECTED = ("breast-cancer", "bone-pain")
PROSTATE_METS = ("prostate-cancer", "metastatic-disease")
ADT = med("leuprolide", "adt", started=540)


def rate(f, *orders):
    studies = studies_to_rate("order-sign", orders, (), KNOWLEDGE.catalog)
    selection = select_scenario(f, KNOWLEDGE)
    return [rate_study(s, selection, f, KNOWLEDGE) for s in studies]


def test_chest_abdomen_and_pelvis_as_three_orders_are_one_ct_cap():
    [r] = rate(facts(*BREAST_SUSPECTED, medications=(NEOADJ,)), cpt("c", "71260"), cpt("a", "74160"),
               cpt("p", "72193"))
    assert r.procedure.id == "ct-cap-contrast" and r.category == "usually-appropriate" and r.coverage is None


def test_abdomen_and_pelvis_orders_are_one_ct_abdomen_pelvis():
    [r] = rate(facts(*PROSTATE_METS, medications=(ADT,)), cpt("a", "74160"), cpt("p", "72193"))
    assert r.procedure.id == "ct-ap-contrast" and r.category == "usually-appropriate"


def test_part_of_a_usually_appropriate_study_gets_no_category_and_names_what_it_misses():
    [r] = rate(facts(*BREAST_SUSPECTED, medications=(NEOADJ,)), cpt("c", "71260"))
    assert (r.procedure.id, r.category, r.pama) == ("ct-chest-contrast", None, "no-criteria-apply")
    cov = r.coverage
    assert cov.kind == "part" and cov.related.id == "ct-cap-contrast" and cov.inherited is None
    assert [p.id for p in cov.add] == ["ct-ap-contrast"]
    assert "misses the abdomen and pelvis" in cov.summary and len(cov.summary) <= 140


def test_non_contrast_part_takes_usually_not_appropriate_only_through_applies_to_parts():
    f = facts(*BREAST_SUSPECTED, medications=(NEOADJ,))
    [r] = rate(f, cpt("c", "71250"))
    assert (r.category, r.pama) == ("usually-not-appropriate", "not-appropriate")
    assert r.coverage.inherited is not None and "no IV contrast" in r.rating.rationale
    assert [a.procedure.id for a in r.replacements][:1] == ["bone-scan-whole-body"]
    # The same rule without `applies_to_parts`: the part is not rated, the card explains it.
    data = yaml.safe_load((DEFAULT_CARDS_DIR / "scenarios" / "breast-neoadjuvant-suspected-metastases.yaml")
                          .read_text())
    del data["variants"][0]["ratings"]["ct-cap-noncontrast"]["applies_to_parts"]
    knowledge = _knowledge_with("breast-neoadjuvant-suspected-metastases", data)
    studies = studies_to_rate("order-sign", (cpt("c", "71250"),), (), knowledge.catalog)
    [r] = [rate_study(s, select_scenario(f, knowledge), f, knowledge) for s in studies]
    assert (r.category, r.pama, r.coverage.kind) == (None, "no-criteria-apply", "part")
    assert "usually not appropriate" in r.coverage.note


def _knowledge_with(scenario_id, data):
    root = Path(tempfile.mkdtemp()) / "cards"
    shutil.copytree(DEFAULT_CARDS_DIR, root)
    (root / "scenarios" / f"{scenario_id}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return load_knowledge(root)


def test_applies_to_parts_is_refused_on_a_usually_appropriate_rating():
    data = yaml.safe_load((DEFAULT_CARDS_DIR / "scenarios" / "breast-neoadjuvant-suspected-metastases.yaml")
                          .read_text())
    data = copy.deepcopy(data)
    data["variants"][0]["ratings"]["ct-cap-contrast"]["applies_to_parts"] = "a part is as good as the whole"
    with pytest.raises(KnowledgeError, match="applies_to_parts needs usually-not-appropriate"):
        _knowledge_with("breast-neoadjuvant-suspected-metastases", data)


def test_other_contrast_protocol_of_a_rated_study_is_explained_not_rated():
    [r] = rate(facts(*PROSTATE_METS, medications=(ADT,)), cpt("c", "71250"))
    assert (r.category, r.pama) == (None, "no-criteria-apply")
    assert r.coverage.kind == "contrast" and r.coverage.related.id == "ct-cap-contrast"
    assert "has no IV contrast" in r.coverage.note and "abdomen and pelvis" in r.coverage.note


def test_missing_parts_walks_nested_combinations():
    """The wider case (CT C/A/P where only CT A/P is rated) is the e2e case single-part-prostate-bcr-*."""
    catalog = KNOWLEDGE.catalog
    chest = missing_parts(catalog, "ct-cap-contrast", "ct-ap-contrast")
    assert [p.id for p in chest] == ["ct-chest-contrast"]
    assert [p.id for p in missing_parts(catalog, "ct-cap-contrast", "ct-abdomen-contrast")] == [
        "ct-chest-contrast", "ct-pelvis-contrast"]
    assert missing_parts(catalog, "bone-scan-whole-body", "bone-scan-limited") is None


def test_part_card_is_info_and_suggests_adding_the_missing_part():
    f = facts(*BREAST_SUSPECTED, medications=(NEOADJ,))
    result = evaluate_facts(request(cpt("c", "71260")), record(), f, KNOWLEDGE, counter_uuid())
    [card] = result.cards
    assert card["indicator"] == "info" and len(card["summary"]) <= 140
    created = [a["resource"]["code"]["coding"][0]["code"] for s in card["suggestions"] for a in s["actions"]
               if a["type"] == "create"]
    assert created == ["74177"]
    [action] = result.system_actions
    assert action["resource"]["id"] == "c"


def test_unrated_study_in_a_recognised_scenario_gets_a_card():
    f = facts(*BREAST_SUSPECTED, medications=(NEOADJ,))
    result = evaluate_facts(request(cpt("x", "71046")), record(), f, KNOWLEDGE, counter_uuid())
    [card] = result.cards
    assert "not rated" in card["summary"] and card["indicator"] == "info"

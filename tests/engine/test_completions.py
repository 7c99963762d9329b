"""Reasoning with partial facts (issue 9 point 4, engine/completions.py).

"New prostate cancer, PSA 5.2, grade group 1, no T category: the clinically useful answer is 'a bone
scan is not indicated unless clinical T3 or higher - record the T category', i.e. rate what the
known facts already decide and ask only for the fact that could change it" (issue 9). Risk groups as
in knowledge/risk.py (clinical-knowledge.md 1.C): low = T1-T2a, GG1, PSA < 10; high = T3a, GG4-5 or
PSA > 20; very high = T3b-T4. The deciding value comes from the rules, e.g. the ACR 2017 bone-scan
rating (clinical-knowledge.md 1.C, J Nucl Med 2020;61(3):405 Table 1): '"Usually appropriate" for
high risk (Gleason >= 8 or PSA > 20 or T3-T4)'; seed 002: "If your cancer is unfavorable-
intermediate, high, or very-high risk ... your team may use this scan to check for spread".
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from cds_service.engine.completions import (
    GRADE_GROUP,
    PSA,
    PSA_BANDS,
    PSA_TREND,
    T_CATEGORY,
    T_SUBCATEGORY,
    complete_ratings,
    completions,
    partial_facts,
)
from cds_service.engine.orders import studies_to_rate
from cds_service.engine.rating import rate_study
from cds_service.engine.scenario import INSUFFICIENT_DATA, select_scenario
from cds_service.knowledge.risk import assess_risk
from cds_service.model import Measurement
from tests.engine.builders import CPT, KNOWLEDGE, TODAY, cpt, facts, ours, pama, proc, psa, record, run

BONE_SCAN = "78306"
CT_AP = "74177"
PSMA_PET = ((CPT, "78815"), ("https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "A9595"))


def prostate(**kw):
    return facts("prostate-cancer", **kw)


def ratings(f, *codes: str):
    orders = [cpt(f"o{i}", code) for i, code in enumerate(codes)]
    studies = studies_to_rate("order-sign", tuple(orders), (), KNOWLEDGE.catalog)
    selection = select_scenario(f, KNOWLEDGE)
    rated = [rate_study(s, selection, f, KNOWLEDGE) for s in studies]
    return complete_ratings(rated, selection, f, KNOWLEDGE)


# --- the domains -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "band, values",
    [(0, (0.0, 4.0, 9.99)), (1, (10.0, 12.5, 20.0)), (2, (20.01, 50.0, 400.0))],
)
def test_each_psa_band_is_one_risk_answer_up_to_its_edges(band, values):
    """One PSA stands for its band: every grade group and T category gives the same risk group
    at the band's edges as at the representative value."""
    for gg, t, value in itertools.product(range(1, 6), T_CATEGORY.labels, values):
        def group(v, gg=gg, t=t):
            latest = (Measurement(v, "ng/mL", TODAY),)
            return assess_risk(prostate(grade_group=gg, tnm={"T": t}, psa=latest)).group

        assert group(value) == group(PSA_BANDS[band]), (gg, t, value)


def test_value_sets_are_said_as_clinicians_say_them():
    assert T_CATEGORY.describe([4, 5, 6]) == "T3 or higher"
    assert T_CATEGORY.describe([0, 1, 2, 3]) == "T1-T2"
    assert T_CATEGORY.describe([2, 3]) == "T2b-T2c"
    assert T_CATEGORY.describe([0, 5]) == "T1 or T3b"
    assert T_SUBCATEGORY.describe([1, 2]) == "T2b-T2c"  # never "or higher" inside T2
    assert GRADE_GROUP.describe([3, 4]) == "grade group 4-5"
    assert PSA.describe([2]) == "PSA > 20 ng/mL"
    assert PSA.describe([0, 1]) == "PSA up to 20 ng/mL"
    assert PSA_TREND.describe([0, 1]) == "PSA rising"


def test_only_the_missing_inputs_are_enumerated():
    f = prostate(grade_group=1, psa=psa(4.8, 5.2))
    part = partial_facts(select_scenario(f, KNOWLEDGE), f)
    assert part is not None
    assert [u.fact.id for u in part.unknowns] == ["t-category"]
    worlds = completions(part, f)
    assert worlds is not None and len(worlds) == len(T_CATEGORY.labels)
    # a completion never touches a known fact
    assert {w.grade_group for _, w in worlds} == {1} and {w.psa for _, w in worlds} == {f.psa}


# --- one fact could change it: ask for it, naming the value -------------------------------------


def test_t_category_unknown_asks_only_for_it_and_names_t3():
    f = prostate(grade_group=1, psa=psa(4.8, 5.2))
    [bone] = ratings(f, BONE_SCAN)
    assert bone.scenario_id == INSUFFICIENT_DATA and bone.pama is None  # never rated on a guess
    question = bone.open_question
    assert question is not None and question.scenario.id == "prostate-initial-staging"
    assert [u.id for u in question.ask] == ["t-category"]  # not grade group, not PSA
    assert question.outcomes == (
        ("usually-not-appropriate", "T1-T2", True),
        ("usually-appropriate", "T3 or higher", True),
    )


def test_t_category_unknown_card_asks_for_the_t_category_and_sends_no_rating():
    result = run(prostate(grade_group=1, psa=psa(4.8, 5.2)), cpt("o1", BONE_SCAN))
    assert result.system_actions == ()  # no rating: PAMA forbids guessing
    [card] = result.cards
    assert card["indicator"] == "info"
    assert "usually appropriate if T3 or higher" in card["summary"]
    assert "T category" in card["summary"] and "grade group" not in card["summary"]
    assert len(card["summary"]) <= 140
    assert card["extension"] == {"missingFacts": ["t-category"]}
    assert "grade group 1" in card["detail"] and "PSA 5.2" in card["detail"]
    assert any(link["url"].endswith("/rules/prostate-initial-staging") for link in card["links"])


def test_every_staging_study_in_the_example_is_undecided():
    """GG1 + PSA 5.2 + unknown T: low (T1-T2a), favourable intermediate (T2b-c), high (T3a), very
    high (T3b-T4). Low and favourable intermediate share a variant, high and very high another: no
    staging study the scenario rates gets one rating over all of them."""
    f = prostate(grade_group=1, psa=psa(4.8, 5.2))
    rated = ratings(f, BONE_SCAN, CT_AP)
    assert all(r.pama is None and r.open_question for r in rated)
    ct = rated[1].open_question
    assert ct is not None and ct.outcomes[1] == ("no-criteria-apply", "T3 or higher", True)


def test_two_unknown_facts_each_deciding_value_is_named():
    f = prostate(psa=psa(5.2))  # grade group and T category unknown
    [bone] = ratings(f, BONE_SCAN)
    question = bone.open_question
    assert question is not None
    assert {u.id for u in question.ask} == {"grade-group", "t-category"}
    outcomes = {o: (c, exact) for o, c, exact in question.outcomes}
    assert outcomes["usually-appropriate"] == ("grade group 4-5 or T3 or higher", True)


def test_an_unknown_that_cannot_change_the_rating_is_not_asked_for():
    # GG4 alone makes the risk group high: assess_risk decides, nothing is enumerated or asked
    [bone] = ratings(prostate(grade_group=4), BONE_SCAN)
    assert bone.open_question is None and bone.category == "usually-appropriate"
    assert bone.unknown_facts == ()


# --- the known facts decide: rate, and say which fact is unknown ---------------------------------


def test_t2_without_sub_category_is_rated_when_every_sub_category_agrees():
    f = prostate(grade_group=1, psa=psa(4.8, 5.2), tnm={"T": "cT2"})
    [bone] = ratings(f, BONE_SCAN)
    assert bone.category == "usually-not-appropriate" and bone.pama == "not-appropriate"
    assert [u.id for u in bone.unknown_facts] == ["t-subcategory"]
    assert bone.match is not None and bone.match.scenario.id == "prostate-initial-staging"
    # the card's facts are the record's, never a filled-in value
    assert not any("T2a" in line or "T2b" in line for line in bone.match.evidence)


def test_rated_with_unknown_fact_is_machine_readable_and_on_the_card():
    result = run(prostate(grade_group=1, psa=psa(4.8, 5.2), tnm={"T": "cT2"}), cpt("o1", BONE_SCAN))
    assert pama(result) == {"o1": "not-appropriate"}
    [action] = result.system_actions
    ext = next(e for e in action["resource"]["extension"] if e["url"].endswith("imaging-appropriateness"))
    assert {"url": "unknownFact", "valueCode": "t-subcategory"} in ext["extension"]
    assert ours(action)["translatedCategory"] == "usually-not-appropriate"  # AUA statement 6, translated
    [card] = result.cards
    assert "Rated with the T2 sub-category unknown" in card["detail"]


def test_t2_is_asked_for_when_the_sub_category_changes_the_rating():
    # GG2: T2a favourable (usually not appropriate), T2b-c unfavourable intermediate (may be)
    [bone] = ratings(prostate(grade_group=2, psa=psa(5.2), tnm={"T": "T2"}), BONE_SCAN)
    assert bone.pama is None and bone.open_question is not None
    assert [u.id for u in bone.open_question.ask] == ["t-subcategory"]


def test_a_known_rating_is_left_alone():
    f = prostate(grade_group=1, psa=psa(5.2), tnm={"T": "cT1c"})
    selection = select_scenario(f, KNOWLEDGE)
    [study] = studies_to_rate("order-sign", (cpt("o1", BONE_SCAN),), (), KNOWLEDGE.catalog)
    rated = [rate_study(study, selection, f, KNOWLEDGE)]
    assert complete_ratings(rated, selection, f, KNOWLEDGE) == rated


# --- nothing known: the insufficient-data card, unchanged ---------------------------------------


def test_nothing_known_keeps_the_insufficient_data_card():
    f = prostate()  # no grade group, PSA or T category
    [bone] = ratings(f, BONE_SCAN)
    assert bone.scenario_id == INSUFFICIENT_DATA and bone.open_question is None
    [card] = run(f, cpt("o1", BONE_SCAN)).cards
    assert card["summary"].startswith("No rating: record is missing")
    assert "extension" not in card


def test_data_that_could_not_be_retrieved_is_never_completed():
    f = prostate(grade_group=1, psa=psa(5.2))
    result = run(f, cpt("o1", BONE_SCAN), rec=record(incomplete=("observations",)))
    assert result.system_actions == ()
    assert all("missingFacts" not in (c.get("extension") or {}) for c in result.cards)


# --- PSA trend after local therapy --------------------------------------------------------------


def test_single_psa_after_prostatectomy_asks_for_the_trend():
    f = prostate(procedures=(proc("radical-prostatectomy"),), psa=psa(0.5))
    [pet] = ratings(f, BONE_SCAN)
    question = pet.open_question
    assert question is not None and question.scenario.id == "prostate-biochemical-recurrence"
    assert [u.id for u in question.ask] == ["psa-trend"]
    assert dict((o, c) for o, c, _ in question.outcomes) == {
        "may-be-appropriate": "PSA rising",
        "no-criteria-apply": "PSA not rising",
    }


@pytest.mark.parametrize("latest, labels", [(1.0, 2), (2.9, 3)])
def test_the_trend_domain_holds_only_possible_trends(latest, labels):
    """A rise of 2 ng/mL above the nadir (Phoenix) needs a latest PSA of 2 or more."""
    f = prostate(procedures=(proc("radiotherapy"),), psa=psa(latest))
    part = partial_facts(select_scenario(f, KNOWLEDGE), f)
    assert part is not None
    [trend] = part.unknowns
    assert len(trend.labels) == labels
    for i in range(labels):
        earlier, last = trend.fill(f, i).psa
        assert earlier.value >= 0 and last.value == latest
        rise = last.value - earlier.value
        label = trend.labels[i]
        assert (rise >= 2) == ("2 ng/mL or more" in label) and (rise > 0) == ("not" not in label)


def test_no_psa_at_all_after_prostatectomy_is_the_insufficient_data_card():
    [bone] = ratings(prostate(procedures=(proc("radical-prostatectomy"),)), BONE_SCAN)
    assert bone.scenario_id == INSUFFICIENT_DATA and bone.open_question is None


# --- variance: the same facts, however the record says them -------------------------------------


@pytest.mark.parametrize("t", ["cT2", "T2", "t2", "pT2", "cT2 N0 M0"])
def test_t2_written_any_way_gives_the_same_outcome(t):
    reference = run(prostate(grade_group=1, psa=psa(5.2), tnm={"T": "cT2"}), cpt("o1", BONE_SCAN))
    variant = run(prostate(grade_group=1, psa=psa(5.2), tnm={"T": t}), cpt("o1", BONE_SCAN))
    assert pama(variant) == pama(reference) == {"o1": "not-appropriate"}
    assert [c["summary"] for c in variant.cards] == [c["summary"] for c in reference.cards]


def test_psa_history_does_not_matter_only_the_latest_value():
    one = run(prostate(grade_group=1, psa=psa(5.2)), cpt("o1", BONE_SCAN))
    many = run(prostate(grade_group=1, psa=psa(3.1, 4.4, 5.2)), cpt("o1", BONE_SCAN))
    assert [c["summary"] for c in one.cards] == [c["summary"] for c in many.cards]
    assert [c["extension"] for c in one.cards] == [c["extension"] for c in many.cards]


def test_psma_pet_with_tracer_is_reasoned_like_the_bone_scan():
    order = {**cpt("o1", "78815"), "code": {"coding": [{"system": s, "code": c} for s, c in PSMA_PET]}}
    result = run(prostate(grade_group=1, psa=psa(5.2)), order)
    [card] = result.cards
    assert card["extension"] == {"missingFacts": ["t-category"]} and result.system_actions == ()
    assert "T3 or higher" in card["summary"]


def test_completion_is_pure():
    f = prostate(grade_group=1, psa=psa(5.2))
    first = ratings(f, BONE_SCAN)
    assert ratings(replace(f), BONE_SCAN) == first

"""Symptoms and exam findings recorded as Observations count like the same coded Condition."""

from __future__ import annotations

import pytest

from cds_service.facts import extract_facts

from .conftest import LNC, SCT, cc, condition, observation, record

INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
NEURO_FINDING = (SCT, "102957003")  # a generic "neurological finding" question code: not itself a symptom
WEAKNESS = (SCT, "102568007")  # Paresis of lower extremity (finding): focal-neuro-deficit


def facts_of(valuesets, *resources):
    return extract_facts(record(*resources), valuesets)


@pytest.mark.parametrize(
    "value",
    [
        {},  # the code names the symptom; no value
        {"valueBoolean": True},
        {"valueCodeableConcept": cc((SCT, "373066001"))},  # Yes
        {"valueCodeableConcept": cc((LNC, "LA9633-4"))},  # Present
    ],
)
def test_symptom_as_observation_code_counts(valuesets, value):
    obs = observation((SCT, "279039007"), **value)  # low back pain
    facts = facts_of(valuesets, obs)
    assert facts.has("back-pain")
    [evidence] = facts.concepts["back-pain"]
    assert evidence.source == f"Observation/{obs['id']}"
    assert "(observation)" in evidence.text and evidence.date is not None


def test_symptom_as_the_value_of_a_generic_finding_counts(valuesets):
    obs = observation(NEURO_FINDING, valueCodeableConcept=cc(WEAKNESS, text="Paresis of lower extremity"))
    facts = facts_of(valuesets, obs)
    assert facts.has("focal-neuro-deficit")
    assert "Paresis of lower extremity" in facts.concepts["focal-neuro-deficit"][0].text


@pytest.mark.parametrize(
    "value",
    [
        {"valueBoolean": False},
        {"valueCodeableConcept": cc((SCT, "373067005"))},  # No
        {"valueCodeableConcept": cc((LNC, "LA9634-2"))},  # Absent
        {"valueCodeableConcept": cc((SCT, "260385009"))},  # Negative
        {"interpretation": [cc((INTERP, "NEG"))]},
        {"interpretation": [cc((INTERP, "N"))]},
    ],
)
def test_absent_finding_does_not_count(valuesets, value):
    facts = facts_of(valuesets, observation((SCT, "25064002"), **value))  # headache
    assert not facts.has("headache")
    assert not facts.data_issues


def test_absent_interpretation_on_a_finding_value_does_not_count(valuesets):
    obs = observation(NEURO_FINDING, valueCodeableConcept=cc(WEAKNESS), interpretation=[cc((INTERP, "ND"))])
    assert not facts_of(valuesets, obs).has("focal-neuro-deficit")


@pytest.mark.parametrize(
    ("status", "counts"),
    [("final", True), ("amended", True), ("corrected", True), ("preliminary", True),
     ("registered", False), ("cancelled", False), ("entered-in-error", False), ("unknown", False)],
)
def test_only_result_statuses_count(valuesets, status, counts):
    facts = facts_of(valuesets, observation((SCT, "91175000"), status=status))  # seizure
    assert facts.has("seizure") is counts


def test_unknown_answer_on_a_symptom_observation_is_reported_not_guessed(valuesets):
    obs = observation((SCT, "12584003"), valueCodeableConcept=cc((SCT, "261665006")))  # bone pain: Unknown
    facts = facts_of(valuesets, obs)
    assert not facts.has("bone-pain")
    assert any("bone-pain" in i and "answer code not recognised" in i for i in facts.data_issues)


def test_contradictory_answer_codings_are_unreadable(valuesets):
    obs = observation((SCT, "12584003"), valueCodeableConcept=cc((SCT, "373066001"), (SCT, "373067005")))
    facts = facts_of(valuesets, obs)
    assert not facts.has("bone-pain") and facts.data_issues


def test_observation_and_condition_give_the_same_concepts(valuesets):
    # Re-encoding: the same facts as Conditions, as symptom Observations, as finding values.
    cancer = condition((SCT, "399068003"))
    as_conditions = facts_of(valuesets, cancer, condition((SCT, "279039007")), condition(WEAKNESS))
    as_observations = facts_of(
        valuesets, cancer, observation((SCT, "279039007")), observation(WEAKNESS, valueBoolean=True)
    )
    as_values = facts_of(
        valuesets,
        cancer,
        observation((LNC, "10154-3"), valueCodeableConcept=cc((SCT, "279039007"))),  # chief complaint
        observation(NEURO_FINDING, valueCodeableConcept=cc(WEAKNESS)),
    )
    for facts in (as_conditions, as_observations, as_values):
        assert set(facts.concepts) == {"prostate-cancer", "back-pain", "focal-neuro-deficit"}


def test_invalid_symptom_observation_is_skipped_as_unreadable(valuesets):
    obs = observation((SCT, "279039007"), effectiveDateTime="yesterday")
    facts = facts_of(valuesets, obs)
    assert not facts.has("back-pain")
    assert any("could not be read" in i for i in facts.data_issues)


def test_lab_observations_are_not_read_as_symptoms(valuesets):
    # A PSA whose coded value happens to carry a symptom code is still only a PSA.
    obs = observation((LNC, "2857-1"), valueCodeableConcept=cc((SCT, "279039007")))
    assert not facts_of(valuesets, obs).has("back-pain")

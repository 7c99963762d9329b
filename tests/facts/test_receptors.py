from cds_service.facts import extract_facts
from tests.facts.conftest import ICD, LNC, SCT, cc, condition, observation, record

POS_LNC, NEG_LNC = (LNC, "LA6576-8"), (LNC, "LA6577-6")
POS_SCT, NEG_SCT = (SCT, "10828004"), (SCT, "260385009")


def receptor(code, answer, when="2026-05-01"):
    return observation((LNC, code), when=when, valueCodeableConcept=cc(answer))


def test_loinc_and_snomed_answers(valuesets):
    facts = extract_facts(
        record(receptor("85337-4", POS_LNC), receptor("16113-3", NEG_SCT), receptor("48676-1", POS_SCT)),
        valuesets,
    )
    assert facts.receptors == {"er": "positive", "pr": "negative", "her2": "positive"}
    assert "triple-negative" not in facts.concepts


def test_all_negative_makes_triple_negative_with_evidence(valuesets):
    facts = extract_facts(
        record(receptor("85337-4", NEG_LNC), receptor("85339-0", NEG_LNC), receptor("85319-2", NEG_SCT)),
        valuesets,
    )
    assert facts.receptors == {"er": "negative", "pr": "negative", "her2": "negative"}
    assert len(facts.concepts["triple-negative"]) == 3


def test_triple_negative_code_is_a_concept_on_its_own(valuesets):
    facts = extract_facts(record(condition((SCT, "706970001"))), valuesets)
    assert "triple-negative" in facts.concepts


def test_z17_conditions_give_receptor_status(valuesets):
    facts = extract_facts(record(condition((ICD, "Z17.421"))), valuesets)
    assert facts.receptors == {"er": "negative", "pr": "negative", "her2": "negative"}
    assert "triple-negative" in facts.concepts


def test_same_day_contradiction_goes_to_data_issues(valuesets):
    facts = extract_facts(record(receptor("85337-4", POS_LNC), receptor("16112-5", NEG_LNC)), valuesets)
    assert "er" not in facts.receptors
    assert any("ER is both positive and negative" in i for i in facts.data_issues)


def test_latest_result_wins_across_dates(valuesets):
    facts = extract_facts(
        record(
            receptor("85319-2", NEG_LNC, when="2024-01-01"), receptor("85319-2", POS_LNC, when="2026-01-01")
        ),
        valuesets,
    )
    assert facts.receptors["her2"] == "positive"


def test_equivocal_or_uncoded_answers_are_not_read(valuesets):
    equivocal = observation((LNC, "85319-2"), valueCodeableConcept={"text": "Equivocal (2+)"})
    facts = extract_facts(record(equivocal), valuesets)
    assert facts.receptors == {}


def test_coded_triple_negative_with_positive_receptor_is_flagged(valuesets):
    facts = extract_facts(record(condition((SCT, "706970001")), receptor("85337-4", POS_LNC)), valuesets)
    assert any("triple-negative is coded" in i for i in facts.data_issues)

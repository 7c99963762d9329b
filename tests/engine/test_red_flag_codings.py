"""Red flags from charts coded the way different EHRs code the same facts.

FHIR Conditions -> facts stage -> scenario selection. Each clinical picture is re-encoded (ICD-10-CM
vs SNOMED CT vs both, histology vs generic cancer codes, history codes) and must raise the same red
flag, and only that one.
"""

from __future__ import annotations

import itertools

import pytest

from cds_service.engine.scenario import select_scenario
from cds_service.facts import extract_facts
from tests.engine.builders import KNOWLEDGE
from tests.facts.conftest import ICD, SCT, condition, record

CORD = "red-flag-cord-compression"
BRAIN = "red-flag-new-neuro-symptoms"

METASTATIC_PROSTATE = {
    "icd": [(ICD, "C61"), (ICD, "C79.51")],
    "snomed-generic": [(SCT, "399068003"), (SCT, "94222008")],
    "snomed-adenocarcinoma": [(SCT, "399490008"), (SCT, "94602001")],
    "snomed-crpc": [(SCT, "427492003"), (SCT, "94222008")],
    "history-with-mets": [(ICD, "Z85.46"), (ICD, "C79.51")],
    "both-systems": [((ICD, "C61"), (SCT, "399490008")), ((ICD, "C79.51"), (SCT, "94222008"))],
}
BREAST = {
    "icd": [(ICD, "C50.912")],
    "snomed-generic": [(SCT, "254837009")],
    "snomed-ductal": [(SCT, "408643008")],
    "snomed-ductal-left": [(SCT, "1080101000119105")],
    "snomed-lobular": [(SCT, "278054005")],
    "history-icd": [(ICD, "Z85.3")],
    "history-snomed": [(SCT, "429087003")],
}
BACK_PAIN = {
    "low-back-pain-icd": (ICD, "M54.50"),
    "lumbago-with-sciatica-icd": (ICD, "M54.41"),
    "sciatica-icd": (ICD, "M54.31"),
    "thoracic-icd": (ICD, "M54.6"),
    "low-back-pain-snomed": (SCT, "279039007"),
    "sciatica-snomed": (SCT, "23056005"),
    "backache-snomed": (SCT, "161891005"),
}
NEURO_SIGN = {
    "paresis-lower-limb-snomed": (SCT, "102568007"),
    "muscle-weakness-snomed": (SCT, "26544005"),
    "muscle-weakness-generalized-icd": (ICD, "M62.81"),
    "weakness-icd": (ICD, "R53.1"),
    "limb-weakness-nos-icd": (ICD, "R29.898"),
    "urinary-retention-icd": (ICD, "R33.9"),
    "urinary-retention-snomed": (SCT, "267064002"),
    "urinary-incontinence-icd": (ICD, "R32"),
    "fecal-incontinence-icd": (ICD, "R15.9"),
    "neurogenic-bladder-icd": (ICD, "N31.9"),
    "paraplegia-icd": (ICD, "G82.20"),
}
GENERALISED_WEAKNESS = {
    "M62.81": (ICD, "M62.81"),
    "R53.1": (ICD, "R53.1"),
    "R29.898": (ICD, "R29.898"),
    "26544005": (SCT, "26544005"),
    "13791008-asthenia": (SCT, "13791008"),
}


def _conditions(codings) -> list[dict]:
    # an entry is one coding or a tuple of codings of one CodeableConcept (synonyms)
    out = []
    for entry in codings:
        out.append(condition(*entry) if isinstance(entry[0], tuple) else condition(entry))
    return out


def red_flags(*resources) -> list[str]:
    facts = extract_facts(record(*resources), KNOWLEDGE.valuesets)
    return [m.scenario.id for m in select_scenario(facts, KNOWLEDGE).red_flags]


@pytest.mark.parametrize(("cancer", "pain"), list(itertools.product(METASTATIC_PROSTATE, BACK_PAIN)))
def test_back_pain_however_coded_with_leg_paresis_is_cord_compression(cancer, pain):
    chart = [*_conditions(METASTATIC_PROSTATE[cancer]), condition(BACK_PAIN[pain])]
    assert red_flags(*chart, condition((SCT, "102568007"))) == [CORD]


@pytest.mark.parametrize(("cancer", "sign"), list(itertools.product(METASTATIC_PROSTATE, NEURO_SIGN)))
def test_low_back_pain_with_any_neuro_sign_however_coded_is_cord_compression(cancer, sign):
    chart = [*_conditions(METASTATIC_PROSTATE[cancer]), condition((SCT, "279039007"))]
    assert red_flags(*chart, condition(NEURO_SIGN[sign])) == [CORD]


def test_sciatica_and_leg_weakness_in_metastatic_prostate_cancer_is_cord_not_brain():
    chart = [condition((ICD, "C61")), condition((ICD, "C79.51")), condition((ICD, "M54.41"))]
    for weakness in [(SCT, "102568007"), (ICD, "R29.898"), (ICD, "M62.81")]:
        assert red_flags(*chart, condition(weakness)) == [CORD]


@pytest.mark.parametrize("coding", [(SCT, "71286001"), (ICD, "G95.20"), (ICD, "G83.4")])
def test_coded_cord_compression_is_cord_compression(coding):
    assert red_flags(condition((SCT, "408643008")), condition(coding)) == [CORD]


@pytest.mark.parametrize("cancer", sorted(BREAST))
def test_headache_and_seizure_in_breast_cancer_however_coded_is_the_brain_red_flag(cancer):
    chart = [*_conditions(BREAST[cancer]), condition((SCT, "25064002")), condition((ICD, "R56.9"))]
    assert red_flags(*chart) == [BRAIN]


@pytest.mark.parametrize("cancer", sorted(BREAST))
def test_back_pain_with_sphincter_dysfunction_in_breast_cancer_however_coded_is_cord(cancer):
    chart = [*_conditions(BREAST[cancer]), condition((ICD, "M54.50")), condition((SCT, "267064002"))]
    assert red_flags(*chart) == [CORD]


@pytest.mark.parametrize("weakness", sorted(GENERALISED_WEAKNESS))
def test_generalised_weakness_alone_is_no_red_flag(weakness):
    chart = [condition((ICD, "C50.912")), condition(GENERALISED_WEAKNESS[weakness])]
    assert red_flags(*chart) == []


def test_a_focal_deficit_without_back_pain_still_suggests_brain_metastases():
    assert red_flags(condition((ICD, "C50.912")), condition((SCT, "102568007"))) == [BRAIN]


@pytest.mark.parametrize("pain", sorted(BACK_PAIN))
def test_back_pain_explains_a_focal_deficit_however_coded(pain):
    chart = [condition((SCT, "408643008")), condition(BACK_PAIN[pain]), condition((SCT, "102568007"))]
    assert BRAIN not in red_flags(*chart)


def test_no_cancer_no_red_flag():
    chart = [condition((ICD, "M54.41")), condition((SCT, "102568007")), condition((SCT, "25064002"))]
    assert red_flags(*chart) == []


def test_family_history_is_not_a_known_cancer():
    chart = [condition((SCT, "429740004")), condition((SCT, "25064002")), condition((ICD, "R56.9"))]
    assert red_flags(*chart) == []

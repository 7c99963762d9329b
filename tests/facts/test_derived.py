"""History of cancer + evidence of active disease -> active cancer (cds_service/facts/derived.py).

Charts are built as FHIR JSON and read by the whole facts stage, so the value sets, the medication
catalog and the derivation are exercised together; each case is re-encoded (ICD-10-CM vs SNOMED CT
history codes) and must give the same concepts.
"""

from __future__ import annotations

from datetime import date

import pytest

from cds_service.facts import extract_facts
from cds_service.facts.derived import derive_active_cancer
from cds_service.model import Evidence, Facts, MedicationFact
from tests.facts.conftest import ICD, LNC, RXN, SCT, cc, condition, observation, quantity, record

PROSTATE_HISTORY = {"icd": (ICD, "Z85.46"), "snomed": (SCT, "428262008")}
BREAST_HISTORY = {"icd": (ICD, "Z85.3"), "snomed": (SCT, "429087003")}
BONE_METS = {"icd": (ICD, "C79.51"), "snomed": (SCT, "94222008"), "vertebral": (SCT, "94602001")}


def med_request(code: str, authored: str = "2026-09-01", status: str = "active") -> dict:
    return {
        "resourceType": "MedicationRequest",
        "id": f"m{code}",
        "status": status,
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "authoredOn": authored,
        "medicationCodeableConcept": cc((RXN, code)),
    }


def psa(value: float, when: str) -> dict:
    return observation((LNC, "2857-1"), when=when, valueQuantity=quantity(value, "ng/mL", "ng/mL"))


def concepts(valuesets, *resources) -> Facts:
    return extract_facts(record(*resources), valuesets)


@pytest.mark.parametrize("coding", PROSTATE_HISTORY.values(), ids=PROSTATE_HISTORY)
def test_history_code_alone_stays_history(valuesets, coding):
    facts = concepts(valuesets, condition(coding))
    assert "history-of-prostate-cancer" in facts.concepts
    assert "prostate-cancer" not in facts.concepts


@pytest.mark.parametrize("history", PROSTATE_HISTORY.values(), ids=PROSTATE_HISTORY)
@pytest.mark.parametrize("mets", BONE_METS.values(), ids=BONE_METS)
def test_history_with_metastases_is_active_prostate_cancer(valuesets, history, mets):
    facts = concepts(valuesets, condition(history, onset="2019-03-01"), condition(mets, onset="2026-10-02"))
    assert {"prostate-cancer", "history-of-prostate-cancer", "metastatic-disease", "metastasis-bone"} <= set(
        facts.concepts
    )
    (evidence,) = facts.concepts["prostate-cancer"]
    assert "counted as active prostate cancer" in evidence.text
    assert mets[1] in evidence.text and evidence.text.count(mets[1]) == 1  # says why, once
    assert evidence.date == date(2026, 10, 2)  # dated by its most recent support


@pytest.mark.parametrize("history", PROSTATE_HISTORY.values(), ids=PROSTATE_HISTORY)
def test_history_with_current_adt_is_active_prostate_cancer(valuesets, history):
    facts = concepts(valuesets, condition(history), med_request("752899"))  # leuprolide SCD
    (evidence,) = facts.concepts["prostate-cancer"]
    assert "current leuprolide (adt)" in evidence.text


def test_history_with_stopped_adt_long_ago_stays_history(valuesets):
    old = med_request("752899", authored="2024-01-01", status="completed")
    assert "prostate-cancer" not in concepts(valuesets, condition(PROSTATE_HISTORY["icd"]), old).concepts


def test_history_with_rising_psa_is_active_prostate_cancer(valuesets):
    facts = concepts(
        valuesets, condition(PROSTATE_HISTORY["icd"]), psa(0.2, "2026-05-01"), psa(0.6, "2026-10-01")
    )
    (evidence,) = facts.concepts["prostate-cancer"]
    assert "PSA rising: 0.2 ng/mL on 2026-05-01 then 0.6 ng/mL on 2026-10-01" in evidence.text
    falling = concepts(
        valuesets, condition(PROSTATE_HISTORY["icd"]), psa(0.6, "2026-05-01"), psa(0.1, "2026-10-01")
    )
    assert "prostate-cancer" not in falling.concepts


def test_coded_rising_psa_after_treatment_counts(valuesets):
    facts = concepts(valuesets, condition(PROSTATE_HISTORY["snomed"]), condition((ICD, "R97.21")))
    assert "prostate-cancer" in facts.concepts


@pytest.mark.parametrize("history", BREAST_HISTORY.values(), ids=BREAST_HISTORY)
def test_breast_history_with_endocrine_therapy_or_metastases_is_active(valuesets, history):
    on_tamoxifen = concepts(valuesets, condition(history), med_request("10324"))
    assert "breast-cancer" in on_tamoxifen.concepts
    with_mets = concepts(valuesets, condition(history), condition(BONE_METS["snomed"]))
    assert "breast-cancer" in with_mets.concepts
    assert "breast-cancer" not in concepts(valuesets, condition(history)).concepts


def test_therapy_of_another_cancer_does_not_activate_a_history(valuesets):
    # ADT says prostate, not breast; chemotherapy says which cancer is active only when no other can own it
    breast_on_adt = concepts(valuesets, condition(BREAST_HISTORY["icd"]), med_request("752899"))
    assert "breast-cancer" not in breast_on_adt.concepts
    with_lung_cancer = concepts(
        valuesets, condition(PROSTATE_HISTORY["icd"]), condition((ICD, "C34.90")), med_request("72962")
    )
    assert "prostate-cancer" not in with_lung_cancer.concepts
    two_histories = concepts(
        valuesets, condition(PROSTATE_HISTORY["icd"]), condition(BREAST_HISTORY["icd"]), med_request("72962")
    )
    assert not {"prostate-cancer", "breast-cancer"} & set(two_histories.concepts)


@pytest.mark.parametrize("history", BREAST_HISTORY.values(), ids=BREAST_HISTORY)
def test_shared_therapy_activates_the_only_cancer_charted(valuesets, history):
    # a history code and neoadjuvant chemotherapy, nothing else: the chemotherapy is for that cancer
    facts = concepts(valuesets, condition(history), med_request("72962"))  # docetaxel
    (evidence,) = facts.concepts["breast-cancer"]
    assert "current docetaxel (chemotherapy)" in evidence.text
    prostate_on_docetaxel = concepts(valuesets, condition(PROSTATE_HISTORY["icd"]), med_request("72962"))
    assert "prostate-cancer" in prostate_on_docetaxel.concepts


def test_metastases_are_not_attributed_when_another_primary_can_own_them(valuesets):
    lung = concepts(
        valuesets, condition(PROSTATE_HISTORY["icd"]), condition((ICD, "C34.90")), condition((ICD, "C79.51"))
    )
    assert "prostate-cancer" not in lung.concepts
    both = concepts(
        valuesets,
        condition(PROSTATE_HISTORY["icd"]),
        condition(BREAST_HISTORY["icd"]),
        condition(BONE_METS["icd"]),
    )
    assert "prostate-cancer" not in both.concepts and "breast-cancer" not in both.concepts
    assert any("the primary is not assumed" in issue for issue in both.data_issues)


def test_family_history_of_breast_cancer_is_not_a_personal_history(valuesets):
    # 429740004 is "Family history of malignant neoplasm of breast" (a relative's cancer)
    facts = concepts(valuesets, condition((SCT, "429740004")))
    assert not {"history-of-breast-cancer", "breast-cancer", "history-of-cancer"} & set(facts.concepts)


def test_other_history_codes_are_history_of_cancer_except_prostate_breast_and_skin(valuesets):
    assert "history-of-cancer" in concepts(valuesets, condition((ICD, "Z85.038"))).concepts  # colon
    for code in ("Z85.46", "Z85.3", "Z85.828"):
        assert "history-of-cancer" not in concepts(valuesets, condition((ICD, code))).concepts


def test_derived_fact_from_text_support_stays_marked_as_text():
    history = Evidence("History of prostate cancer (ICD-10-CM Z85.46)", date(2019, 1, 1), "Condition/h")
    text_met = Evidence("osseous metastases", date(2026, 11, 1), "DiagnosticReport/r", from_text=True)
    facts = Facts(
        as_of=date(2026, 11, 22),
        concepts={"history-of-prostate-cancer": (history,), "metastasis-bone": (text_met,)},
    )
    (derived,) = derive_active_cancer(facts).concepts["prostate-cancer"]
    assert derived.from_text  # rests only on text: lower confidence, never lowers a rating by itself
    on_adt = Facts(
        as_of=facts.as_of,
        concepts=facts.concepts,
        medications=(MedicationFact("leuprolide", frozenset({"adt"}), date(2026, 6, 1), "active"),),
    )
    (derived,) = derive_active_cancer(on_adt).concepts["prostate-cancer"]
    assert not derived.from_text  # a coded therapy supports it too


def test_no_history_no_change():
    facts = Facts(as_of=date(2026, 11, 22), concepts={"metastasis-bone": (Evidence("x"),)})
    assert derive_active_cancer(facts) is facts

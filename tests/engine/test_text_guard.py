"""Facts read from text never by themselves lower a rating to "not appropriate" (issue 8, point 3).

Each case is rated with the same facts coded and read from text: text may add a red flag, a pitfall
or a better study, but an order that is not "usually not appropriate" on coded facts stays so.
"""

from __future__ import annotations

from dataclasses import replace

from cds_service.engine import evaluate
from cds_service.model import Evidence, Facts, ImagingFact, PatientRecord
from tests.engine.builders import KNOWLEDGE, TODAY, cpt, days_ago, facts, med, pama, prior, psa, request, run

BONE_SCAN = ("bs", "78306")


def text_ev(concept: str) -> tuple[Evidence, ...]:
    return (Evidence(f"'{concept} (read from text)'", days_ago(3), "Condition/t1", from_text=True),)


def with_text(f: Facts, *concepts: str) -> Facts:
    merged = dict(f.concepts)
    for c in concepts:
        merged[c] = merged.get(c, ()) + text_ev(c)
    return replace(f, concepts=merged)


def details(result) -> str:
    return "\n".join(c["summary"] + "\n" + c["detail"] for c in result.cards)


def test_without_text_drops_text_evidence_and_text_imaging():
    f = with_text(facts("breast-cancer"), "breast-cancer", "back-pain")
    f = replace(
        f, imaging=(prior("ct", "bone-metastases"), replace(prior("bone-scan", "stable"), from_text=True))
    )
    coded = f.without_text()
    assert set(coded.concepts) == {"breast-cancer"} and len(coded.concepts["breast-cancer"]) == 1
    assert [s.procedure for s in coded.imaging] == ["ct"]
    assert f.has_text and not coded.has_text
    assert coded.without_text() is coded


def test_text_alone_does_not_make_an_order_not_appropriate():
    # breast cancer known only from problem text + stage IIA = early-stage breast cancer, where a bone
    # scan is usually not appropriate. The coded record alone places the patient in no scenario.
    f = with_text(Facts(as_of=TODAY, stage_group="IIA"), "breast-cancer")
    result = run(f, cpt(*BONE_SCAN))
    assert pama(result) == {"bs": "no-criteria-apply"}
    text = details(result)
    assert "Read from text" in text and "Text alone never lowers a rating" in text
    assert "early-stage" in text.lower()


def test_the_same_facts_coded_still_give_not_appropriate():
    coded = Facts(as_of=TODAY, stage_group="IIA", concepts=facts("breast-cancer").concepts)
    assert pama(run(coded, cpt(*BONE_SCAN))) == {"bs": "not-appropriate"}
    # coded and text together: the coded facts alone justify the rating, so it stands
    both = with_text(coded, "breast-cancer")
    result = run(both, cpt(*BONE_SCAN))
    assert pama(result) == {"bs": "not-appropriate"}
    assert "Read from text" not in details(result)


def test_text_still_raises_a_red_flag():
    f = with_text(facts("prostate-cancer"), "cord-compression")
    result = run(f, cpt("mri", "72148"))
    assert "red-flag-cord-compression" in result.rule_ids


def test_text_report_still_fires_the_discordant_progression_pitfall():
    stable = ImagingFact(
        "bone-scan",
        days_ago(60),
        frozenset({"bone-metastases", "stable"}),
        "'Stable.'",
        "DiagnosticReport/d1",
        from_text=True,
    )
    f = replace(facts("prostate-cancer", "metastatic-disease"), psa=psa(2.0, 4.0, 8.0), imaging=(stable,))
    f = replace(f, medications=(med("leuprolide", "adt", started=540),))
    result = run(f, cpt(*BONE_SCAN))
    assert "discordant-psa-progression" in result.rule_ids
    assert "read from the bone scan report" in details(result)


def test_problem_text_only_chart_raises_the_neuro_red_flag():
    """'History of breast cancer' + 'new headache and seizure' as text-only problems: red flag."""

    def problem(rid, label):
        return {
            "resourceType": "Condition",
            "id": rid,
            "subject": {"reference": "Patient/p1"},
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                ]
            },
            "code": {"text": label},
            "recordedDate": "2026-11-20",
        }

    record = PatientRecord(
        patient={"resourceType": "Patient", "id": "p1", "gender": "female"},
        resources={
            "Condition": (
                problem("c1", "History of breast cancer, lumpectomy 2019"),
                problem("c2", "New onset headache and seizure"),
            )
        },
        as_of=TODAY,
    )
    result = evaluate(request(cpt("ct", "70450")), record, KNOWLEDGE)
    assert "red-flag-new-neuro-symptoms" in result.rule_ids
    assert "from problem text" in details(result)

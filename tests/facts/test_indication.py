"""The draft orders' indications (reasonCode / reasonReference) -> concepts dated today, from the order."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cds_service.facts import extract_facts
from cds_service.facts.indication import extract_indication
from cds_service.knowledge.valuesets import load_valuesets
from cds_service.model import Evidence

from .conftest import AS_OF, CARDS, ICD, LNC, SCT, cc, condition, observation, record

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "identifier": [{"system": "https://ehr.example.org/mrn", "value": "MRN-1"}],
}
LOW_BACK_PAIN = (SCT, "279039007")
PARESIS = (SCT, "102568007")
BONE_PAIN = (SCT, "12584003")
HEADACHE = (SCT, "25064002")
SEIZURE = (SCT, "91175000")
SOURCE = "ServiceRequest/sr-1"


def order(**extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": "sr-1",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "code": cc(("http://www.ama-assn.org/go/cpt", "72158")),
    }
    res.update(extra)
    return res


VALUESETS = load_valuesets(CARDS)


def read(*orders: dict, chart: tuple = (), patient: dict | None = PATIENT):
    return extract_indication(orders, record(*chart, patient=patient), VALUESETS)


def concepts(partial) -> set[str]:
    return set(partial.concepts)


# --- reasonCode ---------------------------------------------------------------------------------


def test_coded_reasons_become_concepts_dated_today_from_the_order():
    part = read(order(reasonCode=[cc(LOW_BACK_PAIN), cc(PARESIS)]))
    assert {"back-pain", "focal-neuro-deficit"} <= concepts(part)
    [ev] = part.concepts["back-pain"]
    assert ev == Evidence("coded entry (SNOMED 279039007)", AS_OF, SOURCE, from_order=True)
    assert part.issues == ()


# The same indication as EHRs and the CDS Hooks sandbox send it: the outcome must not change.
SAME_REASONS = {
    "R4 list": {"reasonCode": [cc(LOW_BACK_PAIN), cc(PARESIS)]},
    "single object per reason list": {"reasonCode": [cc(LOW_BACK_PAIN, PARESIS)]},
    "sandbox single object": {
        "reasonCode": {
            "coding": [{}, {"system": SCT, "code": "279039007"}, {"system": SCT, "code": "102568007"}]
        }
    },
    "coding [{}] then codes": {"reasonCode": [{"coding": [{}]}, cc(LOW_BACK_PAIN), cc(PARESIS)]},
    "ICD-10-CM with and without dot": {"reasonCode": [cc((ICD, "M54.50")), cc((ICD, "G8310"))]},
    "OID system URIs": {
        "reasonCode": [
            {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.96", "code": "279039007"}]},
            {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.96", "code": " 102568007 "}]},
        ]
    },
    "contained Condition": {
        "reasonReference": [{"reference": "#r1"}, {"reference": "#r2"}],
        "contained": [
            {"resourceType": "Condition", "id": "r1", "code": cc(LOW_BACK_PAIN)},
            {
                "resourceType": "Condition",
                "id": "r2",
                "code": cc(PARESIS),
                "subject": {"reference": "Patient/p1"},
            },
        ],
    },
}


@pytest.mark.parametrize("shape", sorted(SAME_REASONS))
def test_every_shape_of_the_same_reasons_gives_the_same_concepts(shape):
    part = read(order(**copy.deepcopy(SAME_REASONS[shape])))
    assert {"back-pain", "focal-neuro-deficit"} <= concepts(part), shape
    assert all(e.from_order and e.date == AS_OF for evs in part.concepts.values() for e in evs)


@pytest.mark.parametrize(
    "reason",
    [
        None,
        "back pain",
        42,
        [None, "x", 3],
        {"coding": "not a list"},
        {"coding": [{}]},
        {"coding": [{"system": SCT}]},
        {"coding": [{"code": "279039007"}]},  # no system: codes match on (system, code) only
        {"coding": [{"system": {"odd": "json"}, "code": "279039007"}]},
        {"coding": [{"system": "http://example.org/local", "code": "279039007"}]},
        {"text": "   "},
    ],
    ids=repr,
)
def test_unreadable_reasons_add_nothing_and_never_crash(reason):
    part = read(order(reasonCode=reason))
    assert part.concepts == {}


def test_a_lab_code_as_reason_says_nothing_without_its_value():
    part = read(order(reasonCode=[cc((LNC, "2857-1"))]))  # PSA
    assert part.concepts == {}


def test_the_reasons_of_every_draft_order_count():
    first = order(reasonCode=[cc(HEADACHE)])
    second = order(id="sr-2", reasonCode=cc(SEIZURE))
    part = read(first, second, "not an order")  # type: ignore[arg-type]
    assert part.concepts["headache"][0].source == "ServiceRequest/sr-1"
    assert part.concepts["seizure"][0].source == "ServiceRequest/sr-2"


# --- reasonReference -----------------------------------------------------------------------------


def _bone_pain_condition(**extra):
    res = condition(BONE_PAIN, onset="2025-01-01")
    res.update(extra)
    return res


@pytest.mark.parametrize(
    "form",
    [
        "Condition/{id}",
        "https://ehr.example.org/fhir/Condition/{id}",
        "https://ehr.example.org/fhir/Condition/{id}/_history/4",
        "urn:uuid:{id}",
    ],
)
def test_a_referenced_chart_condition_counts_dated_today(form):
    target = _bone_pain_condition()
    part = read(order(reasonReference=[{"reference": form.format(id=target["id"])}]), chart=(target,))
    [ev] = part.concepts["bone-pain"]
    assert ev.date == AS_OF and ev.from_order and ev.source == SOURCE


def test_a_single_object_reference_is_read():
    target = _bone_pain_condition()
    part = read(order(reasonReference={"reference": f"Condition/{target['id']}"}), chart=(target,))
    assert "bone-pain" in part.concepts


@pytest.mark.parametrize(
    "status",
    [
        {"verification": "refuted"},
        {"verification": "entered-in-error"},
        {"clinical": "resolved"},
        {"clinical": None, "abatementDateTime": "2026-01-01"},
    ],
    ids=lambda s: next(iter(s.values())) or "abated",
)
def test_a_refuted_or_void_or_resolved_referenced_condition_never_counts(status):
    target = condition(BONE_PAIN, **status)
    part = read(order(reasonReference=[{"reference": f"Condition/{target['id']}"}]), chart=(target,))
    assert part.concepts == {}


@pytest.mark.parametrize(
    "subject",
    [
        {"reference": "Patient/someone-else"},
        {"reference": "https://ehr.example.org/fhir/Patient/someone-else"},
        {"reference": "urn:uuid:6f1c2b7a-0000-4000-8000-000000000001"},
        {"identifier": {"system": "https://ehr.example.org/mrn", "value": "MRN-2"}},
        {"reference": "Group/g1"},
        {"display": "John Doe"},
    ],
    ids=lambda s: str(s)[:40],
)
def test_another_patients_referenced_condition_never_counts(subject):
    foreign = _bone_pain_condition(subject=subject)
    contained = dict(foreign, id="r1")
    in_record = read(order(reasonReference=[{"reference": f"Condition/{foreign['id']}"}]), chart=(foreign,))
    in_order = read(order(reasonReference=[{"reference": "#r1"}], contained=[contained]))
    for part in (in_record, in_order):
        assert part.concepts == {}
        assert any("another patient" in issue for issue in part.issues)


@pytest.mark.parametrize(
    "subject",
    [
        {"reference": "Patient/p1"},
        {"reference": "https://ehr.example.org/fhir/Patient/p1"},
        {"reference": "urn:uuid:p1"},
        {"identifier": {"system": "https://ehr.example.org/mrn", "value": "MRN-1"}},
    ],
    ids=lambda s: str(s)[:40],
)
def test_the_patients_own_referenced_condition_counts_in_every_reference_form(subject):
    own = _bone_pain_condition(subject=subject)
    part = read(order(reasonReference=[{"reference": f"Condition/{own['id']}"}]), chart=(own,))
    assert "bone-pain" in part.concepts


def test_without_a_known_patient_a_subject_cannot_be_confirmed():
    target = _bone_pain_condition()
    part = read(
        order(reasonReference=[{"reference": f"Condition/{target['id']}"}]), chart=(target,), patient=None
    )
    assert part.concepts == {}


def test_an_unresolvable_reference_is_named_not_guessed():
    part = read(order(reasonReference=[{"reference": "Condition/not-in-the-record", "display": "Back pain"}]))
    # display text is never matched as a code; the text reader may read it, marked as text
    assert all(e.from_text and e.from_order for e in part.concepts.get("back-pain", ()))
    assert any(
        "Condition/not-in-the-record" in issue and "could not be read" in issue for issue in part.issues
    )


def test_references_to_other_resource_types_or_garbage_are_ignored():
    part = read(
        order(
            reasonReference=[
                {"reference": "Patient/p1"},
                {"reference": ""},
                {"reference": 12},
                "Condition",
                None,
                {"reference": "#"},
            ]
        ),
        chart=({"resourceType": "Patient", "id": "p1"},),
    )
    assert part.concepts == {}


@pytest.mark.parametrize("how", ["finding as code", "finding as value of an exam"])
def test_a_referenced_observation_is_read_by_code_or_by_value(how):
    if how == "finding as code":
        obs = observation(PARESIS)
    else:
        obs = observation((LNC, "29545-1"), valueCodeableConcept=cc(PARESIS))  # physical findings
    part = read(order(reasonReference=[{"reference": f"Observation/{obs['id']}"}]), chart=(obs,))
    [ev] = part.concepts["focal-neuro-deficit"]
    assert ev.source == SOURCE and ev.from_order and ev.date == AS_OF
    assert part.issues == ()


@pytest.mark.parametrize(
    "extra",
    [{"status": "entered-in-error"}, {"status": "cancelled"}, {"valueBoolean": False}],
    ids=lambda e: str(e),
)
def test_a_void_or_negative_referenced_observation_never_counts(extra):
    obs = observation(PARESIS, **{k: v for k, v in extra.items() if k != "status"})
    if "status" in extra:
        obs["status"] = extra["status"]
    part = read(order(reasonReference=[{"reference": f"Observation/{obs['id']}"}]), chart=(obs,))
    assert part.concepts == {}


def test_a_referenced_finding_with_an_unreadable_answer_is_named():
    obs = observation(PARESIS, valueCodeableConcept=cc((SCT, "2667000")))  # "absent"
    part = read(order(reasonReference=[{"reference": f"Observation/{obs['id']}"}]), chart=(obs,))
    assert part.concepts == {}
    assert any("unreadable value" in issue for issue in part.issues)


def test_a_referenced_report_contributes_its_coded_conclusion():
    report = {
        "resourceType": "DiagnosticReport",
        "id": "dr1",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": cc((LNC, "24627-2")),
        "conclusionCode": [cc((SCT, "94222008"))],  # secondary malignant neoplasm of bone
    }
    part = read(order(reasonReference=[{"reference": "DiagnosticReport/dr1"}]), chart=(report,))
    assert "metastasis-bone" in part.concepts
    void = dict(report, status="entered-in-error")
    assert read(order(reasonReference=[{"reference": "DiagnosticReport/dr1"}]), chart=(void,)).concepts == {}


# --- text-only reasons: the clinical-text reader (medspaCy ConText) ------------------------------


@pytest.mark.parametrize(
    "reason",
    [
        {"coding": [{}], "text": "New bone pain in the ribs"},  # sandbox: single object, empty coding
        [{"text": "New bone pain in the ribs"}],
        [
            {
                "coding": [{"system": "http://example.org/local", "code": "BP1"}],
                "text": "New bone pain in the ribs",
            }
        ],
    ],
    ids=["sandbox single object", "text only", "unknown local code"],
)
def test_a_text_only_reason_is_read_as_text_marked_from_the_order(reason):
    part = read(order(reasonCode=reason))
    [ev] = part.concepts["bone-pain"]
    assert ev.from_order and ev.from_text and ev.date == AS_OF and ev.source == SOURCE
    assert "bone pain" in ev.text.lower()


@pytest.mark.parametrize(
    "text",
    [
        "No bone pain",
        "History of bone pain in 2019",
        "Family history of seizure",
        "Denies headache",
    ],
)
def test_negated_historical_or_family_text_reasons_count_as_nothing(text):
    part = read(order(reasonCode={"coding": [{}], "text": text}))
    assert not {"bone-pain", "seizure", "headache"} & set(part.concepts)


def test_text_reasons_can_raise_a_red_flag_concept():
    part = read(order(reasonCode=[{"text": "Low back pain with new weakness of both legs"}]))
    assert "back-pain" in part.concepts
    assert all(e.from_text and e.from_order for evs in part.concepts.values() for e in evs)


def test_text_reasons_are_read_with_the_loaded_knowledge_bases_targets(monkeypatch):
    """A site's own cards/ directory (CDS_CARDS_DIR) must govern order reasons as it does reports."""
    seen = []
    monkeypatch.setattr(
        "cds_service.facts.indication.affirmed_concepts", lambda *a, **k: seen.append(k["targets"]) or {}
    )
    read(order(reasonCode=[{"text": "Low back pain"}]))
    assert seen and all(t is VALUESETS.text_targets for t in seen)


def test_a_coded_reason_is_not_read_again_as_text(monkeypatch):
    calls = []
    monkeypatch.setattr(
        "cds_service.facts.indication.affirmed_concepts", lambda *a, **k: calls.append(a) or {}
    )
    part = read(order(reasonCode=[cc(BONE_PAIN, text="no bone pain at all")]))
    assert calls == []
    assert not part.concepts["bone-pain"][0].from_text


def test_a_referenced_condition_with_only_text_is_read_as_text():
    target = _bone_pain_condition(code={"text": "bone pain, left hip"})
    part = read(order(reasonReference=[{"reference": f"Condition/{target['id']}"}]), chart=(target,))
    [ev] = part.concepts["bone-pain"]
    assert ev.from_order and ev.from_text


# --- through extract_facts ------------------------------------------------------------------------


def test_indication_facts_merge_with_chart_facts():
    chart_pain = condition(LOW_BACK_PAIN, onset="2026-11-01")
    cancer = condition((ICD, "C61"))
    facts = extract_facts(
        record(chart_pain, cancer, patient=PATIENT),
        VALUESETS,
        orders=[order(reasonCode=[cc(LOW_BACK_PAIN), cc(PARESIS)])],
    )
    assert {e.from_order for e in facts.concepts["back-pain"]} == {False, True}
    assert [e.from_order for e in facts.concepts["focal-neuro-deficit"]] == [True]
    assert "prostate-cancer" in facts.concepts


def test_without_orders_extract_facts_is_unchanged():
    chart = (condition((ICD, "C61")), condition(LOW_BACK_PAIN))
    assert extract_facts(record(*chart, patient=PATIENT), VALUESETS) == extract_facts(
        record(*chart, patient=PATIENT), VALUESETS, orders=()
    )

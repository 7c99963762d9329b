"""Stage, grade and T category re-encoded the ways EHRs record them give the same facts and outcome.

Two fixture patients carry the staging their scenario turns on: the early-stage breast patient
(clinical stage IA: ACR 310 variant 2, systemic staging usually not appropriate) and the low-risk
prostate patient (grade group 1, cT1c, PSA 5.2: low risk, bone scan usually not appropriate). Each
variant replaces the fixture's staging record with another encoding of the same value: LOINC vs
SNOMED CT Observation code, SNOMED AJCC vs AJCC (cancerstaging.org) value, Condition.stage,
written notation in several spellings, an Observation coded only by text. The facts the rules read
(stage group, T/N/M, grade group) and the whole engine result must not change.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cds_service.engine import evaluate
from cds_service.facts import extract_facts
from cds_service.model import PatientRecord
from cds_service.replay import as_of_date, patient_of, prepare_orders
from tests.engine.builders import KNOWLEDGE, counter_uuid, request

REPO = Path(__file__).resolve().parents[2]
SCT = "http://snomed.info/sct"
LNC = "http://loinc.org"
AJCC = "http://cancerstaging.org"
LOCAL = "urn:oid:2.16.840.1.113883.3.9999.1"

Bundle = dict[str, Any]
Variant = Callable[[Bundle], None]


def _load(name: str) -> Bundle:
    return json.loads((REPO / "fixtures" / "patients" / f"{name}.json").read_text())


def _resources(bundle: Bundle) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"]]


def _find(bundle: Bundle, rtype: str, system: str, code: str) -> dict[str, Any]:
    for res in _resources(bundle):
        if res["resourceType"] == rtype and any(
            c.get("system") == system and c.get("code") == code for c in res["code"].get("coding", [])
        ):
            return res
    raise AssertionError(f"fixture has no {rtype} {code}")


def _remove(bundle: Bundle, res: dict[str, Any]) -> None:
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"] is not res]


def _record(bundle: Bundle) -> PatientRecord:
    grouped: dict[str, list] = defaultdict(list)
    for res in _resources(bundle):
        grouped[res["resourceType"]].append(res)
    return PatientRecord(
        patient=patient_of(bundle),
        resources={k: tuple(v) for k, v in grouped.items()},
        as_of=as_of_date(bundle),
    )


def _order(name: str, bundle: Bundle) -> dict[str, Any]:
    (order,) = prepare_orders(
        [json.loads((REPO / "fixtures" / "orders" / f"{name}.json").read_text())], _pid(bundle)
    )
    return order


def _pid(bundle: Bundle) -> str:
    return str(patient_of(bundle)["id"])


def _request(order_name: str, bundle: Bundle) -> Any:
    return replace(request(_order(order_name, bundle)), patient_id=_pid(bundle))


def _set_code(res: dict[str, Any], concept: dict[str, Any]) -> None:
    res["code"] = concept


def _set_value(res: dict[str, Any], **value: Any) -> None:
    for key in [k for k in res if k.startswith("value")]:
        del res[key]
    res.update(value)


def _cc(system: str, code: str, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": system, "code": code}]}
    if text:
        out["text"] = text
    return out


# --- breast: clinical stage group IA (fixture: SNOMED 399537006 + SNOMED AJCC 1222724007) ---------

BREAST = "breast-early-stage-asymptomatic"
BREAST_CANCER = (SCT, "353431000119107")


def _stage_obs(b: Bundle) -> dict[str, Any]:
    return _find(b, "Observation", SCT, "399537006")


def _stage_value(**value: Any) -> Variant:
    return lambda b: _set_value(_stage_obs(b), **value)


def _stage_code(concept: dict[str, Any]) -> Variant:
    return lambda b: _set_code(_stage_obs(b), concept)


def _both(*changes: Variant) -> Variant:
    def apply(b: Bundle) -> None:
        for change in changes:
            change(b)

    return apply


def _on_condition(stage: dict[str, Any], keep_observation: bool = False) -> Variant:
    def apply(b: Bundle) -> None:
        obs = _stage_obs(b)
        cancer = _find(b, "Condition", *BREAST_CANCER)
        cancer["stage"] = [stage]
        if not keep_observation:
            _remove(b, obs)

    return apply


def _assessed_by_local_observation(b: Bundle) -> None:
    # the stage Observation carries only a local code: the Condition's stage.assessment points to it
    obs = _stage_obs(b)
    obs["code"] = _cc(LOCAL, "CLINSTAGE")
    cancer = _find(b, "Condition", *BREAST_CANCER)
    cancer["stage"] = [
        {"assessment": [{"reference": f"Observation/{obs['id']}"}], "type": _cc(SCT, "260998006")}
    ]


BREAST_VARIANTS: dict[str, Variant] = {
    "loinc-code-snomed-value": _stage_code(_cc(LNC, "21908-9")),
    "both-codes": _stage_code(
        {"coding": [{"system": LNC, "code": "21908-9"}, {"system": SCT, "code": "399537006"}]}
    ),
    "pathologic-code": _stage_code(_cc(SCT, "399588009")),
    "generic-code": _stage_code(_cc(SCT, "399390009")),
    "ajcc-1A": _stage_value(valueCodeableConcept=_cc(AJCC, "1A", "IA")),
    "ajcc-IA": _both(_stage_value(valueCodeableConcept=_cc(AJCC, "IA")), _stage_code(_cc(LNC, "21908-9"))),
    "snomed-IA1-subgroup": _stage_value(valueCodeableConcept=_cc(SCT, "1222725008")),
    "text-Stage-IA": _stage_value(valueString="Stage IA"),
    "text-stage-1A": _stage_value(valueString="stage 1A"),
    "text-IA-ajcc": _stage_value(valueString="IA (AJCC 8th edition)"),
    "value-text-only": _stage_value(valueCodeableConcept={"text": "Stage IA"}),
    "value-local-code-and-text": _stage_value(valueCodeableConcept=_cc(LOCAL, "S1A", "clinical stage IA")),
    "code-text-only": _both(_stage_value(valueString="IA"), _stage_code({"text": "Clinical stage"})),
    "code-text-states-all": _both(
        lambda b: _set_value(_stage_obs(b)), _stage_code({"text": "AJCC clinical stage group: Stage IA"})
    ),
    "condition-summary-snomed": _on_condition({"summary": _cc(SCT, "1222724007")}),
    "condition-summary-ajcc": _on_condition(
        {"summary": _cc(AJCC, "1A", "IA"), "type": _cc(SCT, "897275008")}
    ),
    "condition-summary-text": _on_condition({"summary": {"text": "Stage IA"}}),
    "condition-summary-and-observation": _on_condition(
        {"summary": _cc(SCT, "1222724007")}, keep_observation=True
    ),
    "condition-assessment-reference": _assessed_by_local_observation,
}


# --- prostate: grade group 1 (385377005 + ISUP 1279715000), cT1c (399504009 + 433351000124101) ----

PROSTATE = "prostate-low-risk-new-diagnosis"


def _grade_obs(b: Bundle) -> dict[str, Any]:
    return _find(b, "Observation", SCT, "385377005")


def _t_obs(b: Bundle) -> dict[str, Any]:
    return _find(b, "Observation", SCT, "399504009")


def _grade(code: dict[str, Any] | None = None, **value: Any) -> Variant:
    def apply(b: Bundle) -> None:
        obs = _grade_obs(b)
        if code is not None:
            obs["code"] = code
        _set_value(obs, **value)

    return apply


def _t(code: dict[str, Any] | None = None, **value: Any) -> Variant:
    def apply(b: Bundle) -> None:
        obs = _t_obs(b)
        if code is not None:
            obs["code"] = code
        _set_value(obs, **value)

    return apply


def _one_text_observation(text: str) -> Variant:
    """Grade and T category both in one Observation coded only by text."""

    def apply(b: Bundle) -> None:
        grade, t = _grade_obs(b), _t_obs(b)
        _remove(b, t)
        grade["code"] = {"text": "Prostate cancer staging"}
        _set_value(grade, valueString=text)

    return apply


def _t_on_condition(summary: dict[str, Any]) -> Variant:
    def apply(b: Bundle) -> None:
        t = _t_obs(b)
        _remove(b, t)
        _find(b, "Condition", "http://hl7.org/fhir/sid/icd-10-cm", "C61")["stage"] = [{"summary": summary}]

    return apply


GLEASON = {"coding": [{"system": LNC, "code": "35266-6"}]}
PROSTATE_VARIANTS: dict[str, Variant] = {
    "gleason-loinc-ajcc-answer": _grade(GLEASON, valueCodeableConcept=_cc(LNC, "LA30794-4")),
    "gleason-loinc-integer": _grade(GLEASON, valueInteger=6),
    "gleason-loinc-pattern": _grade(GLEASON, valueString="3+3=6"),
    "gleason-text-grade-group": _grade(valueString="Grade group 1 (Gleason 3+3=6)"),
    "gleason-text-GG": _grade(_cc(SCT, "372278000"), valueString="GG 1"),
    "gleason-text-isup": _grade(valueCodeableConcept={"text": "ISUP grade 1"}),
    "gleason-code-text-only": _grade({"text": "Gleason score"}, valueString="Gleason 3+3=6"),
    "t-snomed-ajcc": _t(valueCodeableConcept=_cc(SCT, "1228899006")),
    "t-loinc-ajcc-code": _t(_cc(LNC, "21905-5"), valueCodeableConcept=_cc(AJCC, "cT1c", "T1c")),
    "t-generic-code-ajcc-code": _t(_cc(SCT, "78873005"), valueCodeableConcept=_cc(AJCC, "T1c")),
    "t-text-cT1c": _t(valueString="cT1c"),
    "t-text-T1c": _t(_cc(LNC, "21905-5"), valueCodeableConcept={"text": "T1c"}),
    "t-code-text-only": _t({"text": "T category"}, valueString="cT1c"),
    "t-condition-summary-text": _t_on_condition({"text": "cT1c"}),
    "one-text-observation": _one_text_observation("cT1c, Gleason 3+3=6 (grade group 1)"),
}


# --- the checks --------------------------------------------------------------------------------


def _staging(facts: Any) -> tuple[Any, ...]:
    return facts.stage_group, dict(facts.tnm), facts.grade_group


def _outcome(bundle: Bundle, order: str) -> tuple[Any, ...]:
    result = evaluate(_request(order, bundle), _record(bundle), KNOWLEDGE, counter_uuid())
    actions = json.dumps(result.system_actions, sort_keys=True)
    return result.rule_ids, tuple(c.get("indicator") for c in result.cards), actions


# the orders of the fixture cases breast-early-stage-bone-scan and prostate-low-risk-bone-scan: the
# order's reason is the cancer itself, so the indication adds no symptom
BREAST_ORDER = "bone-scan-whole-body-reason-breast-cancer"
PROSTATE_ORDER = "bone-scan-whole-body-reason-prostate-cancer"
ORDERS = {BREAST: BREAST_ORDER, PROSTATE: PROSTATE_ORDER}
CASES = [(BREAST, name, v, BREAST_ORDER) for name, v in BREAST_VARIANTS.items()] + [
    (PROSTATE, name, v, PROSTATE_ORDER) for name, v in PROSTATE_VARIANTS.items()
]


@pytest.fixture(scope="module")
def canonical() -> dict[str, tuple[Any, Any]]:
    out = {}
    for patient in (BREAST, PROSTATE):
        bundle = _load(patient)
        out[patient] = (
            extract_facts(_record(bundle), KNOWLEDGE.valuesets),
            _outcome(bundle, ORDERS[patient]),
        )
    return out


def test_canonical_fixtures_are_what_the_variants_must_reproduce(canonical):
    breast, _ = canonical[BREAST]
    prostate, _ = canonical[PROSTATE]
    assert breast.stage_group == "IA"
    assert (prostate.grade_group, prostate.tnm) == (1, {"T": "T1c"})
    assert canonical[BREAST][1][:2] == (("breast-early-stage-asymptomatic",), ("warning",))
    assert canonical[PROSTATE][1][:2] == (("prostate-initial-staging",), ("warning",))


@pytest.mark.parametrize(
    ("patient", "name", "variant", "order"), CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES]
)
def test_reencoded_staging_gives_the_same_facts_and_outcome(canonical, patient, name, variant, order):
    bundle = copy.deepcopy(_load(patient))
    variant(bundle)
    facts = extract_facts(_record(bundle), KNOWLEDGE.valuesets)
    want_facts, want_outcome = canonical[patient]
    assert _staging(facts) == _staging(want_facts), name
    assert facts.data_issues == want_facts.data_issues, name
    assert _outcome(bundle, order) == want_outcome, name


def test_written_staging_is_marked_and_quoted_on_the_card(canonical):
    bundle = copy.deepcopy(_load(BREAST))
    BREAST_VARIANTS["text-stage-1A"](bundle)
    facts = extract_facts(_record(bundle), KNOWLEDGE.valuesets)
    evidence = facts.staging_evidence["stage_group"]
    assert evidence.from_text and '"stage 1A"' in evidence.text
    result = evaluate(_request(BREAST_ORDER, bundle), _record(bundle), KNOWLEDGE, counter_uuid())
    assert any('"stage 1A"' in card.get("detail", "") for card in result.cards)


def test_a_different_stage_changes_the_outcome(canonical):
    # the variants above can fail: the same encodings of stage IIB leave the early-stage scenario
    bundle = copy.deepcopy(_load(BREAST))
    _stage_value(valueString="Stage IIB")(bundle)
    facts = extract_facts(_record(bundle), KNOWLEDGE.valuesets)
    assert facts.stage_group == "IIB"
    assert _outcome(bundle, BREAST_ORDER) != canonical[BREAST][1]

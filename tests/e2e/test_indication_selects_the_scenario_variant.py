"""End to end, order indications: the indication selects the scenario variant.

Breast cancer IIB on neoadjuvant AC whose chart records no symptom and normal labs. A bone scan
ordered for bone pain is the clinical suspicion of metastases of ACR TopicId 235 variant 6 (usually
appropriate); the same bone scan ordered for the cancer itself, or for a refuted bone-pain Condition,
is not. The ratings must be the same over HTTP, the replay CLI and the FHIR-server fallback.
"""

from __future__ import annotations

import pytest
from e2e_support import case_id, check, named_case_runs

BN = "breast-neoadjuvant-suspected-metastases"
SUSPICION = "indication-breast-neoadjuvant-bone-pain-reason-bone-scan"
LOOK_ALIKES = (
    "indication-breast-neoadjuvant-cancer-reason-bone-scan",
    "indication-refuted-condition-reason-bone-scan",
)
RUNS = named_case_runs((SUSPICION, *LOOK_ALIKES))


def test_every_case_is_in_the_fixtures():
    assert {c["name"] for c, _, _ in RUNS} == {SUSPICION, *LOOK_ALIKES}


def _scenario_of_rating(body) -> set[str]:
    values = set()
    for action in body.get("systemActions") or []:
        for ext in action["resource"].get("extension") or []:
            for sub in ext.get("extension") or []:
                if sub.get("url") == "scenario":
                    values.add(sub.get("valueCode"))
    return values


@pytest.mark.parametrize("case, hook, way", RUNS, ids=lambda v: case_id(v) if isinstance(v, dict) else v)
def test_bone_pain_as_the_orders_reason_is_clinical_suspicion(case, hook, way, e2e):
    status, body, ids = getattr(e2e, way)(case, hook)
    check(case, ids, status, body, hook=hook)
    if case["name"] == SUSPICION:
        assert _scenario_of_rating(body) == {BN}
    else:
        assert BN not in _scenario_of_rating(body)
        assert not any(BN in str(c) for c in body["cards"])

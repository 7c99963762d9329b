"""End to end, order indications: a red flag stated only in the draft order's reasonCode.

The patients' charts record no symptom; the MRI is ordered for "low back pain + paresis of lower
extremity" (metastatic prostate cancer) or "headache + seizure" (breast cancer, coded or as text).
Each case runs over HTTP, through the replay CLI and through the FHIR-server fallback: the critical
card must come every time, say that its facts came from the order, and never propose the study that
is already drafted.
"""

from __future__ import annotations

import pytest
from e2e_support import case_id, check, named_case_runs

CASES = {
    "indication-prostate-mets-back-pain-paresis-mri-lumbar": (
        "red-flag-cord-compression",
        ["Low back pain (SNOMED 279039007)", "Paresis of lower extremity (SNOMED 102568007)"],
        "72158",  # MRI lumbar spine, already drafted
    ),
    "indication-breast-headache-seizure-mri-brain": (
        "red-flag-new-neuro-symptoms",
        ["Headache (SNOMED 25064002)", "Seizure (SNOMED 91175000)"],
        "70553",  # MRI brain, already drafted
    ),
    # the same reasons as text only (sandbox shape), read by the clinical-text reader and quoted
    "indication-breast-text-headache-seizure-mri-brain": (
        "red-flag-new-neuro-symptoms",
        ["'New headaches for a week and a first seizure yesterday'"],
        "70553",
    ),
}
RUNS = named_case_runs(CASES)


def test_every_case_is_in_the_fixtures():
    assert {c["name"] for c, _, _ in RUNS} == set(CASES)


@pytest.mark.parametrize("case, hook, way", RUNS, ids=lambda v: case_id(v) if isinstance(v, dict) else v)
def test_red_flag_from_the_orders_reason(case, hook, way, e2e):
    status, body, ids = getattr(e2e, way)(case, hook)
    check(case, ids, status, body, hook=hook)
    flag, reasons, drafted_code = CASES[case["name"]]
    [card] = [c for c in body["cards"] if c["source"]["topic"]["code"] == flag]
    assert card["indicator"] == "critical"
    for reason in reasons:
        assert f"from the order's indication: {reason}" in card["detail"]
    created = [
        coding.get("code")
        for s in card.get("suggestions") or []
        for a in s["actions"]
        if a["type"] == "create"
        for coding in a["resource"]["code"]["coding"]
    ]
    assert drafted_code not in created, "the red flag proposes a second copy of the drafted study"

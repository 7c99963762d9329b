"""End to end, reasoning with partial facts (issue 9 point 4, engine/completions.py).

Newly diagnosed prostate cancer with GG1 and PSA 5.2 but no T category: no rating, one info card that
asks only for the T category and names the value that would change the answer (T3 or higher). The
same patient with cT2 and no sub-category: rated, with the T2 sub-category marked unknown on the
rating. A single PSA after prostatectomy: the card asks only for the PSA trend. The scenario modules
replay these cases over HTTP and the CLI; here they also go through the FHIR-server fallback, and the
card must name the deciding value.
"""

from __future__ import annotations

import pytest
from e2e_support import case_id, check, named_case_runs

DECIDING_VALUE = {
    "prostate-new-diagnosis-t-category-unknown-bone-scan": "T3 or higher",
    "prostate-new-diagnosis-t-category-unknown-psma-pet": "T3 or higher",
    "prostate-post-prostatectomy-single-psa-psma-pet": "PSA rising",
    "prostate-new-diagnosis-ct2-no-subcategory-bone-scan": None,  # rated: the card names no value
}
RUNS = [(c, h, way) for c, h, way in named_case_runs(DECIDING_VALUE) if way == "fallback"]


def test_every_case_is_in_the_fixtures():
    assert {c["name"] for c, _, _ in RUNS} == set(DECIDING_VALUE)


@pytest.mark.parametrize("case, hook, way", RUNS, ids=lambda v: case_id(v) if isinstance(v, dict) else v)
def test_partial_facts_through_the_fhir_fallback(case, hook, way, e2e):
    status, body, ids = getattr(e2e, way)(case, hook)
    check(case, ids, status, body, hook=hook)
    value = DECIDING_VALUE[case["name"]]
    asking = [c for c in body["cards"] if (c.get("extension") or {}).get("missingFacts")]
    if value is None:
        assert not asking
    else:
        [card] = asking
        assert value in card["summary"], card["summary"]

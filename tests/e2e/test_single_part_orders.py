"""End to end, single-part orders (issue 9 point 1): EHRs order one code at a time.

A part of a rated combination (CT chest alone, of CT chest/abdomen/pelvis) is answered with the
combination's evidence and the card says what the part misses, never silently; a non-contrast part
of a combination rated usually not appropriate for lack of contrast is usually not appropriate too;
the parts ordered together are the rated combination; with no recognised scenario nothing fires.
Over HTTP, the replay CLI and the FHIR-server fallback.
"""

from __future__ import annotations

import pytest
from e2e_support import all_cases, case_id, check, named_case_runs

NAMES = tuple(c["name"] for c in all_cases() if c["name"].startswith("single-part-")) + (
    "prostate-bcr-post-prostatectomy-psma-pet-flotufolastat",
    "prostate-bcr-post-prostatectomy-psma-pet-gozetotide",
)
RUNS = named_case_runs(NAMES)


def test_single_part_cases_fire_and_do_not_fire():
    names = {c["name"] for c, _, _ in RUNS}
    assert names == set(NAMES) and len(names) >= 15
    pamas = [o["pama"] for c, _, _ in RUNS for o in c["expected"]["orders"].values()]
    assert "no-criteria-apply" in pamas and "not-appropriate" in pamas and "appropriate" in pamas


@pytest.mark.parametrize("case, hook, way", RUNS, ids=lambda v: case_id(v) if isinstance(v, dict) else v)
def test_single_part_order(case, hook, way, e2e):
    status, body, ids = getattr(e2e, way)(case, hook)
    out = check(case, ids, status, body, hook=hook)
    for name, oexp in case["expected"]["orders"].items():
        if oexp.get("card") == "info" and oexp["pama"] == "no-criteria-apply":
            # never silent: the unrated part has a card, and it names the rated study or says none is rated
            cards = [c for c in body["cards"] if c["indicator"] == "info"]
            assert cards and all(len(c["summary"]) <= 140 for c in cards), name
        if oexp["pama"] != "none" and (hook != "order-select" or name in (case.get("selections") or [name])):
            # the rating names the study as ordered (the part, or the combination its parts made)
            assert out.ratings[ids[name]].get("procedure") == oexp["procedure"], name

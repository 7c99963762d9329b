"""End to end, order indications as the CDS Hooks sandbox and real EHRs send them.

The neoadjuvant breast patient without charted symptoms; the bone scan's reason is bone pain, sent
as a single reasonCode object with `coding: [{}]` before the code, as text only (`coding: [{}]` and
"New bone pain in the ribs", read with negation and uncertainty), or as a reasonReference (a single
object) to a Condition contained in the order. Same outcome as the tidy R4 list: ACR TopicId 235
variant 6, usually appropriate, over HTTP, the replay CLI and the FHIR-server fallback.
"""

from __future__ import annotations

import pytest
from e2e_support import all_cases, case_id, check, named_case_runs

SHAPES = (
    "indication-sandbox-single-object-reason-bone-scan",
    "indication-contained-condition-reason-bone-scan",
    "indication-sandbox-text-only-reason-bone-scan",
)
TIDY = "indication-breast-neoadjuvant-bone-pain-reason-bone-scan"
RUNS = named_case_runs(SHAPES)


def test_every_case_is_in_the_fixtures():
    assert {c["name"] for c, _, _ in RUNS} == set(SHAPES)


@pytest.mark.parametrize("case, hook, way", RUNS, ids=lambda v: case_id(v) if isinstance(v, dict) else v)
def test_sandbox_shaped_reason_gives_the_tidy_outcome(case, hook, way, e2e):
    status, body, ids = getattr(e2e, way)(case, hook)
    out = check(case, ids, status, body, hook=hook)
    [tidy] = [c for c in all_cases() if c["name"] == TIDY]
    t_status, t_body, t_ids = e2e.http(tidy, hook)
    tidy_out = check(tidy, t_ids, t_status, t_body, hook=hook)
    assert list(out.comparable()["ratings"].values()) == list(tidy_out.comparable()["ratings"].values())
    assert out.comparable()["cards"] == tidy_out.comparable()["cards"]

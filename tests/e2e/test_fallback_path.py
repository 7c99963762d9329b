"""The FHIR-server fallback (no prefetch) gives the same outcome as full prefetch, for every case."""

import pytest
from e2e_support import Outcome, all_cases, case_id, check

CASES = [(c, c["hooks"][0]) for c in all_cases()]


@pytest.mark.parametrize("case, hook", CASES, ids=case_id)
def test_fallback_matches_prefetch(case, hook, e2e):
    status, body, ids = e2e.fallback(case, hook)
    fallback = check(case, ids, status, body, hook=hook)
    status, body, ids = e2e.http(case, hook)
    assert status == 200
    assert fallback.comparable() == Outcome.read(body).comparable()

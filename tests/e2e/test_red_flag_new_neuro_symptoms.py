"""End to end, scenario `red-flag-new-neuro-symptoms`:
its cases (fixtures/cases), both hooks, via HTTP and through replay."""

import pytest
from e2e_support import case_hooks, case_id, check

CASES = case_hooks("red-flag-new-neuro-symptoms")


def test_scenario_has_cases():
    assert CASES


@pytest.mark.parametrize("case, hook", CASES, ids=case_id)
def test_over_http(case, hook, e2e):
    check(case, *_swap(e2e.http(case, hook)), hook=hook)


@pytest.mark.parametrize("case, hook", CASES, ids=case_id)
def test_through_replay_cli(case, hook, e2e):
    check(case, *_swap(e2e.cli(case, hook)), hook=hook)


def _swap(result):
    status, body, ids = result
    return ids, status, body

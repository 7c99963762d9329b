"""Shared machinery of the end-to-end tests: run a case through the service and check its expectations.

A case (fixtures/cases/*.json, schema in fixtures/schema/case.schema.json) is replayed three ways:
  - "http":     replay.run through the Flask test client, prefetch filled from discovery;
  - "cli":      `cds-service replay <case> --hook H --json` in-process (what a user runs);
  - "fallback": no prefetch; the FHIR server is the same bundle served by `responses`.
What the response says is read, and checked against the case's `expected`, in one place shared with
`cds-service verify`: cds_service/verify.py (`Outcome`, `check_response`). `check` here asserts on it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from cds_service.verify import Outcome, check_response

REPO = Path(__file__).resolve().parents[2]
CASES_DIR = REPO / "fixtures" / "cases"
FHIR_BASE = "https://fhir.replay.test/r4"
WAYS = ("http", "cli", "fallback")


def all_cases() -> list[dict[str, Any]]:
    cases = []
    for path in sorted(CASES_DIR.glob("*.json")):
        case = json.loads(path.read_text())
        case["_path"] = path
        cases.append(case)
    return cases


def primary_scenario(case: Mapping[str, Any]) -> str:
    scen = case["expected"]["scenario"]
    return scen[0] if isinstance(scen, list) else scen


def case_hooks(scenario: str) -> list[tuple[dict[str, Any], str]]:
    """(case, hook) pairs of the cases whose (first) expected scenario is `scenario`."""
    return [(c, h) for c in all_cases() if primary_scenario(c) == scenario for h in c["hooks"]]


def named_case_runs(names: Iterable[str]) -> list[tuple[dict[str, Any], str, str]]:
    """(case, hook, way) for every hook of the named cases, replayed each of the three ways."""
    wanted = set(names)
    return [
        (c, h, way) for c in all_cases() if c["name"] in wanted for h in c["hooks"] for way in WAYS
    ]


def case_id(value: Any) -> str:
    return value["name"] if isinstance(value, dict) else str(value)


# --- reading a response and checking expectations ---------------------------------------------------
# One implementation, shared with `cds-service verify` (cds_service/verify.py): the scenario, red-flag,
# pitfall and procedure ids come from the loaded knowledge base.


def check(case: Mapping[str, Any], order_ids: Mapping[str, str], status: int, body: Any,
          hook: str = "order-sign") -> Outcome:
    """Assert the response matches the case's expected outcome; order_ids maps order file -> id.

    Under order-select only the selected orders are rated; the others must carry no rating.
    """
    failures, out = check_response(case, order_ids, status, body, hook=hook)
    assert not failures, "\n".join(failures)
    assert out is not None
    return out


def scenario_tests(scenario: str) -> tuple[Any, Any, Any]:
    """The three tests every scenario module runs: it has cases; each case over HTTP; each through replay."""
    cases = case_hooks(scenario)

    def test_scenario_has_cases() -> None:
        assert cases, f"no fixture case exercises {scenario}"

    @pytest.mark.parametrize("case, hook", cases, ids=case_id)
    def test_over_http(case, hook, e2e) -> None:
        status, body, ids = e2e.http(case, hook)
        check(case, ids, status, body, hook=hook)

    @pytest.mark.parametrize("case, hook", cases, ids=case_id)
    def test_through_replay_cli(case, hook, e2e) -> None:
        status, body, ids = e2e.cli(case, hook)
        check(case, ids, status, body, hook=hook)

    return test_scenario_has_cases, test_over_http, test_through_replay_cli

"""Every scenario and pitfall rule in cards/ is exercised by a case that fires it and one that must not."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from e2e_support import all_cases

CARDS = Path(__file__).resolve().parents[2] / "cards"


def rule_ids() -> list[str]:
    ids = [yaml.safe_load(p.read_text())["id"] for p in sorted((CARDS / "scenarios").glob("*.yaml"))]
    pitfalls = CARDS / "pitfalls.yaml"
    if pitfalls.is_file():
        ids += [p["id"] for p in yaml.safe_load(pitfalls.read_text())["pitfalls"]]
    return ids


# An empty list (no cards/scenarios) fails test_knowledge_base_has_rules below: never a silent pass.


RULES = rule_ids() if (CARDS / "scenarios").is_dir() else []


def expectations() -> tuple[set[str], set[str]]:
    fired, absent = set(), set()
    for case in all_cases():
        exp = case["expected"]
        if isinstance(exp["scenario"], str):
            fired.add(exp["scenario"])
        fired.update(exp["red_flags"])
        absent.update(exp.get("scenario_absent", []), exp["red_flags_absent"])
        for order in exp["orders"].values():
            fired.update(order.get("pitfalls", []))
            absent.update(order.get("pitfalls_absent", []))
    return fired, absent


def test_knowledge_base_has_rules():
    assert (CARDS / "pitfalls.yaml").is_file(), "cards/pitfalls.yaml is missing"
    assert len(RULES) >= 8


@pytest.mark.parametrize("rule", RULES)
def test_rule_fires_in_one_case_and_not_in_another(rule):
    fired, absent = expectations()
    assert rule in fired, f"no case expects {rule} to fire"
    assert rule in absent, f"no look-alike case expects {rule} not to fire"

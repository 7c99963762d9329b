"""Which end-to-end fixture cases (fixtures/cases/*.json) exercise each rule, for rule pages and docs.

A case *fires* a rule when its expectation names the rule as the scenario, a red flag or a pitfall of
an order; it pins that the rule *does not fire* when the rule is listed as absent. Read from the
case files, so a case another author adds shows up without code changes. The fixtures ship with the
repository, not with an installed package: without them every rule simply lists no cases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CASES_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "cases"


@dataclass(frozen=True)
class RuleCases:
    fires: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()


@dataclass
class _Collect:
    fires: dict[str, list[str]] = field(default_factory=dict)
    absent: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: dict[str, list[str]], rule: str, case: str) -> None:
        names = kind.setdefault(rule, [])
        if case not in names:
            names.append(case)


def _as_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)] if isinstance(value, str) else []


def cases_by_rule(cases_dir: Path = DEFAULT_CASES_DIR) -> dict[str, RuleCases]:
    """rule id -> the case names that fire it and those that pin it absent, sorted by name."""
    seen = _Collect()
    for path in sorted(cases_dir.glob("*.json")) if cases_dir.is_dir() else ():
        try:
            case = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a broken case fails its own e2e test; the index just skips it
        name = str(case.get("name") or path.stem)
        exp = case.get("expected") or {}
        for rule in _as_list(exp.get("scenario")) + _as_list(exp.get("red_flags")):
            seen.add(seen.fires, rule, name)
        for order in (exp.get("orders") or {}).values():
            for rule in _as_list(order.get("pitfalls")):
                seen.add(seen.fires, rule, name)
            for rule in _as_list(order.get("pitfalls_absent")):
                seen.add(seen.absent, rule, name)
        for rule in _as_list(exp.get("scenario_absent")) + _as_list(exp.get("red_flags_absent")):
            seen.add(seen.absent, rule, name)
    rules = set(seen.fires) | set(seen.absent)
    return {
        rule: RuleCases(
            tuple(sorted(seen.fires.get(rule, ()))),
            tuple(sorted(set(seen.absent.get(rule, ())) - set(seen.fires.get(rule, ())))),
        )
        for rule in rules
    }

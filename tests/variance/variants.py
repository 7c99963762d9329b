"""Every (chart, transformation) pair that is meaningful, with what its outcome must be.

Three kinds of expectation:
  SAME          the variant re-encodes facts the chart holds: the outcome equals the canonical one;
  AS_IF_ABSENT  the variant marks facts refuted / entered in error / resolved: the outcome equals
                that of the same chart without those resources (computed, not guessed);
  Justified     a named difference with its reason (see JUSTIFIED below; keep these few).
Variants the service cannot get right yet are listed in XFAIL with exactly what is missing; they
run as strict xfails, so one that starts passing fails the suite until the entry is removed.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache

from tests.variance import transforms as T
from tests.variance.harness import Chart, Harness, Outcome, Run, charts

SAME = "same"
AS_IF_ABSENT = "as-if-absent"


@dataclass(frozen=True)
class Justified:
    """A named, justified difference from the canonical outcome: `expected` computes the outcome the
    variant must have (from the canonical chart, never from the variant's own run)."""

    name: str
    reason: str
    expected: Callable[[Variant, Runs], Outcome]


@dataclass(frozen=True)
class Variant:
    family: str
    name: str
    chart: Chart
    inputs: T.Inputs
    expect: str | Justified = SAME
    reference: T.Inputs | None = None  # AS_IF_ABSENT: the chart without the marked resources
    forbidden: frozenset[str] = field(default_factory=frozenset)  # "Type/id" that must not reach the rules

    @property
    def id(self) -> str:
        return f"{self.family}:{self.name}:{self.chart.key}"


def canonical_inputs(chart: Chart) -> T.Inputs:
    return T.Inputs(copy.deepcopy(chart.bundle), [copy.deepcopy(dict(o)) for o in chart.orders])


def _apply(transform: T.Transform, chart: Chart) -> T.Inputs | None:
    after = transform(canonical_inputs(chart))
    if after is None:
        return None
    if after.bundle == chart.bundle and after.orders == [dict(o) for o in chart.orders]:
        return None  # nothing was re-encoded: not a variant
    return after


def foreign_only_keys(v: Variant, runs: Runs) -> frozenset[str]:
    """Prefetch keys whose every matched entry in the variant is another patient's resource."""
    request = runs.harness.request(v.chart, v.inputs.bundle, tuple(v.inputs.orders))
    keys = set()
    for key, value in request["prefetch"].items():
        if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
            continue
        matched = [
            e["resource"]
            for e in value.get("entry") or []
            if (e.get("search") or {}).get("mode") != "include"
        ]
        if matched and all(str(r.get("id", "")).startswith(T.FOREIGN_PREFIX) for r in matched):
            keys.add(key)
    return frozenset(keys)


# Named, justified differences: (family, name, patient or "*") -> Justified. Keep these few.
def _foreign_records_left_out(v: Variant, runs: Runs) -> Outcome:
    base = runs.withheld(v.chart, foreign_only_keys(v, runs)).outcome
    if base.cards:
        return base  # the existing card's confidence section names the records left out
    return dataclasses.replace(
        base,
        scenarios=tuple(sorted({*base.scenarios, UNREADABLE})),
        cards=((INFO, UNREADABLE),),
    )


UNREADABLE, INFO = "unreadable-data", "info"
FOREIGN_RECORDS_LEFT_OUT = Justified(
    "another-patients-records-left-out-and-said-so",
    "another patient's records are dropped (never used: the rating, scenario and red flags are those of "
    "the chart without them) and the response says records were left out: where the call would otherwise "
    "be silent, with an information card (issue 8: a card that names what could not be used, not silence). "
    "A prefetch key whose every resource is another patient's is the EHR's answer to the wrong query, so "
    "that kind of data is treated as not obtained rather than as 'the patient has none'. Expected: the "
    "canonical chart with those keys left out of the prefetch, plus the information card if that call is "
    "silent",
    _foreign_records_left_out,
)
JUSTIFIED: Mapping[tuple[str, str, str], Justified] = {
    ("other-patient", form, "*"): FOREIGN_RECORDS_LEFT_OUT for form in T.OTHER_FORMS
}


def _justified(family: str, name: str, patient: str) -> Justified | None:
    return JUSTIFIED.get((family, name, patient)) or JUSTIFIED.get((family, name, "*"))


@cache
def all_variants() -> tuple[Variant, ...]:
    out: list[Variant] = []
    for chart in charts().values():
        for family, transforms in T.FAMILIES.items():
            if chart.families is not None and family not in chart.families:
                continue
            for name, transform in transforms.items():
                inputs = _apply(transform, chart)
                if inputs is None:
                    continue
                forbidden: frozenset[str] = frozenset()
                if family == "other-patient":
                    forbidden = frozenset(f"{r['resourceType']}/{r['id']}" for r in T.foreign_resources())
                out.append(
                    Variant(
                        family,
                        name,
                        chart,
                        inputs,
                        _justified(family, name, chart.key) or SAME,
                        forbidden=forbidden,
                    )
                )
        for target, states in T.STATES.items():
            if chart.families is not None and "status" not in chart.families:
                continue
            for state in states:
                inputs = _apply(T.marked(target, state), chart)
                if inputs is None:
                    continue
                reference = T.removed(target)(canonical_inputs(chart))
                out.append(
                    Variant(
                        "status",
                        f"{target}-{state}",
                        chart,
                        inputs,
                        AS_IF_ABSENT,
                        reference,
                        frozenset(T.target_refs(target, chart.bundle)),
                    )
                )
    return tuple(out)


# Variants that fail because something is not built yet: (test kind, family, name, patient or "*")
# -> what is missing. Test kinds: "outcome", "red-flag", "facts". Strict: a listed variant that
# passes fails the suite, so the list cannot go stale.
XFAIL: Mapping[tuple[str, str, str, str], str] = {}


# Charts for which the history-of-cancer red-flag check cannot pass yet: chart key -> what is missing.
XFAIL_HISTORY_ALONE: Mapping[str, str] = {}


def xfail_reason(variant: Variant, kind: str = "outcome") -> str | None:
    return XFAIL.get((kind, variant.family, variant.name, variant.chart.key)) or XFAIL.get(
        (kind, variant.family, variant.name, "*")
    )


class Runs:
    """Runs each chart input once per session (several tests look at the same variant)."""

    def __init__(self, harness: Harness):
        self.harness = harness
        self._canonical: dict[str, Run] = {}
        self._variant: dict[str, Run] = {}
        self._reference: dict[str, Run] = {}
        self._withheld: dict[str, Run] = {}

    def canonical(self, chart: Chart) -> Run:
        if chart.key not in self._canonical:
            self._canonical[chart.key] = self.harness.run(chart)
        return self._canonical[chart.key]

    def variant(self, v: Variant) -> Run:
        if v.id not in self._variant:
            self._variant[v.id] = self.harness.run(v.chart, v.inputs.bundle, tuple(v.inputs.orders))
        return self._variant[v.id]

    def withheld(self, chart: Chart, keys: frozenset[str]) -> Run:
        """The canonical chart with these prefetch keys left out by the EHR."""
        if not keys:
            return self.canonical(chart)
        cache_key = f"{chart.key}|{','.join(sorted(keys))}"
        if cache_key not in self._withheld:
            self._withheld[cache_key] = self.harness.run(chart, withhold=keys)
        return self._withheld[cache_key]

    def reference(self, v: Variant) -> Run:
        assert v.reference is not None
        if v.id not in self._reference:
            self._reference[v.id] = self.harness.run(v.chart, v.reference.bundle, tuple(v.reference.orders))
        return self._reference[v.id]

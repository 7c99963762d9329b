"""PSA series and laboratory series (ALP, AST, ALT, bilirubin, eGFR, creatinine, testosterone).

Only final / amended / corrected results count. Values are converted to the value set's canonical
unit with the factors listed in its file (`units`), or through the UCUM case-insensitive code of a
listed unit (`NG/ML`, see units.py); a result in a unit not listed there is not guessed at but
reported in data_issues. A comparator ("<0.1") keeps its bound as the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from cds_service.facts._util import Partial, first_date, fmt, period_start, ref
from cds_service.facts.selection import Hit
from cds_service.facts.units import case_sensitive
from cds_service.knowledge.valuesets import UCUM, ValueSet, ValueSets, canonical_system
from cds_service.model import Measurement, Resource

RESULT_STATUSES = frozenset({"final", "amended", "corrected"})
LAB_KEYS = ("alp", "ast", "alt", "bilirubin", "egfr", "creatinine", "testosterone")


def observation_date(obs: Resource):
    return first_date(
        obs.get("effectiveDateTime"),
        period_start(obs.get("effectivePeriod")),
        obs.get("effectiveInstant"),
        obs.get("issued"),
    )


def _factor(
    quantity: Mapping[str, Any], vs: ValueSet, fallback_unit: str | None = None
) -> tuple[float | None, str]:
    """Conversion factor to the canonical unit, trying the UCUM code, then the printed unit."""
    candidates = []
    if canonical_system(quantity.get("system")) == UCUM and quantity.get("code"):
        candidates.append(str(quantity["code"]).strip())
    for key in ("unit", "code"):
        if quantity.get(key):
            candidates.append(str(quantity[key]).strip())
    if not candidates and fallback_unit:
        candidates.append(fallback_unit)
    for unit in candidates:
        if unit in vs.units:
            return vs.units[unit], unit
    for unit in candidates:  # then the UCUM case-insensitive form (`NG/ML`), never a blind case fold
        folded = case_sensitive(unit)
        if folded is not None and folded in vs.units:
            return vs.units[folded], folded
    return None, candidates[0] if candidates else ""


_STRING_RESULT = re.compile(r"^\s*(<=|>=|<|>)?\s*(\d+(?:\.\d+)?)\s+(\S+)\s*$")


def _quantity_from_string(text: Any) -> dict[str, Any] | None:
    """Labs that send "<0.01 ng/mL" as a string: read it only when it names its unit, so the
    unit check still applies; a bare "<0.01" is not guessed at."""
    m = _STRING_RESULT.match(text) if isinstance(text, str) else None
    if not m:
        return None
    return {"value": float(m.group(2)), "comparator": m.group(1), "unit": m.group(3)}


def _number(quantity: Mapping[str, Any]) -> float | None:
    value = quantity.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            return float(str(value)) if value is not None else None
        except ValueError:
            return None
    return float(value)


def _measure(obs: Resource, vs: ValueSet, label: str) -> tuple[Measurement | None, str | None]:
    when = observation_date(obs)
    on = f" on {when.isoformat()}" if when else ""
    quantity = obs.get("valueQuantity")
    if not isinstance(quantity, Mapping):
        quantity = _quantity_from_string(obs.get("valueString"))
    if quantity is None:
        return None, f"{label}{on} ({ref(obs)}) has no numeric value; not used"
    value = _number(quantity)
    if value is None:
        return None, f"{label}{on} ({ref(obs)}) has no numeric value; not used"
    factor, unit = _factor(quantity, vs)
    if factor is None:
        return (
            None,
            f"{label} {fmt(value)} '{unit or 'no unit'}'{on} ({ref(obs)}): unit not recognised; not used",
        )
    low = high = None
    for rng in obs.get("referenceRange") or ():
        if not isinstance(rng, Mapping):
            continue
        for bound in ("low", "high"):
            q = rng.get(bound)
            n = _number(q) if isinstance(q, Mapping) else None
            if isinstance(q, Mapping) and n is not None:
                f, _ = _factor(q, vs, fallback_unit=unit)
                if f is not None:
                    if bound == "low":
                        low = n * f
                    else:
                        high = n * f
        break  # the first range is the one for this patient's population
    if high is None:
        high = vs.default_ref_high
    return (
        Measurement(
            value=round(value * factor, 6),
            unit=vs.unit or unit,
            date=when,
            ref_low=low,
            ref_high=high,
            source=ref(obs),
        ),
        None,
    )


def _counts(obs: Resource) -> bool:
    return obs.get("status") in RESULT_STATUSES


def _dedupe(series: Iterable[Measurement]) -> tuple[Measurement, ...]:
    seen: set[tuple[Any, float]] = set()
    out = []
    for m in sorted(series, key=lambda m: (m.date is None, m.date, m.value)):
        key = (m.date, round(m.value, 4))
        if key not in seen:
            seen.add(key)
            out.append(m)
    return tuple(out)


def extract_labs(hits: Iterable[Hit], valuesets: ValueSets) -> Partial:
    psa: list[Measurement] = []
    labs: dict[str, list[Measurement]] = {}
    issues: list[str] = []
    for hit in hits:
        obs = hit.resource
        keys = [k for k in ("psa", *LAB_KEYS) if k in hit.ids]
        if not keys or not _counts(obs):
            continue
        for key in keys:
            measurement, issue = _measure(obs, valuesets.sets[key], key.upper() if key == "psa" else key)
            if issue:
                issues.append(issue)
            if measurement is None:
                continue
            if key == "psa":
                psa.append(measurement)
            else:
                labs.setdefault(key, []).append(measurement)
    return Partial(
        psa=_dedupe(psa),
        labs={k: _dedupe(v) for k, v in labs.items()},
        issues=tuple(issues),
    )

"""Stage group, TNM categories, Gleason grade group, and mCODE HistoryOfMetastaticCancer.

Values are read from coded answers only; an answer code not in the value set leaves the field
unset and is reported (never parsed from display text). The latest dated result wins; two
different results on that date are a contradiction, reported and not resolved. A TNM M1 value
and a HistoryOfMetastaticCancer `true` add the metastatic-disease concept; `false` is kept as a
negation for the consistency check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from typing import Any

from cds_service.facts._util import Partial, add_evidence, freeze, ref
from cds_service.facts.labs import RESULT_STATUSES, observation_date
from cds_service.facts.selection import Hit
from cds_service.knowledge.valuesets import ValueSets
from cds_service.model import Evidence

TNM_SETS = {"tnm-t": "T", "tnm-n": "N", "tnm-m": "M"}
_PATTERN = re.compile(r"^\s*([1-5])\s*\+\s*([1-5])")


def _latest(
    values: list[tuple[date | None, Any, Evidence]], what: str, issues: list[str]
) -> tuple[Any, Evidence | None]:
    """Latest value, or None (with an issue) when the latest date carries two different values."""
    if not values:
        return None, None
    latest = max((d or date.min) for d, _, _ in values)
    at = [(v, e) for d, v, e in values if (d or date.min) == latest]
    distinct = {v for v, _ in at}
    if len(distinct) > 1:
        when = latest.isoformat() if latest != date.min else "an unknown date"
        issues.append(f"{what}: conflicting values {sorted(map(str, distinct))} on {when}; not used")
        return None, None
    return at[0]


def grade_group_from_gleason(obs: dict, valuesets: ValueSets) -> int | None:
    coded = valuesets.value_in("gleason-grade-group-values", obs.get("valueCodeableConcept"))
    if coded:
        return int(coded[0])
    text = obs.get("valueString")
    if isinstance(text, str):
        m = _PATTERN.match(text)
        if m:
            primary, secondary = int(m.group(1)), int(m.group(2))
            total = primary + secondary
            if total == 7:
                return 2 if primary == 3 else 3
            return _grade_from_total(total)
    total = obs.get("valueInteger")
    if total is None and isinstance(obs.get("valueQuantity"), dict):
        total = obs["valueQuantity"].get("value")
    if isinstance(total, int | float) and not isinstance(total, bool) and float(total).is_integer():
        return _grade_from_total(int(total))
    return None


def _grade_from_total(total: int) -> int | None:
    # ISUP 2014: <=6 -> 1, 8 -> 4, 9-10 -> 5; 7 depends on the primary pattern (3+4 = 2, 4+3 = 3)
    if 2 <= total <= 6:
        return 1
    return {8: 4, 9: 5, 10: 5}.get(total)


def extract_staging(hits: Iterable[Hit], valuesets: ValueSets) -> Partial:
    issues: list[str] = []
    stage_values: list = []
    tnm_values: dict[str, list] = {"T": [], "N": [], "M": []}
    grades: list = []
    concepts: dict[str, list[Evidence]] = {}
    negations: dict[str, list[Evidence]] = {}
    for hit in hits:
        obs = hit.resource
        if obs.get("status") not in RESULT_STATUSES:
            continue
        when = observation_date(obs)
        on = f" on {when.isoformat()}" if when else ""
        value_cc = obs.get("valueCodeableConcept")
        if "stage-group" in hit.ids:
            labels = valuesets.value_in("stage-group-values", value_cc)
            if labels:
                stage_values.append((when, str(labels[0]), Evidence(f"Stage {labels[0]}", when, ref(obs))))
            else:
                issues.append(f"stage group{on} ({ref(obs)}): value code not recognised; stage not used")
        for set_id, category in TNM_SETS.items():
            if set_id not in hit.ids:
                continue
            labels = [
                str(v) for v in valuesets.value_in("tnm-values", value_cc) if str(v).startswith(category)
            ]
            if labels:
                tnm_values[category].append((when, labels[0], Evidence(f"TNM {labels[0]}", when, ref(obs))))
            else:
                issues.append(
                    f"TNM {category} category{on} ({ref(obs)}): value code not recognised; not used"
                )
        if "gleason-grade-group" in hit.ids or "gleason-score" in hit.ids:
            group = grade_group_from_gleason(obs, valuesets)
            if group is None:
                issues.append(f"Gleason result{on} ({ref(obs)}) does not give a grade group; not used")
            else:
                grades.append((when, group, Evidence(f"Gleason grade group {group}", when, ref(obs))))
        if "history-of-metastatic-cancer" in hit.ids:
            flag = obs.get("valueBoolean")
            if not isinstance(flag, bool):
                issues.append(f"history of metastatic cancer{on} ({ref(obs)}) has no yes/no value; not used")
                continue
            evidence = Evidence(f"History of metastatic cancer: {'yes' if flag else 'no'}", when, ref(obs))
            add_evidence(concepts if flag else negations, "metastatic-disease", evidence)
    stage_group, _ = _latest(stage_values, "stage group", issues)
    tnm: dict[str, str] = {}
    for category, values in tnm_values.items():
        label, evidence = _latest(values, f"TNM {category}", issues)
        if label:
            tnm[category] = label
            if category == "M" and label.startswith("M1"):
                add_evidence(concepts, "metastatic-disease", evidence)
    grade_group, _ = _latest(grades, "Gleason grade group", issues)
    return Partial(
        concepts=freeze(concepts),
        stage_group=stage_group,
        tnm=tnm,
        grade_group=grade_group,
        issues=tuple(issues),
        negations=freeze(negations),
    )

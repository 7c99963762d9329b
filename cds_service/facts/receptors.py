"""Breast receptor status (ER, PR, HER2) and derived triple-negative status.

Results come from receptor Observations with a coded positive/negative answer (LOINC LA6576-8 /
LA6577-6 or SNOMED 10828004 / 260385009) and from ICD-10-CM Z17.x status Conditions. The latest
dated result wins (receptor status can change after therapy); two opposite results on that same
latest date are a contradiction: reported, not resolved.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from cds_service.facts._util import Partial, concept_label, freeze, ref
from cds_service.facts.conditions import condition_date, counts
from cds_service.facts.labs import RESULT_STATUSES, observation_date
from cds_service.facts.selection import Hit
from cds_service.knowledge.valuesets import ValueSets
from cds_service.model import Evidence

RECEPTOR_SETS = {"er-status": "er", "pr-status": "pr", "her2-status": "her2"}
NAMES = {"er": "ER", "pr": "PR", "her2": "HER2"}


@dataclass(frozen=True)
class Call:
    receptor: str
    result: str  # "positive" | "negative"
    date: date | None
    evidence: Evidence


def _observation_calls(hits: Iterable[Hit], valuesets: ValueSets) -> list[Call]:
    calls = []
    for hit in hits:
        obs = hit.resource
        receptors = [RECEPTOR_SETS[s] for s in hit.ids if s in RECEPTOR_SETS]
        if not receptors or obs.get("status") not in RESULT_STATUSES:
            continue
        answers = set(valuesets.value_in("receptor-answers", obs.get("valueCodeableConcept")))
        if len(answers) != 1:
            continue  # equivocal, uncoded or self-contradictory answer: nothing to read
        result = str(answers.pop())
        when = observation_date(obs)
        for receptor in receptors:
            text = f"{NAMES[receptor]} {result}"
            calls.append(Call(receptor, result, when, Evidence(text, when, ref(obs))))
    return calls


def _condition_calls(hits: Iterable[Hit], valuesets: ValueSets) -> list[Call]:
    calls = []
    for hit in hits:
        if "receptor-status-conditions" not in hit.ids or not counts(hit.resource):
            continue
        when = condition_date(hit.resource)
        label = concept_label(hit.resource.get("code"))
        for value in valuesets.value_in("receptor-status-conditions", hit.resource.get("code")):
            for pair in str(value).split(";"):
                receptor, result = pair.split("=")
                calls.append(Call(receptor, result, when, Evidence(label, when, ref(hit.resource))))
    return calls


def extract_receptors(
    observations: Iterable[Hit], conditions: Iterable[Hit], valuesets: ValueSets
) -> Partial:
    calls = _observation_calls(observations, valuesets) + _condition_calls(conditions, valuesets)
    receptors: dict[str, str] = {}
    chosen: dict[str, list[Evidence]] = {}
    issues: list[str] = []
    for receptor in ("er", "pr", "her2"):
        mine = [c for c in calls if c.receptor == receptor]
        if not mine:
            continue
        latest = max((c.date or date.min) for c in mine)
        last = [c for c in mine if (c.date or date.min) == latest]
        results = {c.result for c in last}
        if len(results) > 1:
            when = latest.isoformat() if latest != date.min else "an unknown date"
            issues.append(
                f"{NAMES[receptor]} is both positive and negative on {when}; receptor status not used"
            )
            continue
        receptors[receptor] = results.pop()
        chosen[receptor] = [c.evidence for c in last]
    concepts: dict[str, list[Evidence]] = {}
    if all(receptors.get(r) == "negative" for r in ("er", "pr", "her2")):
        concepts["triple-negative"] = [e for r in ("er", "pr", "her2") for e in chosen[r]]
    return Partial(concepts=freeze(concepts), receptors=receptors, issues=tuple(issues))

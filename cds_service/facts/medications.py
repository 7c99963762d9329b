"""Medication orders, administrations and statements -> MedicationFact per ingredient.

Codes: RxNorm ingredient, RxNorm clinical/branded drug (mapped to ingredients in
cards/medications.yaml), SNOMED substance; also a contained or referenced Medication.
`start` is the earliest date known: authoredOn, effective[x], or a dosage boundsPeriod.start.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from cds_service.facts._util import Partial, parse_date, period_start, ref
from cds_service.facts.selection import Hit
from cds_service.knowledge.valuesets import ValueSets
from cds_service.model import MedicationFact, Resource

COUNTED = {
    "MedicationRequest": frozenset({"active", "completed", "on-hold"}),
    "MedicationAdministration": frozenset({"in-progress", "completed", "on-hold"}),
    "MedicationStatement": frozenset({"active", "completed", "on-hold"}),
}


def start_date(resource: Resource) -> date | None:
    candidates = [
        resource.get("authoredOn"),
        resource.get("effectiveDateTime"),
        period_start(resource.get("effectivePeriod")),
    ]
    dosages = resource.get("dosageInstruction") or resource.get("dosage") or ()
    if isinstance(dosages, dict):  # MedicationAdministration.dosage is a single element
        dosages = ()
    for dosage in dosages:
        repeat = ((dosage or {}).get("timing") or {}).get("repeat") or {}
        candidates.append(period_start(repeat.get("boundsPeriod")))
    dates = [d for d in map(parse_date, candidates) if d is not None]
    return min(dates) if dates else None


def extract_medications(hits: Iterable[Hit], valuesets: ValueSets) -> Partial:
    facts = []
    for hit in hits:
        resource = hit.resource
        status = resource.get("status")
        if status not in COUNTED.get(str(resource.get("resourceType")), ()):
            continue
        start = start_date(resource)
        for ingredient in sorted(hit.ids):
            spec = valuesets.ingredients[ingredient]
            facts.append(MedicationFact(ingredient, spec.classes, start, str(status), ref(resource)))
    # the same resource can arrive twice (prefetch and a fallback query overlap)
    facts = list(dict.fromkeys(facts))
    facts.sort(key=lambda m: (m.start or date.min, m.ingredient))
    return Partial(medications=tuple(facts))

"""Medication orders, administrations and statements -> MedicationFact per ingredient.

Codes: RxNorm ingredient, RxNorm clinical/branded drug or brand name (mapped to ingredients in
cards/medications.yaml), SNOMED substance; also a contained or referenced Medication (selection.py
resolves it). `start` is the earliest date known: authoredOn, effective[x], or a dosage
boundsPeriod.start. A completed bilateral orchiectomy (value set `surgical-castration`) becomes a
permanent ADT fact: surgical castration is androgen deprivation for these rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from cds_service.facts._util import Partial, parse_date, period_start, ref
from cds_service.facts.procedures import performed
from cds_service.facts.selection import Hit
from cds_service.knowledge.valuesets import ValueSets
from cds_service.model import MedicationFact, Resource

# Statuses that say the patient received (or is receiving) the drug, per resource type. Everything
# else never counts: entered-in-error, cancelled, draft, not-taken (MedicationStatement), not-done
# (MedicationAdministration), intended (a plan, not treatment). `stopped` is kept: therapy given and
# then stopped still means "has been treated with" (predicates decide what is current).
COUNTED = {
    "MedicationRequest": frozenset({"active", "completed", "on-hold", "stopped", "unknown"}),
    "MedicationAdministration": frozenset({"in-progress", "completed", "on-hold", "stopped", "unknown"}),
    "MedicationStatement": frozenset({"active", "completed", "on-hold", "stopped", "unknown"}),
}
# A proposal or plan is not an order the patient received.
NOT_TREATMENT_INTENTS = frozenset({"proposal", "plan"})
SURGICAL_CASTRATION = "surgical-castration"  # procedure value set -> permanent ADT fact


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


def counts(resource: Resource) -> bool:
    """Whether a medication record says the drug was (or is being) given."""
    if resource.get("status") not in COUNTED.get(str(resource.get("resourceType")), ()):
        return False
    if resource.get("doNotPerform") is True:  # an order NOT to give it
        return False
    return resource.get("intent") not in NOT_TREATMENT_INTENTS


def _castration_facts(procedures: Iterable[Hit]) -> list[MedicationFact]:
    facts = []
    for hit in procedures:
        if SURGICAL_CASTRATION in hit.ids and hit.resource.get("status") == "completed":
            facts.append(
                MedicationFact(
                    SURGICAL_CASTRATION,
                    frozenset({"adt"}),
                    performed(hit.resource),
                    "completed",
                    ref(hit.resource),
                    permanent=True,
                    label="bilateral orchiectomy",
                )
            )
    return facts


def extract_medications(
    hits: Iterable[Hit], valuesets: ValueSets, procedures: Iterable[Hit] = ()
) -> Partial:
    facts = []
    for hit in hits:
        resource = hit.resource
        if not counts(resource):
            continue
        start = start_date(resource)
        for ingredient in sorted(hit.ids):
            spec = valuesets.ingredients[ingredient]
            facts.append(
                MedicationFact(ingredient, spec.classes, start, str(resource["status"]), ref(resource))
            )
    facts.extend(_castration_facts(procedures))
    # the same resource can arrive twice (prefetch and a fallback query overlap)
    facts = list(dict.fromkeys(facts))
    facts.sort(key=lambda m: (m.start or date.min, m.ingredient))
    return Partial(medications=tuple(facts))

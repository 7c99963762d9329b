"""Completed non-imaging procedures: prostatectomy, radiotherapy, breast surgery, dialysis."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from cds_service.facts._util import (
    Partial,
    add_evidence,
    concept_label,
    first_date,
    freeze,
    period_start,
    ref,
)
from cds_service.facts.selection import Hit
from cds_service.model import Evidence, ProcedureFact, Resource

# value-set id -> ProcedureFact.concept
PROCEDURE_SETS = {
    "radical-prostatectomy": "radical-prostatectomy",
    "radiotherapy": "radiotherapy",
    "breast-surgery": "breast-surgery",
    "dialysis-procedure": "dialysis",
}


def performed(resource: Resource) -> date | None:
    return first_date(resource.get("performedDateTime"), period_start(resource.get("performedPeriod")))


def extract_procedures(hits: Iterable[Hit]) -> Partial:
    facts: list[ProcedureFact] = []
    concepts: dict[str, list[Evidence]] = {}
    for hit in hits:
        resource = hit.resource
        if resource.get("status") != "completed":
            continue
        when = performed(resource)
        for set_id in sorted(hit.ids & PROCEDURE_SETS.keys()):
            concept = PROCEDURE_SETS[set_id]
            facts.append(ProcedureFact(concept, when, ref(resource)))
            if concept == "dialysis":
                evidence = Evidence(concept_label(resource.get("code")), when, ref(resource))
                add_evidence(concepts, "dialysis", evidence)
    # the same resource can arrive twice (prefetch and a fallback query overlap)
    facts = list(dict.fromkeys(facts))
    facts.sort(key=lambda p: (p.date or date.min, p.concept))
    return Partial(procedures=tuple(facts), concepts=freeze(concepts))

"""Conditions -> concepts (value-set ids) with evidence.

Counted: clinicalStatus active / recurrence / relapse, or absent without an abatement; and
verificationStatus not refuted / entered-in-error. Receptor status codes (Z17.x) are read by the
receptors stage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date

from cds_service.facts._util import Partial, add_evidence, concept_label, first_date, freeze, ref, status_code
from cds_service.facts.selection import Hit
from cds_service.facts.text import affirmed_concepts
from cds_service.knowledge.valuesets import ValueSets
from cds_service.model import Evidence, Resource

ACTIVE = frozenset({"active", "recurrence", "relapse"})
EXCLUDED_VERIFICATION = frozenset({"refuted", "entered-in-error"})
HANDLED_ELSEWHERE = frozenset({"receptor-status-conditions"})


def counts(condition: Resource) -> bool:
    if status_code(condition.get("verificationStatus")) in EXCLUDED_VERIFICATION:
        return False
    clinical = status_code(condition.get("clinicalStatus"))
    if clinical is None:
        abated = any(k.startswith("abatement") for k in condition)
        return not abated
    return clinical in ACTIVE


def condition_date(condition: Resource) -> date | None:
    period = condition.get("onsetPeriod") or {}
    return first_date(condition.get("onsetDateTime"), period.get("start"), condition.get("recordedDate"))


def metastasis_sites(condition: Resource, valuesets: ValueSets) -> list[tuple[str, str]]:
    """(site concept, site label) from the bodySite of a secondary-cancer Condition."""
    out = []
    for site in condition.get("bodySite") or ():
        for concept in valuesets.value_in("metastasis-body-sites", site):
            out.append((str(concept), concept_label(site)))
    return out


def condition_texts(condition: Resource) -> list[str]:
    """code.text, then each note text: what a Condition without a usable code says."""
    concept = condition.get("code")
    texts = [concept.get("text")] if isinstance(concept, Mapping) else []
    texts += [n.get("text") for n in condition.get("note") or () if isinstance(n, Mapping)]
    return [t for t in texts if isinstance(t, str) and t.strip()]


def extract_text_conditions(hits: Iterable[Hit], valuesets: ValueSets) -> Partial:
    """Conditions with no usable code: concepts read from their text, counted like coded ones
    (clinicalStatus / verificationStatus), each marked from_text."""
    concepts: dict[str, list[Evidence]] = {}
    for hit in hits:
        condition = hit.resource
        if not counts(condition):
            continue
        when = condition_date(condition)
        for text in condition_texts(condition):
            found = affirmed_concepts(text, when, ref(condition), targets=valuesets.text_targets)
            for concept, evidence in found.items():
                for e in evidence:
                    add_evidence(concepts, concept, e)
    return Partial(concepts=freeze(concepts))


def extract_conditions(hits: Iterable[Hit], valuesets: ValueSets) -> Partial:
    concepts: dict[str, list[Evidence]] = {}
    for hit in hits:
        condition = hit.resource
        if not counts(condition):
            continue
        when = condition_date(condition)
        evidence = Evidence(text=concept_label(condition.get("code")), date=when, source=ref(condition))
        for concept in hit.ids - HANDLED_ELSEWHERE:
            add_evidence(concepts, concept, evidence)
        if "metastatic-disease" in hit.ids:
            for concept, site in metastasis_sites(condition, valuesets):
                add_evidence(
                    concepts, concept, Evidence(f"{evidence.text}, site {site}", when, evidence.source)
                )
    return Partial(concepts=freeze(concepts))

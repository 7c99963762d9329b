"""FHIR resources -> Facts: a pipeline of small pure sub-stages.

select (by code on raw JSON, validate only what matched) -> patient, conditions, symptom
observations, labs (PSA and labs), receptors, staging, medications, procedures, imaging, the draft
orders' indications -> consistency checks -> Facts -> derived facts (a history of cancer with
evidence of active disease counts as active cancer). Indication facts merge into `concepts` like
chart facts (dated today, `Evidence.from_order`), so a red flag stated only in the order still
raises its card.
"""

from __future__ import annotations

from collections.abc import Iterable

from cds_service.facts import selection, text
from cds_service.facts._util import Partial
from cds_service.facts.conditions import extract_conditions, extract_text_conditions
from cds_service.facts.consistency import contradictions
from cds_service.facts.derived import derive_active_cancer
from cds_service.facts.imaging import extract_imaging
from cds_service.facts.indication import extract_indication
from cds_service.facts.labs import extract_labs
from cds_service.facts.medications import extract_medications
from cds_service.facts.patient import demographics
from cds_service.facts.procedures import extract_procedures
from cds_service.facts.receptors import extract_receptors
from cds_service.facts.selection import select
from cds_service.facts.staging import extract_staging
from cds_service.facts.symptoms import extract_symptom_observations
from cds_service.knowledge.valuesets import ValueSets
from cds_service.model import Evidence, Facts, PatientRecord, Resource


def _merge_concepts(parts: Iterable[Partial], attr: str) -> dict[str, tuple[Evidence, ...]]:
    merged: dict[str, list[Evidence]] = {}
    for part in parts:
        for concept, evidence in getattr(part, attr).items():
            bucket = merged.setdefault(concept, [])
            bucket.extend(e for e in evidence if e not in bucket)
    return {k: tuple(v) for k, v in sorted(merged.items())}


# the fact kinds of the sub-stages in `parts` below, in the same order
_PART_NAMES = (
    "conditions", "symptoms", "condition-text", "labs", "receptors", "staging", "medications",
    "procedures", "imaging", "order-indication",
)


def extract_facts(
    record: PatientRecord, valuesets: ValueSets, orders: Iterable[Resource] = ()
) -> Facts:
    """`orders`: the draft orders of the hook call, whose reasonCode / reasonReference are read."""
    chosen = select(record, valuesets)
    age, sex = demographics(record.patient, record.as_of)
    labs = extract_labs(chosen.observations, valuesets)
    receptors = extract_receptors(chosen.observations, chosen.conditions, valuesets)
    staging = extract_staging(
        chosen.observations, chosen.conditions, valuesets, record.resources.get("Observation", ())
    )
    medications = extract_medications(chosen.medications, valuesets, chosen.procedures)
    procedures = extract_procedures(chosen.procedures)
    imaging = extract_imaging(chosen.reports, chosen.procedures, valuesets)
    parts = (
        extract_conditions(chosen.conditions, valuesets),
        extract_symptom_observations(chosen.symptoms, valuesets),
        extract_text_conditions(chosen.text_conditions, valuesets),
        labs,
        receptors,
        staging,
        medications,
        procedures,
        imaging,
        extract_indication(orders, record, valuesets),
    )
    concepts = _merge_concepts(parts, "concepts")
    negations = _merge_concepts(parts, "negations")
    issues = list(chosen.issues)
    # The same issues by kind of fact, as codes (the audit and the governance view count them; the
    # issue texts may quote record references and stay out of kept state).
    unreadable = ["records"] if chosen.issues else []
    for name, part in zip(_PART_NAMES, parts, strict=True):
        issues.extend(part.issues)
        if part.issues:
            unreadable.append(name)
    conflicts = contradictions(concepts, negations, receptors.receptors)
    issues.extend(conflicts)
    if conflicts:
        unreadable.append("contradictory")
    patient = record.patient or {}
    if patient.get("deceasedBoolean") is True or patient.get("deceasedDateTime"):
        issues.append("Patient is recorded as deceased")
    if record.not_this_patient:
        unreadable.append("not-this-patient")
        issues.append(
            f"{record.not_this_patient} record(s) sent with this call belong to another patient or "
            "name no patient; left out, so the chart may be incomplete"
        )
    if record.incomplete:
        issues.append("data incomplete: could not fetch " + ", ".join(record.incomplete))
        unreadable += [f"not-retrieved:{key}" for key in record.incomplete]
    facts = Facts(
        as_of=record.as_of,
        age=age,
        sex=sex,
        concepts=concepts,
        psa=labs.psa,
        labs=labs.labs,
        receptors=receptors.receptors,
        stage_group=staging.stage_group,
        tnm=staging.tnm,
        grade_group=staging.grade_group,
        staging_evidence=staging.staging_evidence,
        medications=medications.medications,
        procedures=procedures.procedures,
        imaging=imaging.imaging,
        data_issues=tuple(dict.fromkeys(issues)),
        unreadable=tuple(dict.fromkeys(unreadable)),
    )
    return derive_active_cancer(facts)


def check_installed() -> None:
    """The text reader's packages are installed (checked at start, loaded at first use)."""
    text.check_installed()


def warm_up(valuesets: ValueSets | None = None) -> None:
    """Build the R4B validators and the text pipeline once, at application start, so the first
    hook call pays for neither."""
    selection.warm_up()
    text.warm_up(valuesets.text_targets if valuesets is not None else None)


__all__ = ["check_installed", "extract_facts", "warm_up"]

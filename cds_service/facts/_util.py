"""Small readers over raw FHIR JSON shared by the facts sub-stages."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cds_service.knowledge.valuesets import canonical_system, coding_list
from cds_service.model import Evidence, ImagingFact, Measurement, MedicationFact, ProcedureFact, Resource

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
_SYSTEM_LABELS = {
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://snomed.info/sct": "SNOMED",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://www.ama-assn.org/go/cpt": "CPT",
    "urn:oid:2.16.840.1.113883.6.285": "HCPCS",
    "http://dicom.nema.org/resources/ontology/DCM": "DICOM",
}


def parse_date(value: Any) -> date | None:
    """FHIR date/dateTime/instant -> date. Partial dates ("2024", "2024-05") take the first day:
    good enough for ordering and for the month-scale windows the rules use."""
    if not isinstance(value, str):
        return None
    m = _DATE.match(value.strip())
    if not m:
        return None
    try:
        return date(int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1))
    except ValueError:
        return None


def first_date(*values: Any) -> date | None:
    for value in values:
        d = parse_date(value)
        if d is not None:
            return d
    return None


def period_start(period: Any) -> Any:
    return period.get("start") if isinstance(period, Mapping) else None


def ref(resource: Resource) -> str | None:
    """ "Type/id" of a resource: a resource reference, never a patient identifier."""
    rid = resource.get("id")
    return f"{resource.get('resourceType')}/{rid}" if rid else None


def id_hash(resource: Resource) -> str:
    """Short stable hash of a resource id, for log lines that must not carry identifiers."""
    return hashlib.sha256(str(resource.get("id", "")).encode()).hexdigest()[:10]


def codings(concept: Any) -> Iterable[Mapping[str, Any]]:
    for coding in coding_list(concept):  # a non-array `coding` (a number...) is skipped
        if isinstance(coding, Mapping):
            yield coding


def concept_label(concept: Any) -> str:
    """Human text for evidence: the CodeableConcept text or first display, plus its first code.
    Display text is shown to clinicians, never matched."""
    name = concept.get("text") if isinstance(concept, Mapping) else None
    code_part = ""
    for coding in codings(concept):
        name = name or coding.get("display")
        if not code_part and coding.get("code"):
            label = _SYSTEM_LABELS.get(
                canonical_system(coding.get("system")) or "", coding.get("system") or "?"
            )
            code_part = f"{label} {coding.get('code')}"
    name = name or "coded entry"
    return f"{name} ({code_part})" if code_part else name


def status_code(concept: Any) -> str | None:
    for coding in codings(concept):
        if coding.get("code"):
            return str(coding["code"])
    return None


def fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


# Evidence.text never repeats the date: it is in Evidence.date, and the cards render
# "<text> on <date>".


@dataclass(frozen=True)
class Partial:
    """What one sub-stage found; `merge` folds these into Facts."""

    concepts: Mapping[str, tuple[Evidence, ...]] = field(default_factory=dict)
    psa: tuple[Measurement, ...] = ()
    labs: Mapping[str, tuple[Measurement, ...]] = field(default_factory=dict)
    receptors: Mapping[str, str] = field(default_factory=dict)
    stage_group: str | None = None
    tnm: Mapping[str, str] = field(default_factory=dict)
    grade_group: int | None = None
    staging_evidence: Mapping[str, Evidence] = field(default_factory=dict)
    medications: tuple[MedicationFact, ...] = ()
    procedures: tuple[ProcedureFact, ...] = ()
    imaging: tuple[ImagingFact, ...] = ()
    issues: tuple[str, ...] = ()
    # concept -> evidence that it is ABSENT (e.g. HistoryOfMetastaticCancer = false), for cross-checks
    negations: Mapping[str, tuple[Evidence, ...]] = field(default_factory=dict)


def add_evidence(concepts: dict[str, list[Evidence]], concept: str, evidence: Evidence) -> None:
    items = concepts.setdefault(concept, [])
    if evidence not in items:
        items.append(evidence)


def freeze(concepts: Mapping[str, list[Evidence]]) -> dict[str, tuple[Evidence, ...]]:
    return {k: tuple(sorted(v, key=lambda e: (e.date or date.min, e.text))) for k, v in concepts.items()}

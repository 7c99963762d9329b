"""Data passed between the pipeline stages.

The protocol layer builds a `HookRequest` and a `PatientRecord`; the engine turns them into
`Facts`, recognises `ImagingOrder`s, and answers with an `EngineResult`. Every stage is a pure
function over these frozen values, so each can be tested without Flask or a network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from cds_service.identity import PatientIdentity

Resource = Mapping[str, Any]  # one FHIR resource as parsed JSON


@dataclass(frozen=True)
class HookRequest:
    """The parts of a validated CDS Hooks call that the engine reads."""

    hook: str  # "order-select" | "order-sign"
    hook_instance: str
    service_id: str
    patient_id: str
    user_id: str
    draft_orders: tuple[Resource, ...]  # every resource of context.draftOrders, as sent
    selections: tuple[str, ...] = ()  # "ServiceRequest/id" references (order-select only)
    encounter_id: str | None = None
    base_url: str = "http://localhost:8080"  # absolute root of this service, for card links


@dataclass(frozen=True)
class PatientRecord:
    """FHIR data gathered from prefetch and/or the EHR's FHIR server, grouped by resourceType.

    Resources are raw JSON: the facts stage selects by code first and validates with the
    fhir.resources R4B models only what the rules read (validating everything is too slow).
    """

    patient: Resource | None
    resources: Mapping[str, tuple[Resource, ...]]  # "Condition" -> (...), "Observation" -> (...)
    as_of: date  # "today" for the rules (flare windows, PSA recency); fixed in tests and replay
    incomplete: tuple[str, ...] = ()  # prefetch keys that could not be had (degraded data)
    # Who "the patient" is for this call (id, identifiers, Bundle fullUrls); None: taken from
    # `patient`. The facts stage re-checks every resource it reads against it.
    identity: PatientIdentity | None = None
    # Resources the protocol layer left out because they are not this patient's (another patient,
    # unresolvable or missing subject): counted, never used; a count > 0 lowers confidence.
    not_this_patient: int = 0


# --- Facts: what the chart says, in the knowledge base's own vocabulary -----------------------


@dataclass(frozen=True)
class Evidence:
    """A human-readable reason a fact holds, shown in card detail ("PSA 4.2 ng/mL on 2026-10-01")."""

    text: str
    date: date | None = None
    source: str | None = None  # "Observation/psa-3": a resource reference, never a patient id
    # Provenance, shown on cards and used by the engine: a fact read from free text (report
    # conclusion, problem text) carries lower confidence and may never by itself lower a rating;
    # a fact from the order's own indication (reasonCode/reasonReference) is dated today.
    from_text: bool = False
    from_order: bool = False


@dataclass(frozen=True)
class Measurement:
    value: float
    unit: str  # normalised unit of the concept (PSA: ng/mL, eGFR: mL/min/1.73m2, enzymes: U/L)
    date: date | None
    ref_low: float | None = None
    ref_high: float | None = None  # from Observation.referenceRange, else the documented default
    source: str | None = None


@dataclass(frozen=True)
class MedicationFact:
    ingredient: str  # knowledge-base ingredient id, e.g. "leuprolide"
    classes: frozenset[str]  # "adt", "arpi", "chemotherapy", "her2-targeted", ...
    start: date | None
    status: str  # FHIR MedicationRequest/Administration/Statement status
    source: str | None = None
    # Surgical castration (bilateral orchiectomy) is androgen deprivation for good: it never ages
    # out of the "current therapy" window. `label` names what the record said, for the card.
    permanent: bool = False
    label: str | None = None


@dataclass(frozen=True)
class ProcedureFact:
    concept: str  # value-set id, e.g. "radical-prostatectomy", "radiotherapy", "breast-surgery"
    date: date | None
    source: str | None = None


@dataclass(frozen=True)
class ImagingFact:
    """A prior imaging result (DiagnosticReport / Procedure) the rules can compare against."""

    procedure: str  # catalog procedure id or modality id, e.g. "bone-scan-whole-body"
    date: date | None
    findings: frozenset[str]  # e.g. {"bone-metastases"}, {"no-bone-metastases"}, {"stable"}
    conclusion: str | None = None
    source: str | None = None
    from_text: bool = False  # findings read from the report text (conclusion / presentedForm)


@dataclass(frozen=True)
class Facts:
    as_of: date
    age: int | None = None
    sex: str | None = None  # administrative gender
    # value-set id -> evidence, for every coded condition / symptom / finding present and active
    concepts: Mapping[str, tuple[Evidence, ...]] = field(default_factory=dict)
    psa: tuple[Measurement, ...] = ()  # ng/mL, oldest first
    labs: Mapping[str, tuple[Measurement, ...]] = field(default_factory=dict)  # "alp" -> oldest first
    receptors: Mapping[str, str] = field(default_factory=dict)  # "er"|"pr"|"her2" -> "positive"|"negative"
    stage_group: str | None = None  # "0", "I", "IA", "IIA", "IIB", "III", "IIIC", "IV"
    tnm: Mapping[str, str] = field(default_factory=dict)  # "T" -> "T2a", "N" -> "N0", "M" -> "M1b"
    grade_group: int | None = None  # ISUP 1-5
    # where stage_group, tnm and grade_group came from: "stage_group" / "T" / "N" / "M" /
    # "grade_group" -> the evidence of the value used (from_text when read from written notation)
    staging_evidence: Mapping[str, Evidence] = field(default_factory=dict)
    medications: tuple[MedicationFact, ...] = ()
    procedures: tuple[ProcedureFact, ...] = ()
    imaging: tuple[ImagingFact, ...] = ()
    data_issues: tuple[str, ...] = ()  # contradictions / unreadable data that lower confidence
    # the kinds of fact behind data_issues, as codes ("labs", "staging", "not-retrieved:conditions"):
    # what the audit keeps of them (the texts quote record references)
    unreadable: tuple[str, ...] = ()

    def has(self, concept: str) -> bool:
        return concept in self.concepts

    @property
    def has_text(self) -> bool:
        """Whether any fact was read from free text (report, problem or order-reason text)."""
        return any(s.from_text for s in self.imaging) or any(
            e.from_text for evidence in self.concepts.values() for e in evidence
        )

    def without_text(self) -> Facts:
        """The facts with everything read from free text removed: a concept stays only with coded
        evidence, an imaging result only if its findings were coded. The engine rates with these
        when text alone would make an order "usually not appropriate"."""
        if not self.has_text:
            return self
        concepts = {
            concept: kept
            for concept, evidence in self.concepts.items()
            if (kept := tuple(e for e in evidence if not e.from_text))
        }
        imaging = tuple(s for s in self.imaging if not s.from_text)
        return replace(self, concepts=concepts, imaging=imaging)


# --- Orders and results ---------------------------------------------------------------------


@dataclass(frozen=True)
class ImagingOrder:
    reference: str  # "ServiceRequest/<id>"
    resource: Resource  # the draft order exactly as sent (returned whole in update actions)
    procedure_id: str | None  # catalog id; None when the order is imaging but not resolvable
    unresolved_reason: str | None = None  # e.g. "PET/CT tracer not coded"


@dataclass(frozen=True)
class EngineResult:
    cards: tuple[Mapping[str, Any], ...] = ()
    system_actions: tuple[Mapping[str, Any], ...] = ()
    rule_ids: tuple[str, ...] = ()  # fired rules, for the structured log line
    # card uuid -> {"rule_id", "scenario_id", "knowledge_version", "procedure_id", "indicator",
    # "order_codes"}:
    # feedback links, and the order codes of the snooze key (protocol/snooze.py)
    card_index: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # For the audit record and the governance view (codes only): the imaging ServiceRequests this
    # call rates, the facts its cards asked to record (requirement / unknown-fact ids), the kinds of
    # chart data that could not be read or retrieved, and "system|code" of imaging order codes that
    # are not in the procedure catalog.
    orders: int = 0
    missing_facts: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = ()
    unknown_codes: tuple[str, ...] = ()

"""Builders with realistic defaults for engine tests: draft orders, requests and facts."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from typing import Any

from cds_service.engine import EngineOptions, evaluate_facts
from cds_service.knowledge import load_knowledge
from cds_service.model import (
    EngineResult,
    Evidence,
    Facts,
    HookRequest,
    ImagingFact,
    Measurement,
    MedicationFact,
    PatientRecord,
    ProcedureFact,
)

TODAY = date(2026, 11, 22)
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
KNOWLEDGE = load_knowledge()


def days_ago(n: int) -> date:
    return TODAY - timedelta(days=n)


def service_request(rid: str, *codes: tuple[str, str], reason: str = "12584003", **extra: Any) -> dict:
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": s, "code": c} for s, c in codes]},
        "reasonCode": [{"coding": [{"system": SNOMED, "code": reason}]}],
    }
    resource.update(extra)
    return resource


def cpt(rid: str, code: str, **extra: Any) -> dict:
    return service_request(rid, (CPT, code), **extra)


def request(*orders: dict, hook: str = "order-sign", selections: tuple[str, ...] = ()) -> HookRequest:
    return HookRequest(
        hook=hook,
        hook_instance="hi-1",
        service_id="imaging-appropriateness",
        patient_id="p1",
        user_id="Practitioner/u1",
        draft_orders=tuple(orders),
        selections=selections,
        base_url="https://cds.example.org",
    )


def record(incomplete: tuple[str, ...] = ()) -> PatientRecord:
    return PatientRecord(
        patient={"resourceType": "Patient", "id": "p1"}, resources={}, as_of=TODAY, incomplete=incomplete
    )


def counter_uuid() -> EngineOptions:
    seq = itertools.count(1)
    return EngineOptions(new_uuid=lambda: f"00000000-0000-4000-8000-{next(seq):012d}")


def facts(*concepts: str, **kw: Any) -> Facts:
    ev = {c: (Evidence(f"{c} (coded)", days_ago(10), f"Condition/{c}"),) for c in concepts}
    return Facts(as_of=TODAY, concepts=ev, **kw)


def psa(*values: float, step: int = 60) -> tuple[Measurement, ...]:
    n = len(values)
    return tuple(Measurement(v, "ng/mL", days_ago(step * (n - i))) for i, v in enumerate(values))


def lab(value: float, high: float | None, unit: str = "U/L") -> tuple[Measurement, ...]:
    return (Measurement(value, unit, days_ago(5), ref_high=high),)


def med(ingredient: str, *classes: str, started: int = 400, status: str = "active") -> MedicationFact:
    return MedicationFact(ingredient, frozenset(classes), days_ago(started), status)


def proc(concept: str, ago: int = 700) -> ProcedureFact:
    return ProcedureFact(concept, days_ago(ago))


def prior(modality: str, *findings: str, ago: int = 120) -> ImagingFact:
    return ImagingFact(modality, days_ago(ago), frozenset(findings))


def run(
    f: Facts,
    *orders: dict,
    hook: str = "order-sign",
    selections: tuple[str, ...] = (),
    options: EngineOptions | None = None,
    rec: PatientRecord | None = None,
) -> EngineResult:
    return evaluate_facts(
        request(*orders, hook=hook, selections=selections),
        rec or record(),
        f,
        KNOWLEDGE,
        options or counter_uuid(),
    )


def pama(result: EngineResult) -> dict[str, str]:
    """ServiceRequest id -> PAMA rating code from the update systemActions."""
    out = {}
    for action in result.system_actions:
        ext = {e["url"]: e for e in action["resource"]["extension"]}
        code = ext["http://fhir.org/argonaut/Extension/pama-rating"]["valueCodeableConcept"]["coding"][0][
            "code"
        ]
        out[action["resource"]["id"]] = code
    return out


def ours(action: dict) -> dict[str, str]:
    ext = next(e for e in action["resource"]["extension"] if e["url"].endswith("imaging-appropriateness"))
    return {e["url"]: e.get("valueCode") or e.get("valueString") for e in ext["extension"]}

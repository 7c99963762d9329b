"""Small hand-written FHIR JSON builders for the facts-stage tests."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from cds_service.knowledge.valuesets import ValueSets, load_valuesets
from cds_service.model import PatientRecord

CARDS = Path(__file__).resolve().parents[2] / "cards"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
LNC = "http://loinc.org"
RXN = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "urn:oid:2.16.840.1.113883.6.285"
AS_OF = date(2026, 11, 22)
_ids = itertools.count(1)


@pytest.fixture(scope="session")
def valuesets() -> ValueSets:
    return load_valuesets(CARDS)


def cc(*codings: tuple[str, str], text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": s, "code": c} for s, c in codings]}
    if text:
        out["text"] = text
    return out


def condition(*codings, clinical="active", verification="confirmed", onset="2026-01-10", **extra):
    res: dict[str, Any] = {
        "resourceType": "Condition",
        "id": f"c{next(_ids)}",
        "subject": {"reference": "Patient/p1"},
        "code": cc(*codings),
        "onsetDateTime": onset,
    }
    if clinical:
        res["clinicalStatus"] = cc(("http://terminology.hl7.org/CodeSystem/condition-clinical", clinical))
    if verification:
        res["verificationStatus"] = cc(
            ("http://terminology.hl7.org/CodeSystem/condition-ver-status", verification)
        )
    res.update(extra)
    return res


def observation(*codings, when="2026-10-01", status="final", **value):
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"o{next(_ids)}",
        "status": status,
        "subject": {"reference": "Patient/p1"},
        "code": cc(*codings),
        "effectiveDateTime": when,
    }
    res.update(value)
    return res


def quantity(value, unit, ucum: str | None = None):
    q: dict[str, Any] = {"value": value, "unit": unit}
    if ucum:
        q.update(system=UCUM, code=ucum)
    return q


def record(*resources, patient=None, as_of=AS_OF, incomplete=()) -> PatientRecord:
    grouped: dict[str, list] = defaultdict(list)
    for res in resources:
        grouped[res["resourceType"]].append(res)
    return PatientRecord(
        patient=patient,
        resources={k: tuple(v) for k, v in grouped.items()},
        as_of=as_of,
        incomplete=incomplete,
    )

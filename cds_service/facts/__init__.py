"""FHIR resources -> Facts.

Placeholder until the facts stage lands; contract: `extract_facts(record, valuesets) -> Facts`.
"""

from __future__ import annotations

from cds_service.knowledge.valuesets import ValueSets
from cds_service.model import Facts, PatientRecord


def extract_facts(record: PatientRecord, valuesets: ValueSets) -> Facts:
    return Facts(as_of=record.as_of)

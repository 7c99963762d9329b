"""The services this server offers (`GET /cds-services`) and their prefetch templates.

Templates are data (`cards/prefetch.yaml`); the same definitions drive the service's own FHIR
queries when a client leaves a prefetch key out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cds_service import yaml_load
from cds_service.knowledge import DEFAULT_CARDS_DIR

# 2.0 tokens: a root-level context field or one of the four user identifiers.
_TOKEN = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
_VALID_TOKEN = re.compile(
    r"^(context\.[A-Za-z][A-Za-z0-9]*|userPractitionerId|userPractitionerRoleId|userPatientId|userRelatedPersonId)$"
)


class PrefetchConfigError(ValueError):
    """`prefetch.yaml` is malformed or uses a token CDS Hooks 2.0 does not allow."""


@dataclass(frozen=True)
class PrefetchTemplate:
    key: str
    query: str  # full FHIR query template, tokens unresolved, code list expanded
    required: bool = False
    codes: tuple[tuple[str, str], ...] = ()  # (system, code) asked for, if the query filters by code

    @property
    def is_read(self) -> bool:
        """A single-resource read ("Patient/{{context.patientId}}") rather than a search."""
        return "?" not in self.query

    @property
    def resource_type(self) -> str:
        return self.query.split("?", 1)[0].split("/", 1)[0]


@dataclass(frozen=True)
class ServiceDefinition:
    id: str
    hook: str
    title: str
    description: str
    usage_requirements: str

    def to_json(self, templates: Mapping[str, PrefetchTemplate]) -> dict[str, Any]:
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "usageRequirements": self.usage_requirements,
            "prefetch": {key: t.query for key, t in templates.items()},
        }


_USAGE = (
    "Send draft imaging orders as R4 ServiceRequests coded with CPT, LOINC or SNOMED CT, and grant "
    "read access (prefetch or fhirServer with patient/*.read) to the patient's Patient, Condition, "
    "Observation, MedicationRequest, MedicationAdministration, MedicationStatement, Medication, "
    "Procedure and DiagnosticReport resources. The Patient is "
    "required; other missing data lowers the confidence of the guidance."
)

SERVICES: tuple[ServiceDefinition, ...] = (
    ServiceDefinition(
        id="imaging-appropriateness",
        hook="order-select",
        title="Oncology imaging appropriateness",
        description=(
            "Rates selected imaging orders for patients with prostate or breast cancer against cited "
            "appropriateness criteria, flags red-flag symptoms and known pitfalls, suggests better-rated "
            "studies, and records the PAMA appropriateness rating on the order."
        ),
        usage_requirements=_USAGE,
    ),
    ServiceDefinition(
        id="imaging-appropriateness-sign",
        hook="order-sign",
        title="Oncology imaging appropriateness (order signing)",
        description=(
            "Re-checks every draft imaging order at signing for patients with prostate or breast cancer "
            "and records the PAMA appropriateness rating on each order."
        ),
        usage_requirements=_USAGE,
    ),
)

SERVICES_BY_ID: Mapping[str, ServiceDefinition] = {s.id: s for s in SERVICES}


def load_prefetch_templates(cards_dir: Path | None = None) -> dict[str, PrefetchTemplate]:
    path = (cards_dir or DEFAULT_CARDS_DIR) / "prefetch.yaml"
    try:
        data = yaml_load.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PrefetchConfigError(f"{path.name}: cannot read: {exc}") from exc
    entries = data.get("templates") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise PrefetchConfigError(f"{path.name}: 'templates' must be a non-empty mapping")
    root = cards_dir or DEFAULT_CARDS_DIR
    templates = {str(key): _template(str(key), entry, path.name, root) for key, entry in entries.items()}
    if not any(t.required and t.resource_type == "Patient" and t.is_read for t in templates.values()):
        raise PrefetchConfigError(f"{path.name}: a required Patient read template is missing")
    return templates


def prefetch_codes(cards_dir: Path | None = None) -> frozenset[tuple[str, str]]:
    """Every (system, code) the Observation templates ask for: value sets must stay inside it."""
    return frozenset(c for t in load_prefetch_templates(cards_dir).values() for c in t.codes)


_SEARCHABLE_SYSTEMS = ("http://snomed.info/sct", "http://loinc.org")
_CODE_PARAMETERS = ("code", "value-concept")


def _valueset_codes(root: Path, set_ids: Any, key: str, where: str) -> list[tuple[str, str]]:
    """The exact SNOMED CT / LOINC codes of value sets, so a template asks for what the facts stage
    reads without a second hand-kept list (ICD-10-CM prefixes cannot be searched; they stay with
    the Condition search, which has no code filter)."""
    if not isinstance(set_ids, list) or not all(isinstance(s, str) for s in set_ids):
        raise PrefetchConfigError(f"{where}: template {key!r} 'valuesets' must be a list of value-set ids")
    codes: list[tuple[str, str]] = []
    for set_id in set_ids:
        path = root / "valuesets" / f"{set_id}.yaml"
        try:
            data = yaml_load.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise PrefetchConfigError(f"{where}: template {key!r}: value set {set_id!r}: {exc}") from exc
        for entry in data.get("codes") or () if isinstance(data, dict) else ():
            if (
                isinstance(entry, dict)
                and entry.get("system") in _SEARCHABLE_SYSTEMS
                and entry.get("code")
                and not entry.get("exclude")
            ):
                codes.append((str(entry["system"]), str(entry["code"])))
    return codes


def _template(key: str, entry: Any, where: str, root: Path = DEFAULT_CARDS_DIR) -> PrefetchTemplate:
    if not isinstance(entry, dict) or not isinstance(entry.get("query"), str):
        raise PrefetchConfigError(f"{where}: template {key!r} needs a 'query' string")
    query = entry["query"].strip()
    for token in _TOKEN.findall(query):
        if not _VALID_TOKEN.match(token):
            raise PrefetchConfigError(f"{where}: template {key!r} uses token {{{{{token}}}}}, not 2.0")
    codes: list[tuple[str, str]] = []
    raw_codes = entry.get("codes") or {}
    if not isinstance(raw_codes, dict):
        raise PrefetchConfigError(f"{where}: template {key!r} 'codes' must map system -> list")
    for system, values in raw_codes.items():
        if not isinstance(values, list) or not values:
            raise PrefetchConfigError(f"{where}: template {key!r} codes of {system} must be a list")
        codes.extend((str(system), str(code)) for code in values)
    if "valuesets" in entry:
        codes.extend(_valueset_codes(root, entry["valuesets"], key, where))
    codes = list(dict.fromkeys(codes))
    parameter = entry.get("parameter", "code")
    if parameter not in _CODE_PARAMETERS:
        raise PrefetchConfigError(f"{where}: template {key!r} 'parameter' must be one of {_CODE_PARAMETERS}")
    if codes:
        if "?" not in query:
            raise PrefetchConfigError(f"{where}: template {key!r} filters codes but is not a search")
        query += f"&{parameter}=" + ",".join(f"{system}|{code}" for system, code in codes)
    required = entry.get("required", False)
    if not isinstance(required, bool):
        raise PrefetchConfigError(f"{where}: template {key!r} 'required' must be true or false")
    return PrefetchTemplate(key=key, query=query, required=required, codes=tuple(codes))

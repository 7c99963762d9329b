"""Whose resource is this? One decision, used by prefetch, the FHIR fallback, replay and the facts stage.

A resource is the context patient's only when its subject (or `patient`) reference resolves to that
patient (FHIR R4 "Resource References", section 2.3.0):

  `Patient/{id}` (optionally `/_history/{v}`)            relative literal reference
  `https://any.base/Patient/{id}`                          absolute literal reference
  `urn:uuid:...` / `urn:oid:...` = the Patient's `fullUrl` in a Bundle we received, or `urn:uuid:{id}`
  `{"type": "Patient", "reference": "{id}"}`               bare id with an explicit type (sandbox shape)
  `{"identifier": {system, value}}`                        logical reference matching Patient.identifier

Everything else is not the patient's: another id, another identifier, display only, `#contained`
(a contained Patient is not the context patient), lower-case `patient/x` (resource types are
case-sensitive), a `Group`, or no subject at all on a type whose subject is mandatory. The caller
drops such resources, counts them (never logs ids) and says data is missing.
This module is pure: no I/O, no logging.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PATIENT = "Patient"
SUBJECT_FIELDS = ("subject", "patient")

# Patient-compartment types this service reads or may receive, with the element that names the
# patient. Their subject is mandatory in R4 (1..1) or, for Observation / DiagnosticReport (0..1),
# mandatory in US Core and always present in a `patient=` search result: a missing subject means
# "whose?" cannot be answered, so the resource is not used.
SUBJECT_REQUIRED: Mapping[str, str] = {
    "Condition": "subject",
    "Observation": "subject",
    "DiagnosticReport": "subject",
    "Procedure": "subject",
    "MedicationRequest": "subject",
    "MedicationStatement": "subject",
    "MedicationAdministration": "subject",
    "MedicationDispense": "subject",
    "ServiceRequest": "subject",
    "ImagingStudy": "subject",
    "Encounter": "subject",
    "AllergyIntolerance": "patient",
    "Immunization": "patient",
}

# Patient/{id} at the end of a reference, with an optional version: R4 ids are [A-Za-z0-9-.]{1,64}.
_PATIENT_TAIL = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")

# Verdicts (also the log-count keys).
OWN = "own"
OTHER = "other-patient"  # resolves to someone else (another id / identifier / fullUrl)
UNRESOLVED = "unresolved"  # cannot be tied to the patient: display-only, #contained, patient/x, urn not ours
NO_SUBJECT = "no-subject"  # a type whose subject is mandatory has none
NOT_SCOPED = "not-patient-scoped"  # Medication, Practitioner, ...: no patient to check


@dataclass(frozen=True)
class PatientIdentity:
    """Who the context patient is, as the references of this call may name them."""

    id: str
    identifiers: frozenset[tuple[str, str]] = frozenset()  # (system, value) of Patient.identifier
    full_urls: frozenset[str] = frozenset()  # Bundle fullUrls of the Patient entry (urn:uuid:..., URLs)
    relative: str = field(init=False, repr=False, compare=False)  # "Patient/{id}", for the fast path

    def __post_init__(self) -> None:
        object.__setattr__(self, "relative", f"{PATIENT}/{self.id}")
        # Synthea-style bundles name each entry `urn:uuid:<its id>`: a reference of that form names
        # this Patient's entry even when the Bundle itself did not come along (it claims no more
        # than `Patient/<id>` does).
        object.__setattr__(self, "full_urls", self.full_urls | {f"urn:uuid:{self.id}"})

    @classmethod
    def of(cls, patient_id: str, patient: Mapping[str, Any] | None = None,
           full_urls: Iterable[str] = ()) -> PatientIdentity:
        return cls(patient_id, identifiers_of(patient), frozenset(full_urls))

    def with_urls(self, urls: Iterable[str]) -> PatientIdentity:
        extra = frozenset(urls) - self.full_urls
        return self if not extra else PatientIdentity(self.id, self.identifiers, self.full_urls | extra)


def identifiers_of(patient: Mapping[str, Any] | None) -> frozenset[tuple[str, str]]:
    """(system, value) pairs of a Patient; an identifier without a system cannot be matched safely."""
    out = set()
    items = patient.get("identifier") if isinstance(patient, Mapping) else None
    for item in items if isinstance(items, list) else ():
        pair = _identifier_pair(item)
        if pair:
            out.add(pair)
    return frozenset(out)


def _identifier_pair(item: Any) -> tuple[str, str] | None:
    if not isinstance(item, Mapping):
        return None
    system, value = item.get("system"), item.get("value")
    if isinstance(system, str) and system.strip() and isinstance(value, str) and value.strip():
        return system.strip(), value.strip()
    return None


def is_the_patient(resource: Mapping[str, Any], identity: PatientIdentity) -> bool:
    """A Patient resource that is the context patient (same id; no id but a shared identifier)."""
    if resource.get("resourceType") != PATIENT:
        return False
    rid = resource.get("id")
    if rid is None:
        return bool(identifiers_of(resource) & identity.identifiers)
    return bool(rid == identity.id)


def resolve_reference(ref: Any, identity: PatientIdentity) -> str:
    """OWN, OTHER or UNRESOLVED for one FHIR Reference (the value of `subject` / `patient`)."""
    if not isinstance(ref, Mapping):
        return UNRESOLVED
    rtype = ref.get("type")
    if rtype is not None and rtype != PATIENT and not _is_patient_type_url(rtype):
        return OTHER  # a Group, Device, Location ...: not this patient
    reference = ref.get("reference")
    identifier = _identifier_pair(ref.get("identifier"))
    verdict = UNRESOLVED
    if isinstance(reference, str) and reference.strip():
        verdict = _literal(reference.strip(), rtype is not None, identity)
        if verdict == OWN and identifier and _identifier_conflicts(identifier, identity):
            return OTHER  # the two halves of the reference disagree: trust neither
        return verdict
    if identifier:
        if identifier in identity.identifiers:
            return OWN
        return OTHER if _system_known(identifier, identity) else UNRESOLVED
    return verdict  # display-only or empty


def _is_patient_type_url(rtype: Any) -> bool:
    # `type` is a URI: "Patient" (base-spec form) or the Patient StructureDefinition's canonical URL.
    return isinstance(rtype, str) and rtype == "http://hl7.org/fhir/StructureDefinition/Patient"


def _literal(reference: str, typed_patient: bool, identity: PatientIdentity) -> str:
    if reference in identity.full_urls:
        return OWN
    if reference.startswith("#"):
        return UNRESOLVED  # contained: a copy inside the resource, not the context patient
    if reference.startswith(("urn:uuid:", "urn:oid:")):
        return UNRESOLVED  # a Bundle-local name that is not our Patient's entry
    match = _PATIENT_TAIL.search(reference)
    if match:
        return OWN if match.group(1) == identity.id else OTHER
    if typed_patient and "/" not in reference:
        return OWN if reference == identity.id else OTHER  # {"type": "Patient", "reference": "<id>"}
    return UNRESOLVED  # "patient/x", "Group/g", "Practitioner/x", free text


def _identifier_conflicts(identifier: tuple[str, str], identity: PatientIdentity) -> bool:
    return _system_known(identifier, identity) and identifier not in identity.identifiers


def _system_known(identifier: tuple[str, str], identity: PatientIdentity) -> bool:
    return any(system == identifier[0] for system, _ in identity.identifiers)


def belongs(resource: Mapping[str, Any], identity: PatientIdentity) -> str:
    """The verdict for one resource: OWN / NOT_SCOPED are usable; anything else is dropped."""
    rtype = resource.get("resourceType")
    if rtype == PATIENT:
        return OWN if is_the_patient(resource, identity) else OTHER
    subject = resource.get("subject")
    if (  # fast path for the common shape (every resource of every request passes here)
        isinstance(subject, dict)
        and subject.get("reference") == identity.relative
        and "type" not in subject
        and "identifier" not in subject
        and resource.get("patient") is None
    ):
        return OWN
    present = [name for name in SUBJECT_FIELDS if resource.get(name) is not None]
    if not present:
        return NO_SUBJECT if rtype in SUBJECT_REQUIRED else NOT_SCOPED
    verdicts = {resolve_reference(resource[name], identity) for name in present}
    if verdicts == {OWN}:
        return OWN
    return OTHER if OTHER in verdicts else UNRESOLVED


def usable(verdict: str) -> bool:
    return verdict in (OWN, NOT_SCOPED)


def patient_full_urls(bundle: Mapping[str, Any], identity: PatientIdentity) -> frozenset[str]:
    """fullUrls of the context Patient's entries in `bundle` (so `urn:uuid:` subjects resolve)."""
    urls = set()
    entries = bundle.get("entry")
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, Mapping):
            continue
        resource, url = entry.get("resource"), entry.get("fullUrl")
        ours = isinstance(resource, Mapping) and is_the_patient(resource, identity)
        if ours and isinstance(url, str) and url:
            urls.add(url)
    return frozenset(urls)

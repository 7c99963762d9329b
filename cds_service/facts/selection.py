"""Select the few resources the rules read, by code on the raw JSON, then validate only those.

Validating every resource of a 2,000-entry bundle with the R4B models costs hundreds of
milliseconds; a dict probe per coding costs microseconds. So: probe first, validate what matched.
A selected resource that fails validation is skipped (log line with type and id hash) and noted
in data_issues, because a relevant but unreadable record lowers confidence.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from cds_service.facts import text, wellformed
from cds_service.facts._util import codings, id_hash
from cds_service.facts.stage_notation import STAGING_TEXT, is_text_staging_code
from cds_service.identity import PatientIdentity, belongs, usable
from cds_service.knowledge.valuesets import (
    LOINC,
    MAX_CODE_CHARS,
    SNOMED,
    ValueSets,
    canonical_system,
    is_overlong,
)
from cds_service.model import PatientRecord, Resource

log = logging.getLogger(__name__)

# Routine labs whose older results the rules never read (see _recent_labs_only).
ROUTINE_LABS = frozenset({"alp", "ast", "alt", "bilirubin", "egfr", "creatinine", "testosterone"})
LAB_SERIES_LIMIT = 3
_STAGING_TEXT_IDS = frozenset({STAGING_TEXT})
MEDICATION_TYPES = ("MedicationRequest", "MedicationAdministration", "MedicationStatement")
# Condition-kind value sets that are symptoms or exam findings: EHRs also record these as an
# Observation (the symptom as Observation.code, or as the coded value of a generic finding such as
# a neuro exam). cards/prefetch.yaml asks for their codes (tests/protocol/test_discovery.py).
SYMPTOM_SETS = frozenset({
    "back-pain", "bone-pain", "cord-compression", "focal-neuro-deficit", "headache", "pulmonary-symptoms",
    "seizure", "sphincter-dysfunction", "weakness", "weight-loss",
})
_NOT_GIVEN = frozenset({"entered-in-error", "cancelled", "draft", "not-taken", "not-done"})
# which value-set kinds each resource type is probed against
KINDS: Mapping[str, frozenset[str]] = {
    "Condition": frozenset({"condition"}),
    "Observation": frozenset({"observation"}),
    "Procedure": frozenset({"procedure", "imaging-modality"}),
    "DiagnosticReport": frozenset({"imaging-modality"}),
}


@dataclass(frozen=True)
class Hit:
    resource: Resource
    ids: frozenset[str]  # value-set ids (or ingredient ids for medications) the code matched


@dataclass(frozen=True)
class Selection:
    conditions: tuple[Hit, ...] = ()
    observations: tuple[Hit, ...] = ()
    medications: tuple[Hit, ...] = ()
    procedures: tuple[Hit, ...] = ()
    reports: tuple[Hit, ...] = ()
    symptoms: tuple[Hit, ...] = ()  # Observations whose code or coded value is a symptom (SYMPTOM_SETS)
    issues: tuple[str, ...] = ()
    # Conditions with no usable coding (no coding with both system and code) but text to read
    text_conditions: tuple[Hit, ...] = ()


@cache
def _model(resource_type: str) -> Any:
    # imported at first need (~0.5 s with pydantic): plain resources never reach the model
    # (facts/wellformed.py), so a worker may serve many charts without it
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource_type)


# subject: no sub-stage reads it, but R4B requires it on Condition and Procedure
_COMMON = ("resourceType", "id", "status", "code", "subject")
_MEDICATION = (*_COMMON, "medicationCodeableConcept", "medicationReference", "contained")
# MedicationRequest.doNotPerform: an order NOT to give the drug must be read to be refused
# The elements the sub-stages read, per resource type. Only these are validated: what the rules
# never read cannot mislead them, and validating half the elements halves the cost.
READ_ELEMENTS: Mapping[str, frozenset[str]] = {
    "Condition": frozenset(
        {
            *_COMMON,
            "clinicalStatus",
            "verificationStatus",
            "onsetDateTime",
            "onsetPeriod",
            "recordedDate",
            "abatementDateTime",
            "abatementPeriod",
            "abatementAge",
            "abatementRange",
            "abatementString",
            "abatementBoolean",
            "stage",  # Condition.stage summary / assessment / type (staging.py)
            # not "note": read (defensively, as text) only for a Condition without a usable code; a
            # malformed note must not make an otherwise readable coded Condition invalid
        }
    ),
    "Observation": frozenset(
        {
            *_COMMON,
            "effectiveDateTime",
            "effectivePeriod",
            "effectiveInstant",
            "issued",
            "valueQuantity",
            "valueCodeableConcept",
            "valueString",
            "valueInteger",
            "valueBoolean",
            "interpretation",
            "referenceRange",
        }
    ),
    "Procedure": frozenset({*_COMMON, "performedDateTime", "performedPeriod"}),
    "DiagnosticReport": frozenset(
        {
            *_COMMON,
            "effectiveDateTime",
            "effectivePeriod",
            "issued",
            "conclusion",
            "conclusionCode",
            # not "presentedForm": read defensively (facts/report_text.py) only when conclusionCode
            # is absent; a malformed or huge attachment must not drop a coded report
        }
    ),
    "MedicationRequest": frozenset(
        {*_MEDICATION, "intent", "authoredOn", "dosageInstruction", "doNotPerform"}
    ),
    "MedicationAdministration": frozenset({*_MEDICATION, "effectiveDateTime", "effectivePeriod"}),
    "MedicationStatement": frozenset({*_MEDICATION, "effectiveDateTime", "effectivePeriod", "dosage"}),
}


def _first_range_bounds(ranges: Any) -> Any:
    """labs.py reads only low and high of the first referenceRange; validating the rest (text,
    appliesTo, further ranges) cost a third of an Observation's validation time."""
    if isinstance(ranges, list) and ranges and isinstance(ranges[0], Mapping):
        return [{k: v for k, v in ranges[0].items() if k in ("low", "high")}]
    return ranges


def _read_part(resource: Resource) -> dict[str, Any]:
    keep = READ_ELEMENTS.get(str(resource.get("resourceType")))
    if not keep:
        return dict(resource)
    data = {k: v for k, v in resource.items() if k in keep}
    if "referenceRange" in data:
        data["referenceRange"] = _first_range_bounds(data["referenceRange"])
    return data


# Verdicts of earlier validations, keyed by a digest of the validated elements (never the content
# itself). An EHR sends the same chart again with every order-select and then order-sign of a
# session, and R4B validation (0.1-0.3 ms per resource) is most of a request's cost; the digest
# costs a few microseconds. Bounded, oldest first out; the verdict depends only on the content.
VERDICT_CACHE_SIZE = 20_000
_verdicts: OrderedDict[bytes, tuple[bool, Any]] = OrderedDict()


def clear_verdicts() -> None:
    """Forget cached verdicts (the benchmark's cold-path measurement and tests use this)."""
    _verdicts.clear()


def _validate(rtype: str, data: dict[str, Any]) -> tuple[bool, Any]:
    """(valid, location of the first error for the log line)."""
    from pydantic import ValidationError

    try:
        _model(rtype).model_validate(data)
    except (ValidationError, ValueError, TypeError, KeyError) as exc:
        errors = exc.errors() if isinstance(exc, ValidationError) else None
        return False, errors[0].get("loc") if errors else None
    return True, None


def is_valid(resource: Resource) -> bool:
    """Validate, with the R4B model, the elements of `resource` that the rules read."""
    rtype = str(resource.get("resourceType"))
    data = _read_part(resource)
    if wellformed.accepts(rtype, data):  # plain shapes: certainly valid, no model needed
        return True
    try:
        key = hashlib.blake2b(json.dumps(data, sort_keys=True).encode(), digest_size=16).digest()
    except (TypeError, ValueError):  # not JSON-serialisable: let the model say why
        key = None
    if key is not None and key in _verdicts:
        _verdicts.move_to_end(key)
        valid, where = _verdicts[key]
    else:
        valid, where = _validate(rtype, data)
        if key is not None:
            _verdicts[key] = (valid, where)
            if len(_verdicts) > VERDICT_CACHE_SIZE:
                _verdicts.popitem(last=False)
    if not valid:
        log.warning("facts: skipped invalid %s id#%s (%s)", rtype, id_hash(resource), where)
    return valid


def _mislabelled_loinc(concept: Any, valuesets: ValueSets) -> str | None:
    """Synthea (and some feeds) put SNOMED codes in the LOINC system. Such a coding is not matched
    (codes match on system + code); say so when the SNOMED reading would have mattered."""
    for coding in codings(concept):
        code = coding.get("code")
        if (
            canonical_system(coding.get("system")) == LOINC
            and isinstance(code, str)
            and "-" not in code
            and valuesets.ids_for(SNOMED, code)
        ):
            return code
    return None


def _medication_concepts(medication: Any) -> list[Any]:
    """The codes of a Medication: its `code`, else (a compounded or kit product coded only by
    its parts) each `ingredient[].itemCodeableConcept`."""
    if not isinstance(medication, Mapping):
        return []
    if isinstance(medication.get("code"), Mapping) and medication["code"].get("coding"):
        return [medication["code"]]
    parts = medication.get("ingredient")
    return [p.get("itemCodeableConcept") for p in parts if isinstance(p, Mapping)] if isinstance(
        parts, list
    ) else []


def medication_key(reference: str) -> str:
    """ "Medication/x" of a relative or absolute reference (a version suffix dropped)."""
    parts = [p for p in reference.split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return "/".join(parts[-2:])


def _medication_concepts_of(
    resource: Resource, by_ref: Mapping[str, Resource]
) -> tuple[list[Any], str | None]:
    """(codes of what was given, the reference that could not be resolved)."""
    if isinstance(resource.get("medicationCodeableConcept"), Mapping):
        return [resource["medicationCodeableConcept"]], None
    ref = resource.get("medicationReference")
    reference = ref.get("reference") if isinstance(ref, Mapping) else None
    if not isinstance(reference, str) or not reference.strip():
        return [], None
    reference = reference.strip()
    if reference.startswith("#"):
        contained_list = resource.get("contained")
        for contained in contained_list if isinstance(contained_list, list) else ():
            if isinstance(contained, Mapping) and contained.get("id") == reference[1:]:
                return _medication_concepts(contained), None
        return [], reference
    # "Medication/x", an absolute URL ending in Medication/x, or a Bundle-local urn:uuid that the
    # protocol layer rewrote to Medication/x (fhir_client.split_bundle)
    target = by_ref.get(medication_key(reference))
    return (_medication_concepts(target), None) if target else ([], reference)


def _symptom_ids(obs: Resource, valuesets: ValueSets) -> frozenset[str]:
    """Symptom value sets the Observation's code, else its coded value, is in."""
    for element in ("code", "valueCodeableConcept"):
        ids = frozenset(valuesets.ids_for_concept(obs.get(element))) & SYMPTOM_SETS
        if ids:
            return ids
    return frozenset()


def _without_stage(resource: Resource) -> Resource:
    return {k: v for k, v in resource.items() if k != "stage"}


def _recent_labs_only(hits: list[Hit]) -> list[Hit]:
    """Drop all but the LAB_SERIES_LIMIT most recent results of each routine lab, before validation.

    The rules read the latest value of a routine lab (and at most the one before it), while a
    chronic patient can carry hundreds of metabolic panels: validating them all is the single
    biggest cost of a large request. PSA and every non-lab observation are kept whole.
    """
    by_key: dict[str, list[tuple[str, int]]] = {}
    keep: set[int] = set()
    for n, hit in enumerate(hits):
        keys = hit.ids & ROUTINE_LABS
        if not keys or hit.ids - ROUTINE_LABS:
            keep.add(n)
            continue
        when = hit.resource.get("effectiveDateTime") or (hit.resource.get("effectivePeriod") or {}).get(
            "start"
        )
        for key in keys:
            by_key.setdefault(key, []).append((str(when or ""), n))
    for entries in by_key.values():
        # ISO-8601 strings of the same feed sort chronologically; good enough to pick the recent few
        keep.update(n for _, n in sorted(entries, reverse=True)[:LAB_SERIES_LIMIT])
    return [hit for n, hit in enumerate(hits) if n in keep]


def record_identity(record: PatientRecord) -> PatientIdentity | None:
    """Who the record is about: the protocol layer's identity, else the Patient's id; None when
    the record names no patient (hand-built records in tests and tools)."""
    if record.identity is not None:
        return record.identity
    patient = record.patient
    pid = patient.get("id") if isinstance(patient, Mapping) else None
    return PatientIdentity.of(pid, patient) if isinstance(pid, str) and pid else None


def has_usable_coding(concept: Any) -> bool:
    """A coding with both system and code: such a concept is read by code, never by its text."""
    return any(
        isinstance(c.get("system"), str)
        and c.get("system")
        and isinstance(c.get("code"), str)
        and c.get("code")
        for c in codings(concept)
    )


def _text_only(resource: Mapping[str, Any], rtype: str, valuesets: ValueSets) -> Hit | None:
    """A Condition or DiagnosticReport whose code is text only, as a Hit to read by text.

    Conditions: text in code.text or note. Reports: the modality named by code.text ("NM bone scan
    whole body"), when the report has a conclusion to read.
    """
    concept = resource.get("code")
    if has_usable_coding(concept):
        return None
    label = concept.get("text") if isinstance(concept, Mapping) else None
    if rtype == "Condition":
        notes = [n.get("text") for n in resource.get("note") or () if isinstance(n, Mapping)]
        readable = any(isinstance(t, str) and t.strip() for t in [label, *notes])
        return Hit(resource, frozenset()) if readable else None
    if rtype == "DiagnosticReport" and isinstance(label, str) and label.strip():
        modalities = text.modality_from_text(label, valuesets.text_targets)
        sections = ("conclusion", "presentedForm", "conclusionCode")
        if modalities and any(resource.get(k) for k in sections):
            return Hit(resource, frozenset(f"imaging-{m}" for m in modalities))
    return None


def select(record: PatientRecord, valuesets: ValueSets) -> Selection:
    issues: list[str] = []
    identity = record_identity(record)
    foreign = 0
    symptoms: list[Hit] = []

    def own(resource: Resource) -> bool:
        # Defence in depth: the protocol layer already dropped other patients' resources; a record
        # built elsewhere (a tool, a future code path) must not slip one past the rules either.
        nonlocal foreign
        if identity is None or usable(belongs(resource, identity)):
            return True
        foreign += 1
        return False

    out: dict[str, list[Hit]] = {
        "Condition": [], "Observation": [], "Procedure": [], "DiagnosticReport": [], "Symptom": []
    }
    text_conditions: list[Hit] = []
    for rtype, wanted in KINDS.items():
        candidates: list[Hit] = []
        for resource in record.resources.get(rtype, ()):
            if not isinstance(resource, Mapping):
                continue
            concept = resource.get("code")
            ids = frozenset(i for i in valuesets.ids_for_concept(concept) if valuesets.kind_of(i) in wanted)
            if ids:
                if own(resource):
                    candidates.append(Hit(resource, ids))
                continue
            if rtype == "Observation":
                found = _symptom_ids(resource, valuesets)
                if found and own(resource):
                    symptoms.append(Hit(resource, found))
                    continue
            if any(is_overlong(c.get("code")) for c in codings(concept)):
                # no code system has such codes: garbage, skipped unread (never matched, never a hang)
                issues.append(
                    f"{rtype}: a code longer than {MAX_CODE_CHARS} characters is not a code; not read"
                )
                continue
            code = _mislabelled_loinc(concept, valuesets)
            if code:
                issues.append(f"{rtype}: code {code} is labelled LOINC but is a SNOMED CT code; not read")
            elif rtype == "Observation" and is_text_staging_code(concept):
                if own(resource):
                    candidates.append(Hit(resource, _STAGING_TEXT_IDS))  # stage / grade written as text
            elif rtype in ("Condition", "DiagnosticReport"):
                hit = _text_only(resource, rtype, valuesets)
                if hit is not None and own(resource) and is_valid(resource):
                    (text_conditions if rtype == "Condition" else out[rtype]).append(hit)
        batches = [(rtype, candidates)]
        if rtype == "Observation":
            batches = [(rtype, _recent_labs_only(candidates)), ("Symptom", symptoms)]
        for bucket, hits in batches:
            for hit in hits:
                if is_valid(hit.resource):
                    out[bucket].append(hit)
                elif rtype == "Condition" and "stage" in hit.resource and (
                    is_valid(_without_stage(hit.resource))
                ):
                    # a malformed stage must not cost the diagnosis: keep the Condition, drop its stage
                    out[rtype].append(Hit(_without_stage(hit.resource), hit.ids))
                    issues.append(
                        f"{rtype} ({', '.join(sorted(hit.ids))}): stage unreadable (invalid FHIR); not used"
                    )
                else:
                    issues.append(
                        f"{rtype} ({', '.join(sorted(hit.ids))}) could not be read (invalid FHIR); skipped"
                    )

    by_ref = {
        f"Medication/{m.get('id')}": m
        for m in record.resources.get("Medication", ())
        if isinstance(m, Mapping) and m.get("id")
    }
    meds: list[Hit] = []
    unresolved_refs = 0
    for rtype in MEDICATION_TYPES:
        for resource in record.resources.get(rtype, ()):
            if not isinstance(resource, Mapping):
                continue
            concepts, unresolved = _medication_concepts_of(resource, by_ref)
            if unresolved:
                # a withdrawn record about an unknown drug is no loss; any other one is
                unresolved_refs += resource.get("status") not in _NOT_GIVEN
                continue
            ingredients = tuple(dict.fromkeys(i for c in concepts for i in valuesets.ingredients_for(c)))
            if not ingredients or not own(resource):
                continue
            if is_valid(resource):
                meds.append(Hit(resource, frozenset(ingredients)))
            else:
                issues.append(f"{rtype} ({', '.join(ingredients)}) could not be read (invalid FHIR); skipped")
    if foreign:
        log.warning("facts: left out %d selected resources not attributable to the patient", foreign)
        issues.append(f"{foreign} record(s) not attributable to this patient were left out")
    if unresolved_refs:
        # The drug behind such a record is unknown: say so rather than silently read nothing.
        issues.append(
            f"{unresolved_refs} medication record(s) name a Medication that was not sent or found; "
            "not read"
        )
    return Selection(
        conditions=tuple(out["Condition"]),
        observations=tuple(out["Observation"]),
        medications=tuple(meds),
        procedures=tuple(out["Procedure"]),
        reports=tuple(out["DiagnosticReport"]),
        symptoms=tuple(out["Symptom"]),
        issues=tuple(issues),
        text_conditions=tuple(text_conditions),
    )


def warm_up() -> None:
    """Build the R4B model validators once (the first validation of a type costs tens of ms).

    Call at application start so the first hook request does not pay for it.
    """
    from pydantic import ValidationError

    for rtype in READ_ELEMENTS:
        # an empty resource is invalid; building the validator was the point
        with contextlib.suppress(ValidationError):
            _model(rtype).model_validate({"resourceType": rtype})

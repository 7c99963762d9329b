"""Prefetch and FHIR fallback -> `PatientRecord`.

Each template key is in one of four states (CDS Hooks 2.0 "Prefetch"):
  present (resource or Bundle)  use it; follow Bundle `next` links on fhirServer
  null                          the client found no data: no query
  OperationOutcome              the client hit an error: query fhirServer again, else degrade
  absent                        query fhirServer, else degrade
Missing queries run concurrently under one deadline. A required key (the Patient) that cannot be
had raises `PreconditionFailed` (HTTP 412). Resources stay raw JSON: the facts stage validates only
what it reads.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cds_service.config import Settings
from cds_service.fhir_refs import parse_reference
from cds_service.identity import OWN, PatientIdentity, belongs, patient_full_urls, usable
from cds_service.model import HookRequest, PatientRecord, Resource
from cds_service.protocol.discovery import PrefetchTemplate
from cds_service.protocol.errors import PreconditionFailed
from cds_service.protocol.fhir_client import (
    FhirAccessError,
    FhirClient,
    FhirNotFound,
    next_link,
    parse_allowed_hosts,
    split_bundle,
)
from cds_service.protocol.fhir_fetch import Query, plan, read_many, refuses_joined, run_all, split
from cds_service.protocol.references import accepted_targets, missing_targets
from cds_service.protocol.request import FHIR_ID, ParsedCall

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
_Absent = object()  # a prefetch key the client did not send
MEDICATION_RECORD_TYPES = frozenset({"MedicationRequest", "MedicationAdministration", "MedicationStatement"})
MAX_MEDICATION_READS = 20  # a chart references few distinct Medications; bound the reads anyway
REASON_TARGETS_KEY = "reason-references"  # not a template: the draft orders' reasonReference targets
MEDICATION_TARGETS_KEY = "medication-references"  # not a template: Medications the records reference


@dataclass
class KeyResult:
    resources: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = True
    state: str = "present"  # present | null | outcome | absent | invalid (as received)
    source: str = "prefetch"  # prefetch | fhir | none
    error: str | None = None


@dataclass(frozen=True)
class GatherStats:
    states: Mapping[str, str]  # key -> state received
    fetched: tuple[str, ...]  # keys queried on fhirServer
    fhir_calls: int
    server_refused: bool  # fhirServer named but not allowed: no call made


def gather_record(
    call: ParsedCall, templates: Mapping[str, PrefetchTemplate], settings: Settings, today: date
) -> tuple[PatientRecord, GatherStats]:
    request = call.request
    results: dict[str, KeyResult] = {}
    pending_queries: dict[str, PrefetchTemplate] = {}
    pending_pages: dict[str, dict[str, Any]] = {}

    for key, template in templates.items():
        value = call.prefetch.get(key, _Absent)
        result = _classify(value, template, request.patient_id)
        results[key] = result
        if result.state in ("absent", "outcome", "invalid"):
            pending_queries[key] = template
        elif result.state == "present" and isinstance(value, dict) and next_link(value):
            pending_pages[key] = value

    client = _client(call, settings)
    server_refused = bool(call.fhir_server) and client is None
    if server_refused:
        log.warning("fhirServer host not in CDS_FHIR_ALLOWED_HOSTS; no FHIR query made")
    fetched: list[str] = []
    if client is not None and (pending_queries or pending_pages):
        fetched = sorted({*pending_queries, *pending_pages})
        _fetch_all(client, pending_queries, pending_pages, request, results, settings)
    else:
        for key in pending_queries:
            results[key].complete = False
            results[key].error = results[key].error or "not in prefetch and no usable fhirServer"
        for key in pending_pages:
            results[key].complete = False

    for key, template in templates.items():
        if template.required and (not results[key].complete or not _usable(results[key], template, request)):
            reason = results[key].error or "no data"
            raise PreconditionFailed(
                f"Required prefetch {key!r} ({template.resource_type}) could not be obtained: {reason}"
            )

    if client is not None:
        # The orders' reasonReference targets the prefetch did not bring, and the Medications that
        # medication records reference but nobody sent (no `_include`): one parallel wave, same
        # client, same deadline.
        have = {
            (str(r.get("resourceType")), str(r.get("id"))) for res in results.values() for r in res.resources
        }
        wanted_targets = missing_targets(request.draft_orders, have, client.base_url)
        wanted_medications = _missing_medications(client, results)
        answers = read_many(
            client,
            [f"{t}/{i}" for t, i in wanted_targets] + [f"Medication/{m}" for m in wanted_medications],
            settings.fhir_max_workers,
        )
        targets = accepted_targets(wanted_targets, answers)
        if targets:
            results[REASON_TARGETS_KEY] = KeyResult(resources=targets, source="fhir")
        medications = [
            m for rid in wanted_medications
            if (m := answers.get(f"Medication/{rid}")) is not None and m.get("resourceType") == "Medication"
        ]
        if medications:
            results[MEDICATION_TARGETS_KEY] = KeyResult(resources=medications, source="fhir")

    patient = next(
        (r for key, t in templates.items() if t.resource_type == "Patient" and t.is_read
         for r in results[key].resources if _is_the_patient(r, request.patient_id)),
        None,
    )
    identity = PatientIdentity.of(request.patient_id, patient)
    bundles = [v for v in call.prefetch.values() if isinstance(v, dict) and v.get("resourceType") == "Bundle"]
    if client is not None and client.patient_entries:
        bundles.append({"entry": client.patient_entries})
    for bundle in bundles:
        identity = identity.with_urls(patient_full_urls(bundle, identity))
    _cap_resources(results, settings.max_resources_per_key)
    grouped, dropped, emptied = _group(results, identity, patient)
    for key in emptied:
        # Every result of this key was someone else's: the patient's own data could not be had.
        results[key].complete = False
        results[key].error = results[key].error or "every result belonged to another patient"
    record = PatientRecord(
        patient=patient,
        resources=grouped,
        as_of=today,
        incomplete=tuple(sorted(k for k, r in results.items() if not r.complete)),
        identity=identity,
        not_this_patient=dropped,
    )
    stats = GatherStats(
        states={k: r.state for k, r in results.items()},
        fetched=tuple(fetched),
        fhir_calls=client.calls if client else 0,
        server_refused=server_refused,
    )
    return record, stats


def _classify(value: Any, template: PrefetchTemplate, patient_id: str) -> KeyResult:
    if value is _Absent:
        return KeyResult(state="absent", complete=False, source="none")
    if value is None:
        return KeyResult(state="null")
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        return KeyResult(state="invalid", complete=False, error="prefetch value is not a FHIR resource")
    rtype = value["resourceType"]
    if rtype == "OperationOutcome":
        return KeyResult(state="outcome", complete=False, error="client sent an OperationOutcome")
    if rtype == "Bundle":
        resources, has_error = split_bundle(value)
        if has_error:
            # Keep what came; a re-query replaces it if the server answers.
            return KeyResult(resources=resources, state="outcome", complete=False,
                             error="client sent a Bundle with an error OperationOutcome")
        return KeyResult(resources=resources)
    if template.is_read:
        if rtype != template.resource_type:
            return KeyResult(state="invalid", complete=False, error=f"expected {template.resource_type}")
        if rtype == "Patient" and value.get("id") not in (None, patient_id):
            return KeyResult(state="invalid", complete=False, error="Patient id differs from context")
        return KeyResult(resources=[value])
    # A search answered with a bare resource: accept it as a one-entry result.
    return KeyResult(resources=[value])


def _usable(result: KeyResult, template: PrefetchTemplate, request: HookRequest) -> bool:
    if template.resource_type == "Patient":
        return any(_is_the_patient(r, request.patient_id) for r in result.resources)
    return bool(result.resources)


def _is_the_patient(resource: Mapping[str, Any], patient_id: str) -> bool:
    # The Patient read itself: an answer without an id is the resource that was asked for.
    return resource.get("resourceType") == "Patient" and resource.get("id") in (None, patient_id)


def _client(call: ParsedCall, settings: Settings) -> FhirClient | None:
    if not call.fhir_server:
        return None
    client = FhirClient(
        base_url=call.fhir_server,
        allowed=parse_allowed_hosts(settings.fhir_allowed_hosts),
        access_token=call.access_token,
        connect_timeout=settings.fhir_connect_timeout,
        read_timeout=settings.fhir_read_timeout,
        deadline=time.monotonic() + settings.fhir_deadline,
        page_cap=max(1, settings.fhir_page_cap),
        max_bytes=settings.fhir_max_bytes,
    )
    return client if client.allowed_server else None


def _fetch_all(
    client: FhirClient,
    queries: Mapping[str, PrefetchTemplate],
    pages: Mapping[str, dict[str, Any]],
    request: HookRequest,
    results: dict[str, KeyResult],
    settings: Settings,
) -> None:
    """Run the missing queries (see cds_service.protocol.fhir_fetch for the order and the joining)."""
    first: list[Query] = []
    reads: list[Query] = []
    searches: dict[str, str] = {}
    for key, template in queries.items():
        query = resolve_tokens(template.query, request)
        if query is None:
            results[key].complete = False
            results[key].error = "template token has no value in this context"
        elif template.is_read:
            # A required read (the Patient) goes ahead of everything: its absence is a 412.
            (first if template.required else reads).append(Query(query, ((key, frozenset()),), is_read=True))
        else:
            searches[key] = query
    planned = (
        [Query(q, ((k, frozenset()),)) for k, q in searches.items()]
        if refuses_joined(client.base_url)
        else plan(searches)
    )
    follow = [Query("", ((key, frozenset()),), bundle=bundle) for key, bundle in pages.items()]

    def report(query: Query, outcome: tuple[list[dict[str, Any]], bool] | FhirAccessError | None) -> None:
        if outcome is None:
            for key in query.keys:
                results[key].complete = False
                results[key].error = "deadline for FHIR queries passed"
        elif isinstance(outcome, FhirNotFound):
            for key in query.keys:
                results[key] = KeyResult(state=results[key].state, source="fhir", error=str(outcome))
        elif isinstance(outcome, FhirAccessError):
            for key in query.keys:
                results[key].complete = False
                results[key].error = str(outcome)
                log.info("prefetch %s: FHIR query failed: %s", key, outcome)
        else:
            resources, complete = outcome
            for key, share in split(query, resources).items():
                results[key] = KeyResult(
                    resources=share, complete=complete, state=results[key].state, source="fhir",
                    error=None if complete else "not every page could be read",
                )

    run_all(client, first, [*reads, *planned, *follow], searches, settings.fhir_max_workers, report)


def resolve_tokens(template: str, request: HookRequest) -> str | None:
    """Fill 2.0 prefetch tokens from the hook context; None if one has no usable value."""
    values = _token_values(request)
    missing = False

    def fill(match: re.Match[str]) -> str:
        nonlocal missing
        value = values.get(match.group(1))
        if value is None:
            missing = True
            return ""
        return value

    query = _TOKEN.sub(fill, template)
    return None if missing else query


def _token_values(request: HookRequest) -> dict[str, str]:
    values = {"context.patientId": request.patient_id, "context.userId": request.user_id}
    if request.encounter_id:
        values["context.encounterId"] = request.encounter_id
    user_type, _, user_ref_id = request.user_id.partition("/")
    token_by_type = {
        "Practitioner": "userPractitionerId",
        "PractitionerRole": "userPractitionerRoleId",
        "Patient": "userPatientId",
        "RelatedPerson": "userRelatedPersonId",
    }
    if user_type in token_by_type and FHIR_ID.match(user_ref_id):
        values[token_by_type[user_type]] = user_ref_id
    if not FHIR_ID.match(request.user_id.replace("/", "")):
        values.pop("context.userId")  # goes into a URL: only plain references
    return values


def _cap_resources(results: Mapping[str, KeyResult], cap: int) -> None:
    """At most `cap` resources per key reach the facts stage: a chart with 34,000 PSA results
    would cost seconds per call. The rest are skipped and the key counts as incomplete, which
    lowers confidence on the card (data issue) instead of pretending the chart was read whole."""
    for key, result in results.items():
        if len(result.resources) > cap:
            log.warning("prefetch key %s: %d resources, only the first %d read", key,
                        len(result.resources), cap)
            result.resources = list(result.resources[:cap])
            result.complete = False
            result.error = result.error or f"more than {cap} resources; the rest were skipped"


def _group(
    results: Mapping[str, KeyResult], identity: PatientIdentity, patient: Resource | None
) -> tuple[dict[str, tuple[Resource, ...]], int, list[str]]:
    """Resources by type, deduplicated by id, with every resource that is not the context patient's
    left out. Returns (grouped, how many were left out, keys whose every result was left out)."""
    grouped: dict[str, dict[str, Resource]] = {}
    dropped: dict[str, int] = {}
    emptied: list[str] = []
    for key, result in results.items():
        kept = 0
        for resource in result.resources:
            verdict = OWN if resource is patient else belongs(resource, identity)
            if not usable(verdict):
                dropped[verdict] = dropped.get(verdict, 0) + 1
                continue
            kept += 1
            bucket = grouped.setdefault(resource["resourceType"], {})
            rid = resource.get("id")
            bucket_key = rid if isinstance(rid, str) and rid else f"#{len(bucket)}"
            bucket.setdefault(bucket_key, resource)
        if result.resources and not kept:
            emptied.append(key)
    total = sum(dropped.values())
    if total:
        # Safety: data about someone else must never reach the rules. Counts only, never ids.
        detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(dropped.items()))
        log.warning("dropped %d resources not attributable to the context patient (%s)", total, detail)
    return {rtype: tuple(bucket.values()) for rtype, bucket in grouped.items()}, total, emptied


def _missing_medications(client: FhirClient, results: Mapping[str, KeyResult]) -> list[str]:
    """Ids of the Medications that medication records reference but nobody sent.

    Many EHRs ignore `_include` in prefetch; without the Medication such a record names no drug.
    Only references on the same fhirServer (relative, or absolute under its base) are followed,
    at most MAX_MEDICATION_READS, within the same overall deadline. A failed read is left out: the
    facts stage then reports the record as unreadable.
    """
    sent = (r for res in results.values() for r in res.resources)
    have = {r.get("id") for r in sent if r.get("resourceType") == "Medication"}
    base = client.base_url.rstrip("/")
    wanted: list[str] = []
    for result in results.values():
        for resource in result.resources:
            if resource.get("resourceType") not in MEDICATION_RECORD_TYPES:
                continue
            ref = parse_reference(resource.get("medicationReference"))
            if ref is None or ref.type != "Medication" or ref.kind not in ("relative", "absolute"):
                continue
            if ref.kind == "absolute" and (ref.base or "").rstrip("/") != base:
                continue  # another server: never followed
            if ref.id not in have and ref.id not in wanted:
                wanted.append(ref.id)
    return wanted[:MAX_MEDICATION_READS]

"""Hook request JSON -> `HookRequest` plus the transient data-access parts (prefetch, fhirServer).

Strict only where it protects (ids that go into URLs, the hook/service match, selections that must
resolve); lenient about what real clients get wrong in draft orders (the CDS Hooks sandbox sends
non-R4 ServiceRequests and Bundles without `type`): those are passed on as sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cds_service.model import HookRequest, Resource
from cds_service.protocol.discovery import ServiceDefinition
from cds_service.protocol.errors import InvalidRequest

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

_ABSENT = object()


@dataclass(frozen=True)
class ParsedCall:
    """A validated call: what the engine reads, and how to reach the patient's data."""

    request: HookRequest
    prefetch: Mapping[str, Any] = field(default_factory=dict)  # key -> resource | Bundle | None
    fhir_server: str | None = None
    # Bearer token for fhir_server: transient, never logged or stored (repr=False keeps it out of logs)
    access_token: str | None = field(default=None, repr=False)


def parse_hook_request(
    body: Any, service: ServiceDefinition, base_url: str, max_draft_orders: int = 50
) -> ParsedCall:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object")
    hook = _required_str(body, "hook", "hook")
    if hook != service.hook:
        raise InvalidRequest(
            f"hook {hook!r} does not match service {service.id!r}, which answers {service.hook!r}"
        )
    hook_instance = _required_str(body, "hookInstance", "hookInstance")
    context = body.get("context")
    if not isinstance(context, dict):
        raise InvalidRequest("context is required and must be a JSON object")
    user_id = _required_str(context, "userId", "context.userId")
    patient_id = _required_str(context, "patientId", "context.patientId")
    if not FHIR_ID.match(patient_id):
        raise InvalidRequest("context.patientId must be a FHIR id (letters, digits, '-', '.'; 1-64 chars)")
    encounter_id = context.get("encounterId")
    if not isinstance(encounter_id, str) or not FHIR_ID.match(encounter_id):
        encounter_id = None

    draft_orders = _draft_order_resources(context.get("draftOrders", _ABSENT), max_draft_orders)
    selections: tuple[str, ...] = ()
    if hook == "order-select":
        selections = _selections(context.get("selections", _ABSENT), draft_orders)

    fhir_server = body.get("fhirServer")
    if not isinstance(fhir_server, str) or not fhir_server.strip():
        fhir_server = None
    auth = body.get("fhirAuthorization")
    token = auth.get("access_token") if isinstance(auth, dict) else None
    if not isinstance(token, str) or not token:
        token = None

    prefetch = body.get("prefetch")
    if not isinstance(prefetch, dict):
        prefetch = {}  # absent, or unusable: every key counts as not sent

    request = HookRequest(
        hook=hook,
        hook_instance=hook_instance,
        service_id=service.id,
        patient_id=patient_id,
        user_id=user_id,
        draft_orders=draft_orders,
        selections=selections,
        encounter_id=encounter_id,
        base_url=base_url,
    )
    return ParsedCall(request=request, prefetch=prefetch, fhir_server=fhir_server, access_token=token)


def _required_str(obj: Mapping[str, Any], key: str, label: str) -> str:
    value = obj.get(key)
    if value is None:
        raise InvalidRequest(f"{label} is required")
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{label} must be a non-empty string")
    return value.strip()


def _draft_order_resources(draft: Any, max_orders: int) -> tuple[Resource, ...]:
    if draft is _ABSENT or draft is None:
        raise InvalidRequest("context.draftOrders is required (a FHIR Bundle of draft orders)")
    if not isinstance(draft, dict):
        raise InvalidRequest("context.draftOrders must be a FHIR Bundle (a JSON object)")
    rtype = draft.get("resourceType")
    if rtype is not None and rtype != "Bundle":
        raise InvalidRequest(f"context.draftOrders must be a Bundle, got resourceType {rtype!r}")
    entries = draft.get("entry", [])
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise InvalidRequest("context.draftOrders.entry must be an array")
    if len(entries) > max_orders:
        # One order session holds a handful of orders; thousands cost seconds and memory per call.
        raise InvalidRequest(
            f"context.draftOrders has {len(entries)} entries; at most {max_orders} are accepted per call"
        )
    # Bundle.type is optional here: the hook's own examples and the sandbox omit it.
    resources = []
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            resources.append(resource)
    return tuple(resources)


def _selections(raw: Any, draft_orders: tuple[Resource, ...]) -> tuple[str, ...]:
    if raw is _ABSENT or raw is None:
        raise InvalidRequest("context.selections is required for order-select")
    if not isinstance(raw, list) or not all(isinstance(s, str) and s for s in raw):
        raise InvalidRequest("context.selections must be an array of 'ResourceType/id' strings")
    known = {
        f"{r['resourceType']}/{r['id']}" for r in draft_orders if isinstance(r.get("id"), str) and r["id"]
    }
    resolved = []
    for selection in raw:
        reference = _relative_reference(selection)
        if reference not in known:
            raise InvalidRequest(f"context.selections entry {selection!r} is not in context.draftOrders")
        resolved.append(reference)
    return tuple(resolved)


def _relative_reference(selection: str) -> str:
    """Accept "ServiceRequest/1" and absolute forms ending in it ("https://ehr/fhir/ServiceRequest/1")."""
    parts = selection.rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else selection

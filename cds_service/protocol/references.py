"""Read the targets of the draft orders' reasonReference that the prefetch did not bring.

An order's indication may point at a Condition, Observation or DiagnosticReport the prefetch
templates never asked for (an Observation with a code outside the lab list, a report outside the
page). They are read from the EHR's FHIR server like any other query: the same client (allowlisted
host, bearer token, per-call timeouts) and the same deadline as the prefetch fallback. Only the
hook's own FHIR server is asked: an absolute reference to another server is not followed (the
token must not travel there). A target that cannot be read is left out; the facts stage names it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from cds_service.fhir_refs import Ref, parse_reference

log = logging.getLogger(__name__)

# ServiceRequest.reasonReference targets in R4 that the facts stage reads.
TARGET_TYPES = frozenset({"Condition", "Observation", "DiagnosticReport"})
# An order with dozens of references is malformed; never let it turn into dozens of calls.
MAX_READS = 10


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _readable(ref: Ref, base_url: str) -> bool:
    if ref.type not in TARGET_TYPES:
        return False
    if ref.kind == "relative":
        return True
    return ref.kind == "absolute" and (ref.base or "").rstrip("/").lower() == base_url.rstrip("/").lower()


def missing_targets(
    draft_orders: Iterable[Any], have: Iterable[tuple[str, str]], base_url: str
) -> list[tuple[str, str]]:
    """(type, id) of every reasonReference target on `base_url` not already in `have`, in order."""
    known = set(have)
    out: list[tuple[str, str]] = []
    for order in draft_orders:
        if not isinstance(order, Mapping):
            continue
        for value in _as_list(order.get("reasonReference")):
            ref = parse_reference(value)
            if ref is None or not _readable(ref, base_url):
                continue
            key = (str(ref.type), ref.id)
            if key not in known:
                known.add(key)
                out.append(key)
    return out[:MAX_READS]


def accepted_targets(
    wanted: Iterable[tuple[str, str]], answers: Mapping[str, dict[str, Any] | None]
) -> list[dict[str, Any]]:
    """The targets read (answers by `Type/id`; None: the read failed and is skipped), in order;
    an answer that is another resource than the one asked for is not used."""
    found: list[dict[str, Any]] = []
    for rtype, rid in wanted:
        resource = answers.get(f"{rtype}/{rid}")
        if resource is None:
            continue
        if resource.get("resourceType") != rtype or resource.get("id") != rid:
            log.info("reasonReference %s: the server answered another resource; not used", rtype)
            continue
        found.append(resource)
    return found

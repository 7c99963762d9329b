"""The audit record of a hook call: which advice was given, by which rules, from which knowledge.

Built from what the response already says, as codes: PAMA ratings with the ACR category, source kind,
scenario and rule of each rated order, the fired rule ids, the card uuids (which link feedback to a
card); and from the engine's result: how many imaging orders the call rated, the facts the cards
asked for, the kinds of chart data that could not be read or retrieved, and imaging order codes
outside the procedure catalog. Chart codes the facts stage could not use are not tracked by code
(their issue texts quote record references; only their kind is kept).
Never a patient, user or order identifier, a token or card text (free text may carry PHI).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cds_service.model import EngineResult
from cds_service.protocol.feedback import AuditEntry

_PAMA_RATING = "/pama-rating"


def entry(
    service_id: str, hook_instance: str, hook: str, knowledge: Any, rule_ids: Iterable[str],
    body: Mapping[str, Any], fhir_calls: int, client_iss: str | None, result: EngineResult | None = None,
    site_config_version: str | None = None,
) -> AuditEntry:
    """`result` (None: the call had no ServiceRequest to rate) gives the governance view's counts:
    orders rated, facts asked for, unreadable data and unknown order codes, all as codes."""
    rating_url = knowledge.texts.rating_extension_url
    result = result or EngineResult()
    return AuditEntry(
        service_id=service_id,
        hook_instance=hook_instance,
        hook=hook,
        knowledge_version=str(knowledge.version),
        rule_ids=tuple(rule_ids),
        ratings=tuple(ratings_of(body.get("systemActions") or (), rating_url)),
        card_uuids=tuple(str(c.get("uuid")) for c in body.get("cards") or () if isinstance(c, Mapping)),
        fhir_calls=fhir_calls,
        client_iss=client_iss,
        site_config_version=site_config_version,  # the site file's `version` (CDS_SITE_CONFIG)
        orders=result.orders,
        missing_facts=result.missing_facts,
        unreadable=result.unreadable,
        unknown_codes=result.unknown_codes,
    )


def ratings_of(actions: Iterable[Any], rating_url: str) -> Iterable[dict[str, str]]:
    """Per rated order: the PAMA code and our extension's coded parts (no ids, no uuids)."""
    for action in actions:
        resource = action.get("resource") if isinstance(action, Mapping) else None
        if not isinstance(resource, Mapping):
            continue
        rated: dict[str, str] = {}
        for ext in resource.get("extension") or ():
            if not isinstance(ext, Mapping):
                continue
            url = str(ext.get("url", ""))
            if url.endswith(_PAMA_RATING):
                codings = (ext.get("valueCodeableConcept") or {}).get("coding") or ()
                rated["pama"] = next((str(c.get("code")) for c in codings if isinstance(c, Mapping)), "")
            elif url == rating_url:
                for part in ext.get("extension") or ():
                    if isinstance(part, Mapping) and isinstance(part.get("valueCode"), str):
                        rated[str(part.get("url"))] = part["valueCode"]
        if rated:
            yield rated

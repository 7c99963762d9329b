"""Draft orders -> imaging studies to rate.

Reads `context.draftOrders` defensively (the sandbox sends `code.coding: [{}]`, single objects where
arrays belong, no `intent`), recognises imaging ServiceRequests by (system, code) against the
catalog, resolves PET/CT tracers from the order's own codings, its orderDetail or a companion draft
order (never assumed), and joins orders that together make one study (CT chest + CT abdomen-pelvis
with contrast = CT C/A/P; CT chest + CT abdomen + CT pelvis too: every set in the catalog's
`components` / `component_sets`). Non-imaging orders are ignored; a part ordered alone stays a study of
its own and is answered in rating.py with its combination's evidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from cds_service.knowledge.model import Catalog, Tracer
from cds_service.knowledge.valuesets import MAX_CODE_CHARS, MAX_SYSTEM_CHARS
from cds_service.model import ImagingOrder, Resource

PET_UNSPECIFIED = "pet-ct-unspecified-tracer"
CPT = "http://www.ama-assn.org/go/cpt"
# Category codings that mark a ServiceRequest as imaging even when its code is not in the catalog.
IMAGING_CATEGORIES = frozenset({("http://snomed.info/sct", "363679005"), ("http://loinc.org", "LP29684-5")})


@dataclass(frozen=True)
class Study:
    """One imaging study: a single order, or the several orders that together make it."""

    procedure_id: str | None  # catalog id of the whole study; None = imaging, not in the catalog
    orders: tuple[ImagingOrder, ...]
    to_rate: tuple[ImagingOrder, ...]  # the orders this hook call rates (selected ones for order-select)
    tracer: Tracer | None = None
    unresolved_reason: str | None = None

    @property
    def references(self) -> tuple[str, ...]:
        return tuple(o.reference for o in self.orders)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def codings(concept: Any) -> Iterator[tuple[str, str]]:
    """Yield (system, code) pairs of a CodeableConcept, skipping anything malformed.

    >>> list(codings({"coding": [{}, {"system": "http://loinc.org", "code": "24587-8"}]}))
    [('http://loinc.org', '24587-8')]
    """
    if not isinstance(concept, dict):
        return
    for coding in _as_list(concept.get("coding")):
        if isinstance(coding, dict):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str) and system and code:
                if len(code) > MAX_CODE_CHARS or len(system) > MAX_SYSTEM_CHARS:
                    continue  # no catalog code is that long: garbage, skipped before any string work
                yield system, code.strip()


def _resource_codings(resource: Resource) -> list[tuple[str, str]]:
    found = list(codings(resource.get("code")))
    found += list(codings(resource.get("medicationCodeableConcept")))
    for detail in _as_list(resource.get("orderDetail")):
        found += list(codings(detail))
    return found


def _looks_like_imaging(resource: Resource) -> bool:
    for category in _as_list(resource.get("category")):
        if any(pair in IMAGING_CATEGORIES for pair in codings(category)):
            return True
    # CPT 70010-79999 is the radiology and nuclear-medicine section.
    return any(
        system == CPT and code[:5].isdigit() and code.startswith("7")
        for system, code in codings(resource.get("code"))
    )


def _tracers_in(pairs: Iterable[tuple[str, str]], catalog: Catalog) -> list[Tracer]:
    return [t for t in (catalog.tracer(s, c) for s, c in pairs) if t is not None]


def recognise_orders(
    draft_orders: Iterable[Resource], catalog: Catalog
) -> tuple[list[ImagingOrder], list[Tracer]]:
    """Return the imaging orders and the tracer codes found on companion (non-imaging) drafts."""
    orders: list[ImagingOrder] = []
    companion_tracers: list[Tracer] = []
    for resource in draft_orders:
        if not isinstance(resource, dict):
            continue
        pairs = _resource_codings(resource)
        own = [catalog.lookup(s, c) for s, c in codings(resource.get("code"))]
        procedure_id = next((p for p in own if p), None)
        is_service_request = resource.get("resourceType") == "ServiceRequest"
        if procedure_id is None and not (is_service_request and _looks_like_imaging(resource)):
            companion_tracers += _tracers_in(pairs, catalog)  # e.g. a radiopharmaceutical draft order
            continue
        resource_id = resource.get("id")
        if not is_service_request or not isinstance(resource_id, str) or not resource_id:
            continue  # an update or delete needs a ServiceRequest with an id
        reason = None if procedure_id else "ordered code is not in the procedure catalog"
        orders.append(ImagingOrder(f"ServiceRequest/{resource_id}", resource, procedure_id, reason))
    return orders, companion_tracers


def _resolve_pet(
    order: ImagingOrder, catalog: Catalog, companions: list[Tracer]
) -> tuple[str, Tracer | None, str | None]:
    own = _tracers_in(_resource_codings(order.resource), catalog)
    candidates = own or companions
    kinds = {t.procedure for t in candidates}
    if len(kinds) == 1:
        return kinds.pop(), candidates[0], None
    if len(kinds) > 1:
        return PET_UNSPECIFIED, None, "conflicting PET tracers are coded for this PET/CT"
    return PET_UNSPECIFIED, None, "the PET tracer is not coded in the order, its details or a companion order"


def group_studies(
    orders: list[ImagingOrder], catalog: Catalog, companions: list[Tracer], rate: set[str] | None = None
) -> list[Study]:
    """Join component orders into combined studies; `rate` limits which orders are rated (None = all)."""

    def rated(group: tuple[ImagingOrder, ...]) -> tuple[ImagingOrder, ...]:
        return tuple(o for o in group if rate is None or o.reference in rate)

    remaining = list(orders)
    studies: list[Study] = []
    for combo_id, components in catalog.join_sets:
        while True:
            parts = [next((o for o in remaining if o.procedure_id == c), None) for c in components]
            if any(p is None for p in parts):
                break
            group = tuple(p for p in parts if p is not None)  # all present: narrows the type
            remaining = [o for o in remaining if o not in group]
            studies.append(Study(combo_id, group, rated(group)))
    for order in remaining:
        group = (order,)
        if order.procedure_id == PET_UNSPECIFIED:
            pid, tracer, reason = _resolve_pet(order, catalog, companions)
            studies.append(Study(pid, group, rated(group), tracer, reason))
        else:
            studies.append(Study(order.procedure_id, group, rated(group), None, order.unresolved_reason))
    order_index = {o.reference: i for i, o in enumerate(orders)}
    studies.sort(key=lambda s: min(order_index[r] for r in s.references))
    return [s for s in studies if s.to_rate]


def studies_to_rate(
    hook: str, draft_orders: Iterable[Resource], selections: Iterable[str], catalog: Catalog
) -> list[Study]:
    """order-select rates the selected orders (with their non-selected partners); order-sign rates all."""
    orders, companions = recognise_orders(draft_orders, catalog)
    rate = set(selections) if hook == "order-select" else None
    return group_studies(orders, catalog, companions, rate)

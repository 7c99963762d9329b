"""FHIR pieces of the response: rating `update` systemActions and proposed replacement orders.

Rating actions follow the Argonaut CDS Hooks for PAMA convention: the draft ServiceRequest comes
back whole and unchanged except for its rating extensions (`pama-rating`, `pama-rating-consult-id`,
optionally `pama-rating-qcdsm-consulted`) plus this project's own extension
`{canonical_base}/StructureDefinition/imaging-appropriateness` with sub-extensions `category` (ACR
category, only for a rating of source kind `acr`), `translatedCategory` (the project's translation of
another guideline's statement, never sent as `category`), `sourceKind`, `scenario`, `rule`,
`procedure`, `unknownFact` (one per fact the record does not give that no value of would change the
rating, engine/completions.py) and `knowledgeVersion` (docs/knowledge.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from cds_service.engine.options import EngineOptions
from cds_service.engine.rating import StudyRating
from cds_service.knowledge import Knowledge
from cds_service.knowledge.model import Procedure
from cds_service.model import ImagingOrder, Resource

PAMA_RATING = "http://fhir.org/argonaut/Extension/pama-rating"
PAMA_CONSULT_ID = "http://fhir.org/argonaut/Extension/pama-rating-consult-id"
PAMA_QCDSM = "http://fhir.org/argonaut/Extension/pama-rating-qcdsm-consulted"
PAMA_SYSTEM = "http://fhir.org/argonaut/CodeSystem/pama-rating"
PAMA_DISPLAY = {
    "appropriate": "Appropriate",
    "not-appropriate": "Not appropriate",
    "no-criteria-apply": "No criteria apply",
}


def _extensions(resource: Resource, drop: set[str]) -> list[Any]:
    current = resource.get("extension")
    current = current if isinstance(current, list) else ([current] if isinstance(current, dict) else [])
    return [e for e in current if not (isinstance(e, dict) and e.get("url") in drop)]


@dataclass(frozen=True)
class RatingInfo:
    """What a rating extension records: verdict, ACR category and the rule that gave it."""

    pama: str
    category: str | None
    scenario_id: str
    rule_id: str
    procedure_id: str | None
    source_kind: str | None = None  # acr | translated (knowledge/model.py Rating.source_kind)
    unknown_facts: tuple[str, ...] = ()  # "rated with the T category unknown": ("t-category",)


def rating_extensions(info: RatingInfo, knowledge: Knowledge, options: EngineOptions) -> list[dict]:
    extensions: list[dict] = [
        {
            "url": PAMA_RATING,
            "valueCodeableConcept": {
                "coding": [{"system": PAMA_SYSTEM, "code": info.pama, "display": PAMA_DISPLAY[info.pama]}]
            },
        },
        {"url": PAMA_CONSULT_ID, "valueUri": f"urn:uuid:{options.new_uuid()}"},
    ]
    if options.qcdsm_id:
        extensions.append({"url": PAMA_QCDSM, "valueString": options.qcdsm_id})
    detail: list[dict] = []
    if info.category and info.source_kind == "acr":
        detail.append({"url": "category", "valueCode": info.category})
    elif info.category:  # another guideline's statement translated by the project: not an ACR category
        detail.append({"url": "translatedCategory", "valueCode": info.category})
    if info.category and info.source_kind:
        detail.append({"url": "sourceKind", "valueCode": info.source_kind})
    detail += [{"url": "scenario", "valueCode": info.scenario_id}, {"url": "rule", "valueCode": info.rule_id}]
    if info.procedure_id:
        detail.append({"url": "procedure", "valueCode": info.procedure_id})
    detail += [{"url": "unknownFact", "valueCode": fact} for fact in info.unknown_facts]
    detail.append({"url": "knowledgeVersion", "valueString": knowledge.version})
    extensions.append({"url": knowledge.texts.rating_extension_url, "extension": detail})
    return extensions


def rating_action(
    order: ImagingOrder, rated: StudyRating, knowledge: Knowledge, options: EngineOptions
) -> dict:
    ours = knowledge.texts.rating_extension_url
    resource = copy.deepcopy(dict(order.resource))
    if rated.pama is None:
        raise ValueError("rating_action needs a rated study")  # render() only passes rated ones
    info = RatingInfo(
        rated.pama,
        rated.category,
        rated.scenario_id,
        rated.rule_id,
        rated.procedure.id if rated.procedure else None,
        rated.rating.source_kind if rated.rating else None,
        tuple(u.id for u in rated.unknown_facts),
    )
    resource["extension"] = _extensions(resource, {PAMA_RATING, PAMA_CONSULT_ID, PAMA_QCDSM, ours}) + (
        rating_extensions(info, knowledge, options)
    )
    label = PAMA_DISPLAY[rated.pama].lower()
    return {
        "type": "update",
        "description": f"Record the imaging appropriateness rating ({label}) on the draft order",
        "resource": resource,
    }


def _coding(system: str, code: str) -> dict[str, str]:
    return {"system": system, "code": code}


def _order_template(template: Resource, code: dict[str, Any], new_id: str, *, urgent: bool) -> dict:
    order: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": new_id,
        "status": "draft",
        "intent": template.get("intent") if isinstance(template.get("intent"), str) else "order",
        "code": code,
    }
    if urgent:
        order["priority"] = "urgent"
    for key in ("subject", "encounter", "requester"):
        if isinstance(template.get(key), dict) and template[key]:
            order[key] = copy.deepcopy(template[key])
    reasons = template.get("reasonCode")
    reasons = reasons if isinstance(reasons, list) else ([reasons] if isinstance(reasons, dict) else [])
    reasons = [copy.deepcopy(r) for r in reasons if isinstance(r, dict) and r]
    if reasons:
        order["reasonCode"] = reasons  # the indication is carried over to the replacement
    return order


def can_order(procedure: Procedure, knowledge: Knowledge) -> bool:
    """A replacement is only offered when we can code it (e.g. whole-body MRI has no specific code)."""
    procs = knowledge.catalog.procedures
    if procedure.pet_tracer:
        return any(t.procedure == procedure.id for t in knowledge.catalog.tracers.values())
    parts = [procs[c] for c in procedure.components] or [procedure]
    return all(p.codes for p in parts)


def new_orders(
    procedure: Procedure,
    template: Resource,
    knowledge: Knowledge,
    options: EngineOptions,
    *,
    urgent: bool = False,
    rating: RatingInfo | None = None,
    skip: frozenset[str] = frozenset(),
) -> list[dict]:
    """ServiceRequests for `procedure`: one per component of a combined study; PET with its tracer code.

    With `rating`, each proposed order already carries its rating extensions, so an accepted
    suggestion arrives in the EHR rated (as the Argonaut PAMA demo does). `skip`: component ids
    already on the draft (MRI lumbar drafted -> complete the whole spine with cervical + thoracic).
    """
    orders = _unrated_orders(procedure, template, knowledge, options, urgent, skip)
    if rating:
        for order in orders:
            order["extension"] = rating_extensions(rating, knowledge, options)
    return orders


def _unrated_orders(
    procedure: Procedure,
    template: Resource,
    knowledge: Knowledge,
    options: EngineOptions,
    urgent: bool,
    skip: frozenset[str] = frozenset(),
) -> list[dict]:
    catalog = knowledge.catalog
    if procedure.pet_tracer:
        pet = catalog.procedures["pet-ct-unspecified-tracer"].codes[0]
        tracer = next(t for t in catalog.tracers.values() if t.procedure == procedure.id)
        # PET/CT CPT + tracer HCPCS in one code, the project's (and the fixtures') PET order convention
        code = {
            "coding": [_coding(pet.system, pet.code), _coding(tracer.system, tracer.code)],
            "text": f"{procedure.display} ({tracer.agent})",
        }
        return [_order_template(template, code, options.new_uuid(), urgent=urgent)]
    if procedure.components:
        parts = [catalog.procedures[c] for c in procedure.components if c not in skip]
    else:
        parts = [procedure]
    return [
        _order_template(
            template,
            {"coding": [_coding(p.codes[0].system, p.codes[0].code)], "text": p.display},
            options.new_uuid(),
            urgent=urgent,
        )
        for p in parts
    ]


def replace_actions(
    orders: tuple[ImagingOrder, ...],
    procedure: Procedure,
    knowledge: Knowledge,
    options: EngineOptions,
    *,
    urgent: bool = False,
    rating: RatingInfo | None = None,
) -> list[dict]:
    actions: list[dict[str, Any]] = [
        {"type": "delete", "description": f"Remove the draft order {o.reference}", "resourceId": o.reference}
        for o in orders
    ]
    template = orders[0].resource if orders else {}
    actions += [
        {"type": "create", "description": f"Order {order['code']['text']}", "resource": order}
        for order in new_orders(procedure, template, knowledge, options, urgent=urgent, rating=rating)
    ]
    return actions


def add_tracer_action(
    order: ImagingOrder,
    procedure: Procedure,
    knowledge: Knowledge,
    options: EngineOptions,
    rating: RatingInfo,
) -> dict:
    """Update a PET/CT draft with the chosen tracer in orderDetail (a user-accepted suggestion), rated."""
    tracer = next(t for t in knowledge.catalog.tracers.values() if t.procedure == procedure.id)
    resource = copy.deepcopy(dict(order.resource))
    details = resource.get("orderDetail")
    details = details if isinstance(details, list) else ([details] if isinstance(details, dict) else [])
    details.append({"coding": [_coding(tracer.system, tracer.code)], "text": tracer.agent})
    resource["orderDetail"] = details
    drop = {PAMA_RATING, PAMA_CONSULT_ID, PAMA_QCDSM, knowledge.texts.rating_extension_url}
    resource["extension"] = _extensions(resource, drop) + rating_extensions(rating, knowledge, options)
    return {"type": "update", "description": f"Specify the tracer: {tracer.agent}", "resource": resource}

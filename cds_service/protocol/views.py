"""HTTP endpoints: discovery, service invocation, feedback, liveness."""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from cds_service import engine
from cds_service.config import Settings
from cds_service.model import EngineResult, HookRequest
from cds_service.protocol import access_log, audit, metrics
from cds_service.protocol.auth import Authenticator, AuthError, Caller
from cds_service.protocol.discovery import SERVICES, SERVICES_BY_ID, PrefetchTemplate, ServiceDefinition
from cds_service.protocol.errors import ProtocolError, Unavailable
from cds_service.protocol.feedback import AuditEntry, FeedbackStore, parse_feedback
from cds_service.protocol.json_input import parse_json_body
from cds_service.protocol.prefetch import gather_record
from cds_service.protocol.request import ParsedCall, parse_hook_request
from cds_service.protocol.response import build_body, enforce_contract
from cds_service.protocol.snooze import CardSubject, Shown, Snoozer
from cds_service.state import migrate
from cds_service.state.db import DatabaseError

log = logging.getLogger(__name__)

blueprint = Blueprint("cds_hooks", __name__)

_JSON_MIMETYPES = ("application/json", "application/fhir+json")


@dataclass(frozen=True)
class ServiceState:
    """Everything loaded once at start (kept in app.extensions["cds"])."""

    settings: Settings
    knowledge: Any
    templates: dict[str, PrefetchTemplate]
    authenticator: Authenticator | None
    feedback: FeedbackStore
    engine_options: engine.EngineOptions = engine.EngineOptions()
    snoozer: Snoozer | None = None  # None: cards are never snoozed
    site: Any = None  # knowledge/site.py SiteConfig (CDS_SITE_CONFIG); None: no site file
    engine_knowledge: Any = None  # the knowledge as this site sees it (site_view); None: `knowledge`
    service_options: Mapping[str, engine.EngineOptions] = field(default_factory=dict)  # per service id
    snoozers: Mapping[str, Snoozer] = field(default_factory=dict)  # per service id (snooze window)


class Unauthorized(Exception):
    """Answered with a bare 401."""


def _state() -> ServiceState:
    state: ServiceState = current_app.extensions["cds"]
    return state


def _base_url() -> str:
    return _state().settings.public_base_url or request.url_root.rstrip("/")


def _authenticate() -> Caller | None:
    authenticator = _state().authenticator
    if authenticator is None:
        return None  # open (development) mode, warned about at start
    called = _base_url() + request.path
    audiences = {called, called.rstrip("/"), called.rstrip("/") + "/"}
    try:
        caller = authenticator.authenticate(request.headers.get("Authorization"), audiences)
    except AuthError as exc:
        access_log.note(auth=str(exc))
        raise Unauthorized() from exc
    access_log.note(auth="ok")
    return caller


def _service(service_id: str) -> ServiceDefinition:
    service = SERVICES_BY_ID.get(service_id)
    if service is None:
        raise ProtocolError(f"No CDS Service {service_id!r}; see GET /cds-services", status=404)
    return service


def _json_body() -> Any:
    if request.mimetype not in _JSON_MIMETYPES:
        raise ProtocolError("Content-Type must be application/json", status=415)
    raw = _read_body(_state().settings.max_body_bytes)
    # A large prefetch parses into ~10^5 containers; the cyclic GC would scan them repeatedly
    # while they are being built (none of them can be garbage yet).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return parse_json_body(raw, _state().settings.max_json_depth)
    finally:
        if gc_was_enabled:
            gc.enable()


def _read_body(limit: int) -> bytes:
    """The body, at most `limit` bytes. Flask checks Content-Length against MAX_CONTENT_LENGTH, but a
    chunked body has none: it is read up to the limit, and one byte more means 413, not a truncated
    body that fails to parse (400) and hides the reason."""
    if request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
        return request.get_data(cache=False)  # over the limit: werkzeug raises 413 itself
    # werkzeug's own stream stops silently at the limit; read the server's (chunked) input itself.
    stream, parts, size = request.environ["wsgi.input"], [], 0
    while size <= limit:  # a server may return short reads: read until EOF or one byte too many
        part = stream.read(limit + 1 - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > limit:
        raise ProtocolError(f"Request body too large (more than {limit} bytes)", status=413)
    return b"".join(parts)


@blueprint.get("/cds-services")
def discovery() -> Response:
    _authenticate()
    templates = _state().templates
    return jsonify({"services": [s.to_json(templates) for s in SERVICES]})


@blueprint.post("/cds-services/<service_id>")
def invoke(service_id: str) -> Response:
    caller = _authenticate()
    service = _service(service_id)
    access_log.note(service=service.id)
    body = _json_body()
    if isinstance(body, dict) and isinstance(body.get("hookInstance"), str):
        access_log.note(hookInstance=body["hookInstance"][:100], hook=body.get("hook"))
    state = _state()
    call = parse_hook_request(body, service, _base_url(), state.settings.max_draft_orders)
    if not _has_service_requests(call.request):
        # Only ServiceRequests can be imaging orders: a medication or diet order needs no
        # patient data, so none is fetched (an EHR may call on every order selected).
        access_log.note(skipped="no ServiceRequest in focus")
        _audit(state, service.id, call, (), {"cards": []}, 0, caller)
        return jsonify({"cards": []})
    today = state.settings.today or datetime.now(UTC).date()
    record, stats = gather_record(call, state.templates, state.settings, today)
    access_log.note(
        incomplete=list(record.incomplete), prefetch=dict(stats.states), fhir_fetched=list(stats.fetched),
        fhir_calls=stats.fhir_calls, fhir_server_refused=stats.server_refused or None,
    )
    result = engine.evaluate(
        call.request, record, state.engine_knowledge or state.knowledge,
        state.service_options.get(service.id, state.engine_options),
    )
    response_body, _ = enforce_contract(build_body(result), strict=state.settings.strict_responses)
    shown = _snooze(state, service.id, call, response_body, result.card_index)
    response_body = shown.body
    # the card index is written with the audit record: one round trip on PostgreSQL
    audited = _audit(
        state, service.id, call, result.rule_ids, response_body, stats.fhir_calls, caller, result,
        shown.card_index, shown.subjects, state.snoozer.clock() if state.snoozer else None,
    )
    metrics.note_result(
        response_body, {u: str(m.get("rule_id")) for u, m in shown.card_index.items()},
        [r["pama"] for r in audited.ratings if "pama" in r],
    )
    access_log.note(
        rule_ids=list(result.rule_ids), cards=len(response_body["cards"]), snoozed=shown.snoozed or None,
        system_actions=len(response_body.get("systemActions", [])),
    )
    return jsonify(response_body)


def _audit(
    state: ServiceState, service_id: str, call: ParsedCall, rule_ids: Any, body: dict[str, Any],
    fhir_calls: int, caller: Caller | None, result: EngineResult | None = None,
    card_index: Mapping[str, Mapping[str, str]] | None = None,
    subjects: Mapping[str, CardSubject] | None = None, at: float | None = None,
) -> AuditEntry:
    record = audit.entry(service_id, call.request.hook_instance, call.request.hook, state.knowledge, rule_ids,
                         body, fhir_calls, caller.iss if caller else None, result,
                         site_config_version=state.site.version if state.site else None)
    try:
        state.feedback.audit(record, card_index, subjects, at)
    except DatabaseError:
        # Guidance is never held back by its audit trail or its feedback links: answer anyway;
        # the gap is in the log, by hookInstance.
        metrics.note_state_error("audit")
        if card_index:
            log.exception("could not index cards for feedback / could not write the audit record")
            metrics.note_state_error("index_cards")
        else:
            log.exception("could not write the audit record")
    return record


@blueprint.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    caller = _authenticate()
    service = _service(service_id)
    access_log.note(service=service.id)
    settings = _state().settings
    items = parse_feedback(_json_body(), settings.max_feedback_items, settings.max_comment_chars)
    snoozer = _state().snoozer
    try:
        recorded = _state().feedback.record(
            service.id, items, caller.iss if caller else None, snoozer.now() if snoozer else None
        )
    except DatabaseError as exc:
        # Nothing was stored (one transaction): the client may send the same items again.
        log.error("could not record feedback: state database unavailable (%s)", type(exc).__name__)
        metrics.note_state_error("feedback")
        raise Unavailable("Feedback could not be stored now (state database unavailable); "
                          "send it again later") from exc
    access_log.note(
        feedback_items=len(items), feedback_new=recorded.stored, feedback_unknown=recorded.unknown,
        feedback_snoozed=recorded.snoozed or None,
    )
    return jsonify({"received": len(items), "stored": recorded.stored, "unknown": recorded.unknown})


@blueprint.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers. Depends on nothing, so a database outage never restarts it."""
    version = getattr(_state().knowledge, "version", None)
    return jsonify({"status": "ok", "knowledgeVersion": str(version)})


@blueprint.get("/readyz")
def readyz() -> Response:
    """Readiness: send traffic here? The knowledge base is loaded and the state database is at the
    schema this code writes.

    An unreachable database is reported (`"status": "degraded"`, and `cds_state_errors` in /metrics)
    but keeps the replica ready: the outage is shared by every replica, so taking them out of the
    load balancer would only stop the guidance, which never needs the database (issue 13: hook calls
    answer, feedback gets 503). A database that answers at an older schema does take the replica out
    (a rollout ahead of its migration).
    """
    state = _state()
    database = state.feedback.ready()
    checks = {
        "knowledge": "ok" if state.knowledge is not None and state.knowledge.scenarios else "not loaded",
        "database": database or "ok",
    }
    degraded = database is not None and database.startswith(migrate.UNREACHABLE)
    ready = all(v == "ok" for k, v in checks.items() if not (k == "database" and degraded))
    status = ("degraded" if degraded else "ready") if ready else "not ready"
    response = jsonify({"status": status, "checks": checks,
                        "knowledgeVersion": str(getattr(state.knowledge, "version", None))})
    response.status_code = 200 if ready else 503
    if not ready:
        response.headers["Retry-After"] = "5"
    return response


def _has_service_requests(req: HookRequest) -> bool:
    if req.hook == "order-select":
        return any(ref.startswith("ServiceRequest/") for ref in req.selections)
    return any(r.get("resourceType") == "ServiceRequest" for r in req.draft_orders)


def _snooze(
    state: ServiceState, service_id: str, call: ParsedCall, body: dict[str, Any], card_index: Any
) -> Shown:
    """Leave out the cards the clinician dismissed for this patient (protocol/snooze.py), over the
    service's own snooze window (CDS_SITE_CONFIG `services`, else CDS_SNOOZE_HOURS)."""
    snoozer = state.snoozers.get(service_id, state.snoozer)
    if snoozer is None:
        uuids = {c["uuid"] for c in body["cards"] if isinstance(c, dict) and isinstance(c.get("uuid"), str)}
        return Shown(body, {u: m for u, m in card_index.items() if u in uuids}, {})
    req = call.request
    return snoozer.filter(req.hook_instance, call.fhir_server, req.patient_id, body, card_index)

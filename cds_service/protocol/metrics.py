"""Prometheus metrics (`GET /metrics`): what operations and the CDS committee count, never who.

Labels carry only service ids, HTTP status, rule ids, card indicators, PAMA rating codes, prefetch
key names and states, and JWT failure reasons: bounded sets fixed by the code and the knowledge base.
No patient, user, order or hookInstance value ever becomes a label.

Under gunicorn every worker is its own process: `cds-service serve` points PROMETHEUS_MULTIPROC_DIR
at a fresh directory before the app is imported, so each worker writes its samples there and any
worker answers `/metrics` with the sum (prometheus_client's multiprocess mode). In one process
(tests, `flask run`) the default registry is used.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

blueprint = Blueprint("metrics", __name__)
disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the output and say nothing an operator needs

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# JWT failure reasons are log messages; the label keeps their fixed head, never a value from the token.
_REASON = re.compile(r"^[a-z][a-z ']*[a-z]")

REQUESTS = Counter("cds_requests", "HTTP calls to the CDS endpoints", ["endpoint", "service", "status"])
LATENCY = Histogram("cds_request_duration_seconds", "Time to answer a CDS endpoint call",
                    ["endpoint", "service"], buckets=_LATENCY_BUCKETS)
CARDS = Counter("cds_cards", "Cards returned", ["service", "rule", "indicator"])
RATINGS = Counter("cds_ratings", "PAMA ratings returned in systemActions", ["service", "rating"])
RULES = Counter("cds_rules_fired", "Rules that fired (scenario, red flag, pitfall, outcome)",
                ["service", "rule"])
PREFETCH = Counter("cds_prefetch_keys", "Prefetch keys by the state they arrived in", ["key", "state"])
FHIR_CALLS = Counter("cds_fhir_calls", "Outbound FHIR requests made for missing prefetch", ["service"])
FHIR_INCOMPLETE = Counter("cds_fhir_incomplete", "Hook calls whose record stayed incomplete", ["service"])
FEEDBACK = Counter("cds_feedback_items", "Feedback items received", ["service", "stored"])
AUTH_FAILURES = Counter("cds_auth_failures", "Calls refused by JWT authentication", ["reason"])
# The state database is off the guidance path: its failures show here (alert on it), not in /readyz.
STATE_ERRORS = Counter("cds_state_errors", "State database operations that failed; the call went on",
                       ["operation"])


def note_state_error(operation: str) -> None:
    """`operation`: a fixed name from the code (index_cards, audit, snooze, jti, feedback)."""
    STATE_ERRORS.labels(operation).inc()


def init_app(app: Flask) -> None:
    app.register_blueprint(blueprint)

    @app.after_request
    def _observe(response: Response) -> Response:
        if request.path.startswith("/cds-services") and request.method != "OPTIONS" and "started" in g:
            seconds = time.perf_counter() - g.started
            observe(_endpoint(request.path), g.get("log") or {}, response.status_code, seconds,
                    g.get("metrics_result"))
        return response


def _endpoint(path: str) -> str:
    if path.rstrip("/") == "/cds-services":
        return "discovery"
    return "feedback" if path.rstrip("/").endswith("/feedback") else "hook"


def note_result(body: Mapping[str, Any], card_rules: Mapping[str, str], ratings: Iterable[str]) -> None:
    """Remember the answer's cards (uuid -> rule id) and PAMA ratings (as read once for the audit
    record) for this call's samples."""
    g.metrics_result = (body, card_rules, tuple(ratings))


def observe(endpoint: str, fields: Mapping[str, Any], status: int, seconds: float,
            result: tuple[Mapping[str, Any], Mapping[str, str], tuple[str, ...]] | None = None) -> None:
    service = str(fields.get("service") or "-")
    REQUESTS.labels(endpoint, service, str(status)).inc()
    LATENCY.labels(endpoint, service).observe(seconds)
    for rule in fields.get("rule_ids") or ():
        RULES.labels(service, str(rule)).inc()
    for key, state in (fields.get("prefetch") or {}).items():
        PREFETCH.labels(str(key), str(state)).inc()
    if fields.get("fhir_calls"):
        FHIR_CALLS.labels(service).inc(int(fields["fhir_calls"]))
    if fields.get("incomplete"):
        FHIR_INCOMPLETE.labels(service).inc()
    if fields.get("feedback_items"):
        stored = int(fields.get("feedback_new") or 0)
        FEEDBACK.labels(service, "new").inc(stored)
        FEEDBACK.labels(service, "repeat-or-unknown").inc(max(0, int(fields["feedback_items"]) - stored))
    auth = fields.get("auth")
    if auth and auth != "ok":
        match = _REASON.match(str(auth))
        AUTH_FAILURES.labels(match.group(0) if match else "other").inc()
    if result is not None:
        body, card_rules, ratings = result
        for card in body.get("cards") or ():
            rule = card_rules.get(str(card.get("uuid")), "-")
            CARDS.labels(service, rule, str(card.get("indicator"))).inc()
        for rating in ratings:
            RATINGS.labels(service, rating).inc()


@blueprint.get("/metrics")
def metrics() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        data = generate_latest(registry)
    else:
        data = generate_latest()
    return Response(data, headers={"Content-Type": CONTENT_TYPE_LATEST})

"""One structured (JSON) log line per call.

Only operational fields: never tokens, JWTs, names or patient ids. `hookInstance` and rule ids are
what an operator needs to find a call and the guidance it produced.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, request

log = logging.getLogger("cds_service.access")

# The only fields a line may carry (anything else set on g.log is dropped).
FIELDS = (
    "service", "hook", "hookInstance", "status", "duration_ms", "rule_ids", "cards", "system_actions",
    "incomplete", "prefetch", "fhir_fetched", "fhir_calls", "fhir_server_refused", "feedback_items",
    "feedback_new", "auth", "error", "skipped",
)


def note(**fields: Any) -> None:
    """Add fields to this call's log line."""
    g.setdefault("log", {}).update(fields)


def init_app(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        g.log = {}

    @app.after_request
    def _emit(response: Response) -> Response:
        if request.path.startswith("/cds-services") and request.method != "OPTIONS":
            fields = {k: v for k, v in g.get("log", {}).items() if k in FIELDS and v not in (None, [], {})}
            line = {
                "event": "cds_call",
                "method": request.method,
                "path": request.path if "service" not in fields else None,
                **fields,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 1),
            }
            log.info(json.dumps({k: v for k, v in line.items() if v is not None}, separators=(",", ":")))
        return response


class JsonFormatter(logging.Formatter):
    """Every log record as one JSON object (for the CLI and the WSGI entry point)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            # UTC with milliseconds: lines from several hosts and time zones sort and join.
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        try:
            parsed = json.loads(message) if message.startswith("{") else None
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            entry.update(parsed)
        else:
            entry["message"] = message
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

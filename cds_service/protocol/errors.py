"""Errors the protocol layer answers with, each carrying its HTTP status and an OperationOutcome."""

from __future__ import annotations

from typing import Any

# HTTP status -> OperationOutcome.issue.code (http://hl7.org/fhir/issue-type)
_ISSUE_CODES = {
    400: "invalid",
    401: "login",
    404: "not-found",
    405: "not-supported",
    412: "incomplete",
    413: "too-long",
    415: "not-supported",
    500: "exception",
    503: "transient",
}


class ProtocolError(Exception):
    """A request the service cannot serve; `status` is the HTTP status to answer with."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class InvalidRequest(ProtocolError):
    status = 400


class PreconditionFailed(ProtocolError):
    """Required FHIR data (the Patient) could be had neither from prefetch nor from fhirServer."""

    status = 412


class Unavailable(ProtocolError):
    """A dependency (the state database) is down: answered 503 with Retry-After; the client retries."""

    status = 503
    retry_after = 5  # seconds (state/db.py DOWN_SECONDS: when the next attempt is made)


def operation_outcome(status: int, message: str) -> dict[str, Any]:
    severity = "fatal" if status >= 500 else "error"
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": severity, "code": _ISSUE_CODES.get(status, "processing"), "diagnostics": message}
        ],
    }

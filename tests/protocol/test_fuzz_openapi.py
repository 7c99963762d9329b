"""Schemathesis against GET /openapi.json, in-process (WSGI): every described operation is called
with generated requests (valid and invalid bodies, path parameters). No 5xx; every 200 from a hook
call passes the response validator; every other hook/feedback answer is an OperationOutcome or a
bare 401. Complements test_fuzz.py (mutations of realistic bodies) with schema-driven generation.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from cds_service.protocol.validator import validate_response

schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    from cds_service.app import create_app
    from cds_service.config import Settings

    # Open mode, no FHIR server allowed: a generated fhirServer must never cause an outbound call.
    cfg = Settings(today=date(2026, 11, 22), strict_responses=True,
                   feedback_db=tmp_path_factory.mktemp("st") / "fb.sqlite3")
    app = create_app(replace(cfg))
    app.testing = True
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=150, deadline=None, database=None, derandomize=bool(os.environ.get("CI")),
          suppress_health_check=list(HealthCheck))
def test_generated_requests_never_5xx(case: Any) -> None:
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    path = case.operation.path
    if not path.startswith("/cds-services/"):
        return
    if response.status_code == 401 or case.method.upper() != case.operation.method.upper():
        return  # bare 401; an undescribed method (OPTIONS is the CORS preflight, empty 200)
    payload = json.loads(response.content, parse_constant=_no_constants)
    if response.status_code != 200:
        assert payload["resourceType"] == "OperationOutcome"
    elif path == "/cds-services/{service_id}":
        assert validate_response(payload) == []


def _no_constants(name: str) -> Any:
    raise AssertionError(f"{name} in a response: not JSON")

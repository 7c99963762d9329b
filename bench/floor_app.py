"""The framework floor: a bare Flask app that parses the same JSON body and returns no cards.

Served by gunicorn with exactly the settings the bench uses for the real service, so the ratio
service/floor isolates what the service adds on top of gunicorn + Flask + JSON parsing.
`gunicorn bench.floor_app:app`
"""

from __future__ import annotations

from flask import Flask, jsonify, request

from bench.workloads import DEFAULT_DISCOVERY


def create_floor_app() -> Flask:
    floor = Flask(__name__)

    @floor.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        return jsonify(status="ok")

    @floor.get("/cds-services")
    def discovery():  # type: ignore[no-untyped-def]
        # the bench's default templates, so the floor can stand in for the service (A/A check)
        return jsonify(services=[DEFAULT_DISCOVERY])

    @floor.post("/cds-services/<service_id>")
    def invoke(service_id: str):  # type: ignore[no-untyped-def]
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            return jsonify(
                resourceType="OperationOutcome",
                issue=[{"severity": "error", "code": "invalid", "diagnostics": "body is not JSON"}],
            ), 400
        return jsonify(cards=[])

    return floor


app = create_floor_app()

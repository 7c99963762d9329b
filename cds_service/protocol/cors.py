"""CORS for browser-based CDS Clients (the CDS Hooks sandbox): origins from CDS_CORS_ORIGINS."""

from __future__ import annotations

from collections.abc import Iterable

from flask import Flask, Response, request

ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type"


def init_app(app: Flask, origins: Iterable[str]) -> None:
    allowed = {o.rstrip("/") for o in origins}
    wildcard = "*" in allowed

    @app.after_request
    def _cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if not origin:
            return response
        if wildcard:
            # No credentials are used (the JWT is a header), so "*" is safe to send as such.
            response.headers["Access-Control-Allow-Origin"] = "*"
        elif origin.rstrip("/") in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.vary.add("Origin")
        else:
            return response
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
        return response

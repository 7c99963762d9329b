"""GET /openapi.json: the hand-written OpenAPI description (docs/openapi.yaml), served as JSON.

Read once when the app is built. Public on purpose: it is in the repository and says nothing a
caller could not learn from discovery. Not found (an install without docs/) -> 404 and a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from cds_service import yaml_load
from cds_service.protocol.errors import ProtocolError

log = logging.getLogger(__name__)

blueprint = Blueprint("openapi", __name__)

# The source tree first; then the copy an installed wheel carries as package data (pyproject.toml).
_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml",
    Path(__file__).resolve().parents[1] / "_docs" / "openapi.yaml",
)


def load_description(candidates: tuple[Path, ...] = _CANDIDATES) -> dict[str, Any] | None:
    for path in candidates:
        if path.is_file():
            data = yaml_load.safe_load(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or "openapi" not in data:
                raise ValueError(f"{path}: not an OpenAPI document")
            return data
    log.warning("docs/openapi.yaml not found: GET /openapi.json will answer 404")
    return None


def init_app(app: Any) -> None:
    app.extensions["cds_openapi"] = load_description()
    app.register_blueprint(blueprint)


@blueprint.get("/openapi.json")
def openapi() -> Response:
    description = current_app.extensions.get("cds_openapi")
    if description is None:
        raise ProtocolError("No OpenAPI description installed", status=404)
    return jsonify(description)

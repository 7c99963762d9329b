"""Human-readable pages explaining each rule, linked from every card (`GET /rules/<rule_id>`).

Placeholder until the knowledge-engine issue lands; the protocol layer registers `blueprint`.
"""

from __future__ import annotations

from flask import Blueprint, abort

blueprint = Blueprint("rule_pages", __name__)


@blueprint.get("/rules/<rule_id>")
def rule_page(rule_id: str):
    abort(404)

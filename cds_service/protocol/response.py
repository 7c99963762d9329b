"""EngineResult -> CDS Hooks response body, checked against the 2.0 contract before it leaves."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from cds_service.model import EngineResult
from cds_service.protocol.validator import prune_empty, validate_card, validate_response

log = logging.getLogger(__name__)


class ResponseContractError(RuntimeError):
    """The engine produced a response that breaks CDS Hooks 2.0 (a bug; raised in strict mode)."""


def build_body(result: EngineResult) -> dict[str, Any]:
    cards = [_card(plain(c)) for c in result.cards]
    actions = [_action(plain(a)) for a in result.system_actions]
    body: dict[str, Any] = {"cards": cards}
    if actions:
        body["systemActions"] = actions
        # The sandbox's PAMA tab reads only the Argonaut 2019 location.
        body["extension"] = {"systemActions": actions}
    return body


def enforce_contract(body: dict[str, Any], strict: bool) -> tuple[dict[str, Any], list[str]]:
    """Return a valid body: raise in strict mode, else drop what is invalid and report it."""
    problems = validate_response(body)
    if not problems:
        return body, []
    if strict:
        raise ResponseContractError("; ".join(problems))
    log.error("response contract violations (dropping offending items): %s", "; ".join(problems))
    cards = [c for c in body["cards"] if not validate_card(c) and not validate_response({"cards": [c]})]
    actions = [
        a for a in body.get("systemActions", []) if not validate_response({"cards": [], "systemActions": [a]})
    ]
    fixed: dict[str, Any] = {"cards": cards}
    if actions:
        fixed["systemActions"] = actions
        fixed["extension"] = {"systemActions": actions}
    if validate_response(fixed):  # e.g. duplicate uuids across cards
        fixed = {"cards": []}
    return fixed, problems


def plain(value: Any) -> Any:
    """Mappings and tuples from the engine's frozen values -> JSON dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _action(action: dict[str, Any]) -> dict[str, Any]:
    if isinstance(action.get("resource"), dict):
        action = {**action, "resource": prune_empty(action["resource"])}
    return action


def _card(card: dict[str, Any]) -> dict[str, Any]:
    suggestions = card.get("suggestions")
    if isinstance(suggestions, list):
        card = {
            **card,
            "suggestions": [
                {**s, "actions": [_action(a) for a in s["actions"]]}
                if isinstance(s, dict) and isinstance(s.get("actions"), list) else s
                for s in suggestions
            ],
        }
    return card

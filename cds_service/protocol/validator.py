"""CDS Hooks 2.0 response contract, checked on every response before it leaves.

`validate_response(body)` is pure and returns human-readable violations (empty list: valid), so the
engine's tests can use it too. Rules: the 2.0 spec's Card/Suggestion/Action/Link/Coding
requirements, the 3.0 ballot invariants cds-resp-1..6, and two house rules (uuid on every card and
suggestion so feedback can be linked; PAMA rating codes from the Argonaut code system).
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

INDICATORS = {"info", "warning", "critical"}
SELECTION_BEHAVIORS = {"at-most-one", "any"}
ACTION_TYPES = {"create", "update", "delete"}
LINK_TYPES = {"absolute", "smart"}
PAMA_RATING_URL = "http://fhir.org/argonaut/Extension/pama-rating"
PAMA_RATING_SYSTEM = "http://fhir.org/argonaut/CodeSystem/pama-rating"
PAMA_CODES = {"appropriate", "not-appropriate", "no-criteria-apply"}
SUMMARY_MAX = 139  # "<140-character summary"
_TOP_LEVEL = {"cards", "systemActions", "extension"}


def validate_response(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["response must be a JSON object"]
    problems: list[str] = []
    if "cards" not in body:
        problems.append("cards: required")
    elif not isinstance(body["cards"], list):
        problems.append("cards: must be an array")
    for key in body:
        if key not in _TOP_LEVEL:
            problems.append(f"{key}: not a CDS Hooks response member")
    # The one empty value the spec allows: {"cards": []} means "no guidance".
    for key, value in body.items():
        if key == "cards" and value == []:
            continue
        problems.extend(_empties(value, key))
    uuids: list[str] = []
    for i, card in enumerate(body.get("cards") or [] if isinstance(body.get("cards"), list) else []):
        problems.extend(validate_card(card, f"cards[{i}]", uuids))
    system_actions = body.get("systemActions")
    if system_actions is not None:
        problems.extend(_actions(system_actions, "systemActions"))
    extension = body.get("extension")
    if extension is not None:
        if not isinstance(extension, dict):
            problems.append("extension: must be an object")
        elif "systemActions" in extension:
            problems.extend(_actions(extension["systemActions"], "extension.systemActions"))
    duplicates = sorted({u for u in uuids if uuids.count(u) > 1})
    if duplicates:
        problems.append(f"uuids must be unique in a response: {', '.join(duplicates)}")
    return problems


def validate_card(card: Any, path: str = "card", uuids: list[str] | None = None) -> list[str]:
    """Violations of one card (structure only; `validate_response` also checks empties)."""
    seen = uuids if uuids is not None else []
    if not isinstance(card, dict):
        return [f"{path}: must be an object"]
    p: list[str] = []
    _uuid(card, path, p, seen)
    summary = card.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        p.append(f"{path}.summary: required string")
    elif len(summary) > SUMMARY_MAX:
        p.append(f"{path}.summary: {len(summary)} characters, must be under 140")
    if card.get("indicator") not in INDICATORS:
        p.append(f"{path}.indicator: must be one of {sorted(INDICATORS)}")
    if "detail" in card and not isinstance(card["detail"], str):
        p.append(f"{path}.detail: must be a Markdown string")
    _source(card.get("source"), f"{path}.source", p)
    suggestions = card.get("suggestions")
    behavior = card.get("selectionBehavior")
    if suggestions is not None:
        if not isinstance(suggestions, list):
            p.append(f"{path}.suggestions: must be an array")
            suggestions = []
        if behavior is None:
            p.append(f"{path}.selectionBehavior: required when suggestions are present (cds-resp-6)")
        for j, suggestion in enumerate(suggestions):
            _suggestion(suggestion, f"{path}.suggestions[{j}]", p, seen)
        recommended = [s for s in suggestions if isinstance(s, dict) and s.get("isRecommended") is True]
        if behavior == "at-most-one" and len(recommended) > 1:
            p.append(f"{path}: at most one suggestion may be isRecommended with at-most-one (cds-resp-1)")
    if behavior is not None and behavior not in SELECTION_BEHAVIORS:
        p.append(f"{path}.selectionBehavior: must be one of {sorted(SELECTION_BEHAVIORS)}")
    reasons = card.get("overrideReasons")
    if reasons is not None:
        if not isinstance(reasons, list):
            p.append(f"{path}.overrideReasons: must be an array")
        else:
            for j, reason in enumerate(reasons):
                _coding(reason, f"{path}.overrideReasons[{j}]", p, display_required=True)
    links = card.get("links")
    if links is not None:
        if not isinstance(links, list):
            p.append(f"{path}.links: must be an array")
        else:
            for j, link in enumerate(links):
                _link(link, f"{path}.links[{j}]", p)
    return p


def _uuid(obj: dict[str, Any], path: str, p: list[str], seen: list[str]) -> None:
    value = obj.get("uuid")
    if not isinstance(value, str) or not value:
        p.append(f"{path}.uuid: required so feedback can be linked")
    else:
        seen.append(value)


def _source(source: Any, path: str, p: list[str]) -> None:
    if not isinstance(source, dict):
        p.append(f"{path}: required object")
        return
    if not isinstance(source.get("label"), str) or not source.get("label"):
        p.append(f"{path}.label: required string")
    if "url" in source and not _absolute_url(source["url"]):
        p.append(f"{path}.url: must be an absolute URL")
    if "icon" in source and not _absolute_url(source["icon"]):
        p.append(f"{path}.icon: must be an absolute URL")
    if "topic" in source:
        _coding(source["topic"], f"{path}.topic", p, display_required=False)


def _suggestion(suggestion: Any, path: str, p: list[str], seen: list[str]) -> None:
    if not isinstance(suggestion, dict):
        p.append(f"{path}: must be an object")
        return
    if not isinstance(suggestion.get("label"), str) or not suggestion.get("label"):
        p.append(f"{path}.label: required string")
    _uuid(suggestion, path, p, seen)
    if "isRecommended" in suggestion and not isinstance(suggestion["isRecommended"], bool):
        p.append(f"{path}.isRecommended: must be a boolean")
    if "actions" in suggestion:
        p.extend(_actions(suggestion["actions"], f"{path}.actions"))


def _actions(actions: Any, path: str) -> list[str]:
    if not isinstance(actions, list):
        return [f"{path}: must be an array"]
    p: list[str] = []
    for i, action in enumerate(actions):
        where = f"{path}[{i}]"
        if not isinstance(action, dict):
            p.append(f"{where}: must be an object")
            continue
        kind = action.get("type")
        if kind not in ACTION_TYPES:
            p.append(f"{where}.type: must be one of {sorted(ACTION_TYPES)}")
        if not isinstance(action.get("description"), str) or not action.get("description"):
            p.append(f"{where}.description: required on every action (cds-resp-5)")
        resource = action.get("resource")
        if kind in ("create", "update"):
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                p.append(f"{where}.resource: a FHIR resource is required for {kind}")
            else:
                _pama(resource, f"{where}.resource", p)
            if kind == "update" and isinstance(resource, dict) and not resource.get("id"):
                p.append(f"{where}.resource.id: an update needs the id of the resource it replaces")
        if kind == "delete":
            resource_id = action.get("resourceId")
            if not isinstance(resource_id, str) or "/" not in resource_id:
                p.append(f"{where}.resourceId: 'Type/id' required for delete (cds-resp-2)")
            if resource is not None:
                p.append(f"{where}.resource: not allowed for delete; use resourceId (cds-resp-2)")
    return p


def _pama(resource: dict[str, Any], path: str, p: list[str]) -> None:
    extensions = resource.get("extension")
    for ext in extensions if isinstance(extensions, list) else ():
        if not isinstance(ext, dict) or ext.get("url") != PAMA_RATING_URL:
            continue
        codings = (ext.get("valueCodeableConcept") or {}).get("coding") or []
        ok = any(
            isinstance(c, dict) and c.get("system") == PAMA_RATING_SYSTEM and c.get("code") in PAMA_CODES
            for c in codings
        )
        if not ok:
            p.append(f"{path}: pama-rating must be coded {sorted(PAMA_CODES)} in {PAMA_RATING_SYSTEM}")


def _coding(coding: Any, path: str, p: list[str], display_required: bool) -> None:
    if not isinstance(coding, dict):
        p.append(f"{path}: must be a Coding object")
        return
    for member in ("system", "code"):
        if not isinstance(coding.get(member), str) or not coding.get(member):
            p.append(f"{path}.{member}: required")
    if display_required and (not isinstance(coding.get("display"), str) or not coding.get("display")):
        p.append(f"{path}.display: required on override reasons (cds-resp-4)")


def _link(link: Any, path: str, p: list[str]) -> None:
    if not isinstance(link, dict):
        p.append(f"{path}: must be an object")
        return
    if not isinstance(link.get("label"), str) or not link.get("label"):
        p.append(f"{path}.label: required string")
    if not _absolute_url(link.get("url")):
        p.append(f"{path}.url: required absolute URL")
    if link.get("type") not in LINK_TYPES:
        p.append(f"{path}.type: must be one of {sorted(LINK_TYPES)}")
    if "appContext" in link and link.get("type") != "smart":
        p.append(f"{path}.appContext: only for smart links (cds-resp-3)")
    if "autolaunchable" in link and not isinstance(link["autolaunchable"], bool):
        p.append(f"{path}.autolaunchable: must be a boolean")


def _absolute_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _empties(value: Any, path: str) -> list[str]:
    """Every null, "", [] or {} member ("SHALL NOT be null or empty"), and every NaN/Infinity
    (not JSON: the browser's JSON.parse would reject the whole response)."""
    if value is None:
        return [f"{path}: null is not allowed; omit the member"]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path}: {value} is not a JSON number (NaN and Infinity are not allowed)"]
    if isinstance(value, str):
        return [f"{path}: empty string is not allowed"] if value == "" else []
    if isinstance(value, list):
        if not value:
            return [f"{path}: empty array is not allowed; omit the member"]
        return [m for i, item in enumerate(value) for m in _empties(item, f"{path}[{i}]")]
    if isinstance(value, dict):
        if not value:
            return [f"{path}: empty object is not allowed; omit the member"]
        return [m for key, item in value.items() for m in _empties(item, f"{path}.{key}")]
    return []


def prune_empty(value: Any) -> Any:
    """A copy of a FHIR resource without null/empty members (FHIR JSON forbids them too).

    Draft orders are echoed back in update actions "in their entirety"; clients such as the
    sandbox send `reasonCode: []` or `coding: [{}]`, which must not make our response invalid.
    """
    if isinstance(value, dict):
        pruned = {k: prune_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if not _is_empty(v)}
    if isinstance(value, list):
        pruned_list = [prune_empty(v) for v in value]
        return [v for v in pruned_list if not _is_empty(v)]
    return value


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}

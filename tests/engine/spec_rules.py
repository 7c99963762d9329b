"""A small CDS Hooks 2.0 response checker for engine tests (the protocol layer owns the real validator)."""

from __future__ import annotations

from typing import Any

from cds_service.model import EngineResult


def _no_empty(value: Any, path: str, problems: list[str]) -> None:
    if value is None or value == [] or value == {} or value == "":
        problems.append(f"{path}: null or empty")
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_empty(v, f"{path}.{k}", problems)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_empty(v, f"{path}[{i}]", problems)


def problems(result: EngineResult) -> list[str]:
    out: list[str] = []
    response = {"cards": list(result.cards), "systemActions": list(result.system_actions)}
    for key in ("cards", "systemActions"):
        for i, item in enumerate(response[key]):
            _no_empty(item, f"{key}[{i}]", out)
    for i, card in enumerate(result.cards):
        where = f"cards[{i}]"
        if not (isinstance(card.get("summary"), str) and len(card["summary"]) < 140):
            out.append(f"{where}.summary: missing or >= 140 characters")
        if card.get("indicator") not in ("info", "warning", "critical"):
            out.append(f"{where}.indicator invalid")
        if not card.get("source", {}).get("label"):
            out.append(f"{where}.source.label missing")
        if not card.get("uuid"):
            out.append(f"{where}.uuid missing")
        if card.get("suggestions") and card.get("selectionBehavior") not in ("at-most-one", "any"):
            out.append(f"{where}: suggestions without selectionBehavior")
        recommended = [s for s in card.get("suggestions", []) if s.get("isRecommended")]
        if card.get("selectionBehavior") == "at-most-one" and len(recommended) > 1:
            out.append(f"{where}: more than one recommended suggestion")
        for reason in card.get("overrideReasons", []):
            if not reason.get("display"):
                out.append(f"{where}: override reason without display")
        for link in card.get("links", []):
            if (
                not str(link.get("url", "")).startswith(("http://", "https://"))
                or link.get("type") != "absolute"
            ):
                out.append(f"{where}: link not absolute")
        for j, s in enumerate(card.get("suggestions", [])):
            if not s.get("uuid") or not s.get("label"):
                out.append(f"{where}.suggestions[{j}]: uuid and label required")
            for action in s.get("actions", []):
                if not action.get("description"):
                    out.append(f"{where}.suggestions[{j}]: action without description")
                if action.get("type") == "delete" and not action.get("resourceId"):
                    out.append(f"{where}.suggestions[{j}]: delete without resourceId")
    for i, action in enumerate(result.system_actions):
        if not action.get("description") or action.get("type") != "update" or "resource" not in action:
            out.append(f"systemActions[{i}]: update with description and resource required")
    return out

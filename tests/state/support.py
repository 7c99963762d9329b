"""Requests the state tests send: a card-producing hook call from a fixture case, feedback on its cards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cds_service import replay
from cds_service.bundle_search import BundleStore
from cds_service.protocol.discovery import SERVICES_BY_ID, load_prefetch_templates

CASES = Path(__file__).resolve().parents[2] / "fixtures" / "cases"
CASE = "breast-early-stage-ct-cap"  # a CT chest/abdomen/pelvis for early-stage breast cancer: a card
SERVICE = "imaging-appropriateness"
HOOK = f"/cds-services/{SERVICE}"
FEEDBACK = f"{HOOK}/feedback"


def case() -> replay.Replay:
    return replay.load(CASES / f"{CASE}.json")


def hook_request() -> dict[str, Any]:
    """The case's order-select call with its prefetch filled (a new hookInstance each time)."""
    from cds_service.knowledge import DEFAULT_CARDS_DIR

    loaded = case()
    request = replay.build_request(loaded)
    templates = SERVICES_BY_ID[SERVICE].to_json(load_prefetch_templates(DEFAULT_CARDS_DIR))["prefetch"]
    replay.fill_prefetch(request, templates, BundleStore(loaded.bundle))
    return request


def accepted(card: dict[str, Any], ts: str = "2026-11-30T10:00:00Z") -> dict[str, Any]:
    suggestion = (card.get("suggestions") or [{"uuid": "no-suggestion"}])[0]["uuid"]
    return {"card": card["uuid"], "outcome": "accepted", "acceptedSuggestions": [{"id": suggestion}],
            "outcomeTimestamp": ts}

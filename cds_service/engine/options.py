"""Deployment options of the engine (the protocol layer builds them from Settings)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field


def _uuid4() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class EngineOptions:
    # Usually-appropriate orders with no pitfall get a rating and no card, to spare alert fatigue.
    quiet_appropriate: bool = True
    # CMS G-code of the qualified CDS mechanism for `pama-rating-qcdsm-consulted`; omitted when None
    # (the CMS AUC program was paused in 2024; never send a made-up code).
    qcdsm_id: str | None = None
    # Injected so tests and replays can make uuids deterministic.
    new_uuid: Callable[[], str] = field(default=_uuid4)

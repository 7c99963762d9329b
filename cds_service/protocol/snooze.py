"""No nagging (issue 9 point 7): a card the clinician overrode or dismissed is not shown again.

An edge stage between the engine's output and the response; the engine stays pure. After
feedback `overridden` on a card (with or without an overrideReason: the CDS Hooks sandbox reports
a dismissal that way), the same card for the same patient is left out of later responses for
`CDS_SNOOZE_HOURS` (default 24), from either service: a card dismissed when the order was selected
is not shown again when it is signed. "The same card" is its subject:

  patient key   HMAC-SHA256(CDS_STATE_SECRET, fhirServer + patient id): never the id in clear
  order codes   "system|code" of the orders the card is about (all codings)
  rule id       the rule that produced the card
  verdict       a hash of the card's indicator and summary: a changed rating or pitfall is a new card

Never snoozed: `critical` cards (red flags outrank everything), an `accepted` outcome, a card
about no coded order. The rating still reaches the EHR: systemActions (the PAMA rating
extension) are never filtered. If the store fails, the card is shown and the failure logged with
the hookInstance only: a broken snooze store must never hide guidance.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from cds_service.protocol import metrics
from cds_service.state.db import DatabaseError

log = logging.getLogger(__name__)

NEVER_SNOOZED = frozenset({"critical"})
PRUNE_EVERY = 3600.0  # seconds between deletions of expired rows, per process
# A card's subject is kept at least this long, so a card dismissed hours after it was shown still
# snoozes (the card index itself is kept for feedback review).
SUBJECT_MIN_SECONDS = 24 * 3600.0


class CardSubject(NamedTuple):
    """What makes two cards "the same card" across hook calls; nothing in it identifies a patient."""

    patient_key: str
    order_codes: str
    rule_id: str
    verdict: str


class SnoozeStore(Protocol):
    """Where snoozes live (FeedbackStore: the feedback database, shared by workers and replicas)."""

    def snoozed(self, subjects: Iterable[CardSubject], since: float) -> set[CardSubject]:
        """The subjects among `subjects` overridden at or after `since` (unix seconds)."""
        ...

    def prune(self, snoozed_before: float, subjects_before: float) -> None: ...


@dataclass(frozen=True)
class Shown:
    """The response after the snooze stage, and what to index for feedback about its cards."""

    body: dict[str, Any]
    card_index: dict[str, Mapping[str, str]]  # card uuid -> engine metadata, shown cards only
    subjects: dict[str, CardSubject]  # card uuid -> subject, shown cards that a dismissal may snooze
    snoozed: int = 0  # cards left out


def patient_key(secret: bytes, fhir_server: str | None, patient_id: str) -> str:
    """A keyed hash in place of the patient id: equal for the same patient on the same FHIR server,
    useless without the secret (patient ids are few enough to hash them all without a key)."""
    message = f"patient\x00{(fhir_server or '').rstrip('/')}\x00{patient_id}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def verdict(card: Mapping[str, Any]) -> str:
    text = f"{card.get('indicator')}\x00{card.get('summary')}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def state_secret(configured: str | None) -> bytes:
    if configured:
        return configured.encode()
    log.warning(
        "CDS_STATE_SECRET not set: a random key stands in for patient ids in the snooze store; "
        "snoozed cards come back after a restart and are not shared between replicas"
    )
    return secrets.token_bytes(32)


@dataclass
class Snoozer:
    store: SnoozeStore
    secret: bytes = field(repr=False)
    window_seconds: float
    clock: Callable[[], float] = time.time  # injected in tests (no sleeping, no freezegun)
    # Another service on the same store may snooze longer (a site's per-service `snooze_hours`):
    # pruning keeps every override younger than this too, so it never cuts that service's window.
    keep_seconds: float = 0.0
    _pruned_at: float = field(default=float("-inf"), repr=False)

    @property
    def enabled(self) -> bool:
        return self.window_seconds > 0

    def now(self) -> float | None:
        """The time a new override is recorded at; None when snoozing is off (nothing recorded)."""
        return self.clock() if self.enabled else None

    def subjects(
        self, body: Mapping[str, Any], card_index: Mapping[str, Mapping[str, str]], patient: str
    ) -> dict[str, CardSubject]:
        out = {}
        for card in body.get("cards", []):
            meta = card_index.get(card.get("uuid", ""))
            if not meta or card.get("indicator") in NEVER_SNOOZED:
                continue
            codes, rule = meta.get("order_codes") or "", meta.get("rule_id") or ""
            if codes and rule:  # a card about no coded order has no stable subject
                out[card["uuid"]] = CardSubject(patient, codes, rule, verdict(card))
        return out

    def filter(
        self,
        hook_instance: str,
        fhir_server: str | None,
        patient_id: str,
        body: dict[str, Any],
        card_index: Mapping[str, Mapping[str, str]],
    ) -> Shown:
        uuids = {c.get("uuid") for c in body.get("cards", []) if isinstance(c, dict)}
        index = {u: m for u, m in card_index.items() if u in uuids}
        if not self.enabled:
            return Shown(body, index, {})
        self._prune(hook_instance)
        subjects = self.subjects(body, index, patient_key(self.secret, fhir_server, patient_id))
        if not subjects:
            return Shown(body, index, subjects)
        try:
            snoozed = self.store.snoozed(subjects.values(), self.clock() - self.window_seconds)
        except DatabaseError as exc:
            # Guidance first: show every card. The message names no patient, only the call.
            log.error("snooze store unavailable, cards shown (hookInstance=%s): %s", hook_instance[:100],
                      type(exc).__name__)
            metrics.note_state_error("snooze")
            return Shown(body, index, subjects)
        hidden = {u for u, s in subjects.items() if s in snoozed}
        if not hidden:
            return Shown(body, index, subjects)
        kept = {**body, "cards": [c for c in body["cards"] if c.get("uuid") not in hidden]}
        return Shown(
            kept,
            {u: m for u, m in index.items() if u not in hidden},
            {u: s for u, s in subjects.items() if u not in hidden},
            len(hidden),
        )

    def _prune(self, hook_instance: str) -> None:
        now = self.clock()
        if now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        try:
            keep = max(self.window_seconds, self.keep_seconds)
            self.store.prune(now - keep, now - max(keep, SUBJECT_MIN_SECONDS))
        except DatabaseError as exc:
            log.error("could not prune the snooze store (hookInstance=%s): %s", hook_instance[:100],
                      type(exc).__name__)

"""End to end, issue 9 point 7 "no nagging", over the HTTP API as the CDS Hooks sandbox drives it.

A clinician selects a whole-body bone scan for newly diagnosed low-risk prostate cancer (GG1,
PSA 5.2, cT1c) and gets the warning "usually not appropriate". She dismisses it (the sandbox's
Dismiss: feedback `overridden` with a coded reason that has no display) and signs the order: the
sign hook shows no second card, yet the order still carries its PAMA rating `not-appropriate`.
A day later (the window is 24 h) the same order brings the card back. A red-flag (critical) card
dismissed the same way is shown again at once.

The service here is its own instance with its own feedback database and an injected clock: the
shared e2e apps must never see this test's snoozes.
"""

from __future__ import annotations

from pathlib import Path

from e2e_support import CASES_DIR

from cds_service import replay
from cds_service.config import Settings

SELECT, SIGN = "/cds-services/imaging-appropriateness", "/cds-services/imaging-appropriateness-sign"


class Clock:
    t = 1_900_000_000.0

    def __call__(self) -> float:
        return self.t


def _dismiss(service: replay.InProcess, path: str, card: dict) -> None:
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-15T09:30:00Z",
            "overrideReason": {"reason": {"code": "patient-preference",
                                          "system": "https://sandbox.cds-hooks.org/override-reasons"}}}
    status, body = service.post(f"{path}/feedback", {"feedback": [item]})
    assert (status, body["stored"]) == (200, 1)


def _call(service: replay.InProcess, case: str, hook: str) -> tuple[list[dict], dict]:
    rp = replay.load(CASES_DIR / f"{case}.json")
    rp.hook = hook
    status, body, _ = replay.run(rp, service)
    assert status == 200, body
    return body["cards"], {order: info["pama"] for order, info in replay.ratings(body).items()}


def test_a_dismissed_card_is_not_shown_again_at_signing_but_the_order_stays_rated(tmp_path: Path):
    low_risk = replay.load(CASES_DIR / "prostate-low-risk-bone-scan.json")
    settings = Settings(feedback_db=tmp_path / "feedback.sqlite3", strict_responses=True,
                        state_secret="e2e-state-secret-0123456789abcdef0123")
    service = replay.InProcess(low_risk.as_of, settings=settings)
    clock = Clock()
    service.client.application.extensions["cds"].snoozer.clock = clock

    cards, rated = _call(service, "prostate-low-risk-bone-scan", "order-select")
    assert [c["indicator"] for c in cards] == ["warning"] and "usually not appropriate" in cards[0]["summary"]
    assert list(rated.values()) == ["not-appropriate"]
    _dismiss(service, SELECT, cards[0])

    clock.t += 60  # she signs a minute later
    cards_at_sign, rated_at_sign = _call(service, "prostate-low-risk-bone-scan", "order-sign")
    assert cards_at_sign == []
    assert list(rated_at_sign.values()) == ["not-appropriate"]

    clock.t += 25 * 3600  # the next day
    cards_next_day, _ = _call(service, "prostate-low-risk-bone-scan", "order-sign")
    assert [c["summary"] for c in cards_next_day] == [cards[0]["summary"]]

    red, _ = _call(service, "prostate-mets-cord-compression-bone-scan", "order-sign")
    assert [c["indicator"] for c in red] == ["critical"]
    _dismiss(service, SIGN, red[0])
    red_again, _ = _call(service, "prostate-mets-cord-compression-bone-scan", "order-sign")
    assert [c["summary"] for c in red_again] == [red[0]["summary"]]

"""A made-up history of hook calls and feedback, written through the store's real write path, and
the dashboard's figures computed from it here with plain loops (not with the service's queries)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date

from cds_service.protocol.feedback import AuditEntry, FeedbackItem, FeedbackStore

from .conftest import Clock, pct

SELECT, SIGN = "imaging-appropriateness", "imaging-appropriateness-sign"
RULES = ("prostate-bcr-psma", "breast-early-stage-asymptomatic", "red-flag-cord-compression",
         "insufficient-data")
PROCEDURES = ("bone-scan-whole-body", "psma-pet-ct", "ct-cap-contrast", "")
INDICATORS = ("info", "warning", "critical")
PAMA = ("appropriate", "not-appropriate", "no-criteria-apply")
REASONS = (("https://x.example/override-reason", "patient-specific-factors", "Patient-specific factors"),
           ("https://x.example/override-reason", "discussed-with-radiology", "Discussed with radiology"))
FACTS = ("psa", "t-category", "stage-group", "diagnosis-date")
UNREADABLE = ("labs", "staging", "not-retrieved:observations")
CODES = ("http://www.ama-assn.org/go/cpt|70553", "http://loinc.org|24627-2")
DAYS = ("2026-11-02", "2026-11-08", "2026-11-10", "2026-11-20", "2026-12-01")


@dataclass
class Card:
    uuid: str
    service: str
    day: str
    rule: str
    procedure: str
    indicator: str


@dataclass
class Call:
    service: str
    day: str
    rule_ids: tuple[str, ...]
    pama: tuple[str, ...]
    orders: int
    missing: tuple[str, ...]
    unreadable: tuple[str, ...]
    codes: tuple[str, ...]
    cards: list[Card] = field(default_factory=list)


@dataclass
class Answer:
    card: Card
    outcome: str
    reason: tuple[str, str, str] | None
    comment: str | None


@dataclass
class History:
    calls: list[Call]
    answers: list[Answer]


def make(seed: int = 7, calls: int = 60) -> History:
    rnd = random.Random(seed)
    out: list[Call] = []
    answers: list[Answer] = []
    n = 0
    for i in range(calls):
        service = rnd.choice((SELECT, SIGN))
        day = rnd.choice(DAYS)
        orders = rnd.randint(0, 3)
        rated = tuple(rnd.choice(PAMA) for _ in range(rnd.randint(0, orders)))
        rules = tuple(rnd.sample(RULES, rnd.randint(0, 2)))
        call = Call(service, day, rules, rated, orders,
                    tuple(rnd.sample(FACTS, rnd.randint(0, 2))) if rnd.random() < 0.4 else (),
                    tuple(rnd.sample(UNREADABLE, rnd.randint(0, 2))) if rnd.random() < 0.4 else (),
                    tuple(rnd.sample(CODES, 1)) if rnd.random() < 0.2 else ())
        for rule in rules:
            if rnd.random() < 0.8:
                n += 1
                card = Card(f"card-{i}-{n}", service, day, rule, rnd.choice(PROCEDURES),
                            rnd.choice(INDICATORS))
                call.cards.append(card)
                r = rnd.random()
                if r < 0.3:
                    answers.append(Answer(card, "accepted", None, None))
                elif r < 0.55:
                    answers.append(Answer(card, "overridden", rnd.choice(REASONS), None))
                elif r < 0.7:
                    comment = "free text, never shown" if r < 0.62 else None
                    answers.append(Answer(card, "overridden", None, comment))
        out.append(call)
    return History(out, answers)


def write(store: FeedbackStore, clock: Clock, history: History) -> None:
    """Through the store's own write path, each row at its call's time."""
    for i, call in enumerate(history.calls):
        clock.set(f"{call.day}T10:{i % 60:02d}:00")
        store.index_cards(call.service, f"hook-{i}", {
            c.uuid: {"rule_id": c.rule, "procedure_id": c.procedure, "indicator": c.indicator,
                     "scenario_id": "s", "knowledge_version": "1"}
            for c in call.cards
        })
        store.audit(AuditEntry(
            service_id=call.service, hook_instance=f"hook-{i}", hook="order-select", knowledge_version="1",
            rule_ids=call.rule_ids, ratings=tuple({"pama": p, "rule": "r"} for p in call.pama),
            card_uuids=tuple(c.uuid for c in call.cards), fhir_calls=0, client_iss=None, orders=call.orders,
            missing_facts=call.missing, unreadable=call.unreadable, unknown_codes=call.codes,
        ))
    for j, a in enumerate(history.answers):
        clock.set("2026-12-02T08:00:00")  # feedback arrives later: counted by its card's day
        item = FeedbackItem(
            a.card.uuid, a.outcome, f"2026-12-02T08:00:{j % 60:02d}Z",
            accepted_suggestions=("s-1",) if a.outcome == "accepted" else (),
            override_system=a.reason[0] if a.reason else None,
            override_code=a.reason[1] if a.reason else None,
            override_display=a.reason[2] if a.reason else None,
            user_comment=a.comment,
        )
        assert store.record(a.card.service, [item]).stored == 1


# --- the figures, computed here -------------------------------------------------------------------

def _in(day: str, service: str, start: date | None, end: date | None, only: str | None) -> bool:
    d = date.fromisoformat(day)
    return (start is None or d >= start) and (end is None or d <= end) and (only is None or service == only)


def expected(history: History, start: date | None = None, end: date | None = None,
             service: str | None = None) -> dict[str, dict[str, dict[str, object]]]:
    """table -> key -> column -> value (numbers; percentages as one-decimal floats; None: no data)."""
    calls = [c for c in history.calls if _in(c.day, c.service, start, end, service)]
    cards = [card for c in history.calls for card in c.cards
             if _in(card.day, card.service, start, end, service)]
    answers = [a for a in history.answers if _in(a.card.day, a.card.service, start, end, service)]

    def outcomes(select: object) -> dict[object, list[int]]:
        got: dict[object, list[int]] = {}
        for a in answers:
            k = getattr(a.card, str(select))
            got.setdefault(k, [0, 0, 0])[0 if a.outcome == "accepted" else 1 if a.reason else 2] += 1
        return got

    def with_outcomes(row: dict[str, object], counts: list[int]) -> dict[str, object]:
        row.update(accepted=counts[0], overridden=counts[1], dismissed=counts[2],
                   acceptance=pct(counts[0], sum(counts)))
        return row

    fired = Counter(r for c in calls for r in set(c.rule_ids))
    by_rule = Counter(c.rule for c in cards)
    rule_out = outcomes("rule")
    rules = {k: with_outcomes({"fired": fired[k], "cards": by_rule[k]}, rule_out.get(k, [0, 0, 0]))
             for k in set(fired) | set(by_rule)}
    by_proc = Counter(c.procedure for c in cards if c.procedure)
    proc_out = outcomes("procedure")
    studies = {k: with_outcomes({"cards": by_proc[k]}, proc_out.get(k, [0, 0, 0])) for k in by_proc}
    reasons = Counter(f"{a.card.rule}|{a.reason[0]}|{a.reason[1]}" for a in answers if a.reason)
    rated = Counter({"appropriate": "appropriate", "not-appropriate": "not-appropriate",
                     "no-criteria-apply": "no-criteria"}[p] for c in calls for p in c.pama)
    orders = sum(c.orders for c in calls)
    rated["not-rated"] = orders - sum(rated.values())
    share = {k: {"orders": rated[k], "share": pct(rated[k], orders)}
             for k in ("appropriate", "not-appropriate", "no-criteria", "not-rated")}
    missing = Counter(f for c in calls for f in set(c.missing))
    quality = Counter([f"unreadable|{u}" for c in calls for u in set(c.unreadable)]
                      + [f"code|{x}" for c in calls for x in set(c.codes)])
    orders_by_service = Counter()
    for c in calls:
        orders_by_service[c.service] += c.orders
    burden = Counter(f"{c.service}|{c.indicator}" for c in cards)
    alert = {k: {"cards": n, "per100": pct(n, orders_by_service[k.split("|")[0]])} for k, n in burden.items()}
    weekly: dict[str, dict[str, object]] = {}
    for c in cards:
        y, w, _ = date.fromisoformat(c.day).isocalendar()
        row = weekly.setdefault(f"{y}-W{w:02d}", {"cards": 0, "accepted": 0, "overridden": 0, "dismissed": 0})
        row["cards"] = int(str(row["cards"])) + 1
    for a in answers:
        y, w, _ = date.fromisoformat(a.card.day).isocalendar()
        row = weekly[f"{y}-W{w:02d}"]
        col = "accepted" if a.outcome == "accepted" else "overridden" if a.reason else "dismissed"
        row[col] = int(str(row[col])) + 1
    return {
        "rules": rules, "studies": studies,
        "override-reasons": {k: {"count": n} for k, n in reasons.items()},
        "rated-share": share,
        "missing-facts": {k: {"count": n} for k, n in missing.items()},
        "data-quality": {k: {"count": n} for k, n in quality.items()},
        "alert-burden": alert, "weekly": weekly,
    }

"""Fixture cases replayed through the real service, feedback posted on their cards, then the
dashboard read: its figures equal what this test counts from the responses it got and the feedback
it sent (the service's own tables and queries are not consulted for the expected values)."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cds_service import replay
from cds_service.app import create_app
from cds_service.bundle_search import BundleStore
from cds_service.config import Settings

from .conftest import DashboardPage, figure, pct

REPO = Path(__file__).resolve().parents[2]
CASES = [
    ("breast-early-stage-bone-scan", "order-select"),
    ("breast-early-stage-bone-scan", "order-sign"),
    ("breast-neoadjuvant-bone-pain-ct-cap-noncontrast", "order-select"),
    ("prostate-bcr-post-prostatectomy-bone-scan", "order-sign"),
    ("prostate-high-risk-psma-pet", "order-select"),
    ("prostate-low-risk-bone-scan", "order-select"),
    ("prostate-mets-cord-compression-bone-scan", "order-sign"),
    ("prostate-new-diagnosis-t-category-unknown-bone-scan", "order-select"),
    ("prostate-cancer-no-other-data-psma-pet", "order-select"),
    ("prostate-mets-adt-rising-psa-select-one-of-two", "order-select"),
    ("prostate-mets-dialysis-ct-cap-contrast", "order-sign"),
    ("breast-neoadjuvant-bone-pain-pet-snomed-no-tracer", "order-select"),
]
TOKEN = "replayed-cases-admin-token-0001"
SERVICE = {"order-select": "imaging-appropriateness", "order-sign": "imaging-appropriateness-sign"}
IMAGING_CATEGORY = ("http://snomed.info/sct", "363679005")
CPT = "http://www.ama-assn.org/go/cpt"
PAMA_URL = "http://fhir.org/argonaut/Extension/pama-rating"
SHARE = {"appropriate": "appropriate", "not-appropriate": "not-appropriate",
         "no-criteria-apply": "no-criteria"}
UNLISTED = {"resourceType": "ServiceRequest", "id": "unlisted-nm", "status": "draft", "intent": "order",
            "category": [{"coding": [{"system": IMAGING_CATEGORY[0], "code": IMAGING_CATEGORY[1]}]}],
            "code": {"coding": [{"system": CPT, "code": "78999", "display": "Unlisted nuclear medicine"}]},
            "subject": {"reference": "Patient/PATIENT"}}


def _is_imaging(order: dict[str, Any]) -> bool:
    """This test's own reading: an imaging category coding or a CPT radiology code (7xxxx)."""
    categories = order.get("category") or []
    categories = categories if isinstance(categories, list) else [categories]
    pairs = [(c.get("system"), c.get("code")) for cat in categories for c in cat.get("coding", [])]
    if IMAGING_CATEGORY in pairs:
        return True
    return any(c.get("system") == CPT and str(c.get("code", "")).startswith("7")
               for c in (order.get("code") or {}).get("coding", []))


class Tally:
    def __init__(self) -> None:
        self.cards: Counter[str] = Counter()  # rule
        self.outcomes: dict[str, Counter[str]] = {}  # rule -> accepted/overridden/dismissed
        self.reasons: Counter[str] = Counter()
        self.burden: Counter[str] = Counter()
        self.orders: Counter[str] = Counter()  # service
        self.rated: Counter[str] = Counter()
        self.card_calls: Counter[str] = Counter()  # rule -> calls with a card of it
        self.asked: Counter[str] = Counter()  # fact -> calls whose cards asked for it
        self.feedback: Counter[str] = Counter()


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Tally, str, str]:
    db = tmp_path_factory.mktemp("replayed") / "state.sqlite3"
    settings = Settings(feedback_db=db, cache_dir=None, strict_responses=True)
    tally = Tally()
    week_before = datetime.now(UTC).isocalendar()[:2]
    answers = itertools.cycle(("accepted", "overridden-reason", "overridden", "overridden-reason"))
    transports: dict[Any, replay.InProcess] = {}
    for n, (name, hook) in enumerate(CASES):
        rp = replay.load(REPO / "fixtures" / "cases" / f"{name}.json")
        rp.hook = hook
        if n == 0:
            rp.orders = [*rp.orders, UNLISTED]  # an imaging order outside the catalog
        transport = transports.setdefault(rp.as_of, replay.InProcess(rp.as_of, settings=settings))
        service = SERVICE[hook]
        request = replay.build_request(rp)
        replay.fill_prefetch(request, replay.discovery_templates(transport, service), BundleStore(rp.bundle))
        if n == 1:
            del request["prefetch"]["procedures"]  # not sent, no FHIR server: data not retrieved
        status, body = transport.post(f"/cds-services/{service}", request)
        assert status == 200, body
        context = request["context"]
        drafts = [e["resource"] for e in context["draftOrders"]["entry"]]
        focus = [o for o in drafts
                 if hook == "order-sign" or f"ServiceRequest/{o['id']}" in context["selections"]]
        tally.orders[service] += sum(1 for o in focus if _is_imaging(o))
        for action in body.get("systemActions", []):
            for ext in action["resource"].get("extension", []):
                if ext["url"] == PAMA_URL:
                    tally.rated[SHARE[ext["valueCodeableConcept"]["coding"][0]["code"]]] += 1
        call_rules, call_facts = set(), set()
        for card in body["cards"]:
            rule = card["source"]["topic"]["code"]
            call_rules.add(rule)
            call_facts.update((card.get("extension") or {}).get("missingFacts", []))
            tally.cards[rule] += 1
            tally.burden[f"{service}|{card['indicator']}"] += 1
            answer = next(answers)
            item: dict[str, Any] = {"card": card["uuid"], "outcomeTimestamp": "2026-11-30T10:00:00Z"}
            if answer == "accepted" and card.get("suggestions"):
                item.update(outcome="accepted", acceptedSuggestions=[{"id": card["suggestions"][0]["uuid"]}])
            elif answer == "overridden-reason" and card.get("overrideReasons"):
                reason = card["overrideReasons"][0]
                item.update(outcome="overridden",
                            overrideReason={"reason": reason, "userComment": "PHI here"})
                tally.reasons[f"{rule}|{reason['system']}|{reason['code']}"] += 1
                answer = "overridden-reason"
            else:
                item.update(outcome="overridden")
                answer = "overridden"
            counted = {"accepted": "accepted", "overridden-reason": "overridden", "overridden": "dismissed"}
            if item["outcome"] == "accepted":
                answer = "accepted"
            tally.outcomes.setdefault(rule, Counter())[counted[answer]] += 1
            tally.feedback[counted[answer]] += 1
            status, stored = transport.post(f"/cds-services/{service}/feedback", {"feedback": [item]})
            assert status == 200 and stored["stored"] == 1, stored
        tally.card_calls.update(call_rules)
        tally.asked.update(call_facts)
    week_after = datetime.now(UTC).isocalendar()[:2]
    admin = create_app(replace(settings, admin_token=TOKEN)).test_client()
    html = admin.get("/admin/", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True)
    week = f"{week_after[0]}-W{week_after[1]:02d}" if week_before == week_after else ""
    return DashboardPage(html), tally, week, html


def test_the_replay_produced_every_kind_of_feedback(replayed):
    _, tally, _, _ = replayed
    assert all(tally.feedback[k] for k in ("accepted", "overridden", "dismissed")), tally.feedback
    assert tally.rated and sum(tally.orders.values()) > sum(tally.rated.values())


def test_cards_and_feedback_per_rule(replayed):
    page, tally, _, _ = replayed
    rules = page.tables["rules"]
    for rule, n in tally.cards.items():
        o = tally.outcomes[rule]
        assert rules[rule]["cards"] == figure(n)
        assert rules[rule]["accepted"] == figure(o["accepted"])
        assert rules[rule]["overridden"] == figure(o["overridden"])
        assert rules[rule]["dismissed"] == figure(o["dismissed"])
        assert rules[rule]["acceptance"] == figure(pct(o["accepted"], sum(o.values())), True)
        assert int(rules[rule]["fired"]) >= tally.card_calls[rule]  # fired also counts silent ratings
    assert {k for k, v in rules.items() if v["cards"] != "0"} == set(tally.cards)


def test_override_reasons_rated_share_and_alert_burden(replayed):
    page, tally, _, html = replayed
    assert page.tables["override-reasons"] == {k: {"count": figure(n)} for k, n in tally.reasons.items()}
    orders = sum(tally.orders.values())
    rated = {**{k: tally.rated[k] for k in SHARE.values()}, "not-rated": orders - sum(tally.rated.values())}
    assert page.tables["rated-share"] == {k: {"orders": figure(n), "share": figure(pct(n, orders), True)}
                                          for k, n in rated.items()}
    assert page.tables["alert-burden"] == {
        k: {"cards": figure(n), "per100": figure(pct(n, tally.orders[k.split("|")[0]]), True)}
        for k, n in tally.burden.items()
    }
    assert "PHI here" not in html and "replay-order" not in html


def test_weekly_missing_facts_and_data_quality(replayed):
    page, tally, week, _ = replayed
    if week:  # not run across a week boundary
        o = Counter()
        for counts in tally.outcomes.values():
            o.update(counts)
        assert page.tables["weekly"] == {week: {
            "cards": figure(sum(tally.cards.values())), "accepted": figure(o["accepted"]),
            "overridden": figure(o["overridden"]), "dismissed": figure(o["dismissed"])}}
    missing = page.tables["missing-facts"]
    for fact, n in tally.asked.items():  # the open questions' missingFacts
        assert int(missing[fact]["count"]) >= n
    # the prostate case without grade group, PSA or T category: its scenario requires the risk group
    assert "risk-group" in missing
    quality = page.tables["data-quality"]
    assert quality[f"code|{CPT}|78999"] == {"count": "1"}
    assert quality["unreadable|not-retrieved:procedures"] == {"count": "1"}


def test_each_rule_row_links_to_its_rule_page(replayed):
    _, tally, _, html = replayed
    for rule in tally.cards:
        assert f'<a href="/rules/{rule}">{rule}</a>' in html

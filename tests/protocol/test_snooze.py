"""No nagging (issue 9 point 7): an overridden or dismissed card is not shown again for the same
patient, order code, rule and verdict within CDS_SNOOZE_HOURS; the rating still goes out.

Real cases through the real app (two instances sharing one feedback database, built once for the
module); time is an injected clock, never slept. Each test starts a fresh snooze window by moving
the clock two windows ahead, so tests do not see each other's snoozes.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from cds_service import replay
from cds_service.bundle_search import BundleStore
from cds_service.config import ConfigError, Settings
from cds_service.engine.cards import order_codes
from cds_service.model import EngineResult, ImagingOrder
from cds_service.protocol.snooze import Snoozer, state_secret

from .conftest import BASE

CASES = Path(__file__).resolve().parents[2] / "fixtures" / "cases"
SECRET = "test-state-secret-" + "0123456789abcdef" * 2
SERVICE = "imaging-appropriateness-sign"
HOURS = 24.0
# Low-risk new prostate cancer (GG1, PSA 5.2, cT1c), bone scan: usually not appropriate (warning).
LOW_RISK = "prostate-low-risk-bone-scan"
# Back pain + leg weakness in metastatic prostate cancer: cord-compression red flag (critical).
RED_FLAG = "prostate-mets-cord-compression-bone-scan"
LOINC_BONE_SCAN = {"system": "http://loinc.org", "code": "25031-6"}  # the same catalog procedure


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


class World:
    """Two app instances (two replicas, or a restart) on one database, one clock, the requests."""

    def __init__(self, tmp: Path) -> None:
        low = replay.load(CASES / f"{LOW_RISK}.json")
        self.db = tmp / "feedback.sqlite3"
        self.settings = Settings(
            feedback_db=self.db, strict_responses=True, public_base_url=BASE, state_secret=SECRET,
            snooze_hours=HOURS,
        )
        self.clock = Clock()
        self.a = replay.InProcess(low.as_of, settings=self.settings)
        self.b = replay.InProcess(low.as_of, settings=self.settings)
        for app in (self.a, self.b):
            self.snoozer(app).clock = self.clock
        self.requests = {name: self._request(name) for name in (LOW_RISK, RED_FLAG)}
        self.patients = {name: replay.load(CASES / f"{name}.json").patient_id for name in self.requests}

    def _request(self, name: str) -> dict[str, Any]:
        rp = replay.load(CASES / f"{name}.json")
        rp.hook = "order-sign"
        request = replay.build_request(rp)
        replay.fill_prefetch(request, replay.discovery_templates(self.a, SERVICE), BundleStore(rp.bundle))
        return request

    @staticmethod
    def snoozer(app: replay.InProcess) -> Snoozer:
        return app.client.application.extensions["cds"].snoozer

    def request(self, name: str = LOW_RISK) -> dict[str, Any]:
        request = copy.deepcopy(self.requests[name])
        request["hookInstance"] = str(uuid.uuid4())
        return request

    def call(self, request: dict[str, Any], app: replay.InProcess | None = None) -> dict[str, Any]:
        status, body = (app or self.a).post(f"/cds-services/{SERVICE}", request)
        assert status == 200, body
        return body

    def feedback(self, *items: dict[str, Any], app: replay.InProcess | None = None) -> dict[str, Any]:
        status, body = (app or self.a).post(f"/cds-services/{SERVICE}/feedback", {"feedback": list(items)})
        assert status == 200, body
        return body


@pytest.fixture(scope="module")
def module_world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("snooze"))


@pytest.fixture
def world(module_world: World) -> World:
    module_world.clock.t += 2 * HOURS * 3600  # every earlier snooze has expired
    return module_world


def overridden(card: dict[str, Any], **reason: Any) -> dict[str, Any]:
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-15T10:00:00Z"}
    if reason:
        item["overrideReason"] = reason
    return item


def accepted(card: dict[str, Any]) -> dict[str, Any]:
    return {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-15T10:00:00Z",
            "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}]}


def ratings(body: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Order id -> rating (without the per-call consult id), read from systemActions."""
    # the sandbox's PAMA tab reads the Argonaut location: it must carry the same actions
    assert body.get("extension", {}).get("systemActions") == body.get("systemActions")
    return {
        order: {k: v for k, v in info.items() if k != "pama-rating-consult-id"}
        for order, info in replay.ratings(body).items()
    }


def only_card(body: dict[str, Any]) -> dict[str, Any]:
    assert len(body["cards"]) == 1, [c["summary"] for c in body["cards"]]
    return body["cards"][0]


def snoozed_after_override(world: World, **reason: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    first = world.call(world.request())
    card = only_card(first)
    assert card["indicator"] == "warning" and "usually not appropriate" in card["summary"]
    assert world.feedback(overridden(card, **reason)) == {"received": 1, "stored": 1, "unknown": 0}
    return first, card


@pytest.mark.parametrize(
    "reason",
    [
        {},  # the sandbox's Dismiss: overridden, no reason
        {"reason": {"system": "https://cds.example.org/override-reason", "code": "patient-preference"}},
        {"userComment": "discussed with the patient"},
    ],
    ids=["dismissed", "coded-reason", "comment-only"],
)
def test_an_overridden_card_is_not_shown_again_but_the_order_is_still_rated(world, reason):
    first, _ = snoozed_after_override(world, **reason)
    again = world.call(world.request())
    assert again["cards"] == []
    assert ratings(again) == ratings(first)
    assert [r["pama"] for r in ratings(again).values()] == ["not-appropriate"]


def test_the_card_comes_back_when_the_window_ends(world):
    _, card = snoozed_after_override(world)
    world.clock.t += HOURS * 3600 - 60
    assert world.call(world.request())["cards"] == []
    world.clock.t += 120
    back = only_card(world.call(world.request()))
    assert back["summary"] == card["summary"] and back["uuid"] != card["uuid"]


def test_an_accepted_card_is_not_snoozed(world):
    card = only_card(world.call(world.request()))
    assert world.feedback(accepted(card))["stored"] == 1
    assert only_card(world.call(world.request()))["summary"] == card["summary"]


def test_the_same_study_under_another_order_code_is_shown(world):
    _, card = snoozed_after_override(world)
    request = world.request()
    order = request["context"]["draftOrders"]["entry"][0]["resource"]
    order["code"] = {"coding": [LOINC_BONE_SCAN]}  # bone scan whole body, coded in LOINC
    shown = only_card(world.call(request))
    assert shown["summary"] == card["summary"] and shown["source"]["topic"] == card["source"]["topic"]


def test_another_patient_with_the_same_order_is_shown(world):
    snoozed_after_override(world)
    patient = world.patients[LOW_RISK]
    other = json.loads(json.dumps(world.request()).replace(patient, "another-patient-7"))
    assert "usually not appropriate" in only_card(world.call(other))["summary"]
    assert world.call(world.request())["cards"] == []  # still snoozed for the first patient


def test_a_red_flag_card_is_never_snoozed(world):
    first = world.call(world.request(RED_FLAG))
    card = only_card(first)
    assert card["indicator"] == "critical" and card["summary"].startswith("URGENT")
    assert world.feedback(overridden(card, userComment="MRI booked elsewhere"))["stored"] == 1
    again = only_card(world.call(world.request(RED_FLAG)))
    assert again["indicator"] == "critical" and again["summary"] == card["summary"]
    with sqlite3.connect(world.db) as db:
        subjects = db.execute("SELECT count(*) FROM card_subject WHERE card_uuid = ?", (card["uuid"],))
        assert subjects.fetchone() == (0,)


def test_a_snooze_is_shared_by_two_instances_on_one_database(world):
    card = only_card(world.call(world.request(), app=world.a))
    assert world.feedback(overridden(card), app=world.b)["stored"] == 1
    assert world.call(world.request(), app=world.b)["cards"] == []
    assert world.call(world.request(), app=world.a)["cards"] == []


def test_a_repeated_feedback_item_does_not_extend_the_snooze(world):
    _, card = snoozed_after_override(world)
    world.clock.t += HOURS * 3600 - 3600
    assert world.feedback(overridden(card))["stored"] == 0  # the same item again: ignored
    world.clock.t += 2 * 3600
    assert len(world.call(world.request())["cards"]) == 1


def test_the_store_holds_no_patient_id(world):
    snoozed_after_override(world)
    world.feedback(overridden(only_card(world.call(world.request(RED_FLAG)))))
    with sqlite3.connect(world.db) as db:
        keys = {row[0] for row in db.execute("SELECT patient_key FROM snooze")}
        db.execute("PRAGMA wal_checkpoint(FULL)")
    expected = hmac.new(
        SECRET.encode(), f"patient\x00\x00{world.patients[LOW_RISK]}".encode(), hashlib.sha256
    ).hexdigest()
    assert expected in keys
    raw = b"".join(p.read_bytes() for p in world.db.parent.glob(world.db.name + "*"))
    assert len(raw) > 4096
    for patient in world.patients.values():
        assert patient.encode() not in raw
        assert patient.encode("utf-16-le") not in raw and patient.encode("utf-16-be") not in raw


def test_a_store_failure_shows_the_card_and_logs_only_the_hook_instance(world, monkeypatch, caplog):
    def unavailable(*_: Any) -> set:
        raise OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked"))

    snoozed_after_override(world)
    monkeypatch.setattr(world.snoozer(world.a).store, "snoozed", unavailable)
    request = world.request()
    with caplog.at_level(logging.ERROR, logger="cds_service.protocol.snooze"):
        card = only_card(world.call(request))
    assert "usually not appropriate" in card["summary"]
    message = " ".join(r.getMessage() for r in caplog.records if r.name == "cds_service.protocol.snooze")
    assert request["hookInstance"] in message and "OperationalError" in message
    assert world.patients[LOW_RISK] not in caplog.text


def test_zero_hours_turns_snoozing_off(world, monkeypatch):
    for app in (world.a, world.b):
        monkeypatch.setattr(world.snoozer(app), "window_seconds", 0.0)
    card = only_card(world.call(world.request()))
    world.feedback(overridden(card))
    assert only_card(world.call(world.request()))["summary"] == card["summary"]
    with sqlite3.connect(world.db) as db:
        subjects = db.execute("SELECT count(*) FROM card_subject WHERE card_uuid = ?", (card["uuid"],))
        assert subjects.fetchone() == (0,)


def test_expired_snoozes_are_pruned(world):
    def rows(table: str, column: str, before: float) -> int:
        with sqlite3.connect(world.db) as db:
            return db.execute(f"SELECT count(*) FROM {table} WHERE {column} < ?", (before,)).fetchone()[0]

    snoozed_after_override(world)
    snoozed_at = world.clock.t
    assert rows("snooze", "snoozed_at", snoozed_at + 1) == 1
    assert rows("card_subject", "created_at", snoozed_at + 1) > 0
    world.clock.t += HOURS * 3600 + 1
    world.call(world.request())  # the first call an hour or more after the last pruning prunes
    assert rows("snooze", "snoozed_at", snoozed_at + 1) == 0
    assert rows("card_subject", "created_at", snoozed_at + 1) == 0


# --- what makes "the same card": rule, verdict, indicator (engine stand-in) -----------------------

BASE_CARD = {"summary": "Bone scan is usually not appropriate here", "indicator": "warning",
             "source": {"label": "Oncology imaging appropriateness"}}


def fake_engine(monkeypatch, rule: str, **card: Any) -> None:
    codes = "http://www.ama-assn.org/go/cpt|78306"

    def evaluate(*_: Any, **__: Any) -> EngineResult:
        card_uuid = str(uuid.uuid4())
        return EngineResult(
            cards=({**BASE_CARD, **card, "uuid": card_uuid},),
            card_index={card_uuid: {"rule_id": rule, "order_codes": codes}},
        )

    monkeypatch.setattr("cds_service.engine.evaluate", evaluate)


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        ({}, False),
        ({"rule": "another-rule"}, True),
        ({"summary": "Bone scan is usually appropriate here"}, True),  # a changed verdict
        ({"indicator": "info"}, True),
        ({"indicator": "critical"}, True),
    ],
    ids=["same-card", "other-rule", "other-verdict", "other-indicator", "now-critical"],
)
def test_only_the_same_card_is_snoozed(world, monkeypatch, change, shown):
    fake_engine(monkeypatch, "a-rule")
    world.feedback(overridden(only_card(world.call(world.request()))))
    fake_engine(monkeypatch, change.pop("rule", "a-rule"), **change)
    assert len(world.call(world.request())["cards"]) == (1 if shown else 0)


def test_a_critical_card_is_never_snoozed_even_with_order_codes(world, monkeypatch):
    fake_engine(monkeypatch, "a-rule", indicator="critical")
    world.feedback(overridden(only_card(world.call(world.request()))))
    assert only_card(world.call(world.request()))["indicator"] == "critical"


def test_a_card_without_order_codes_is_never_snoozed(world, monkeypatch):
    def evaluate(*_: Any, **__: Any) -> EngineResult:
        card_uuid = str(uuid.uuid4())
        return EngineResult(cards=({**BASE_CARD, "uuid": card_uuid},),
                            card_index={card_uuid: {"rule_id": "a-rule", "order_codes": ""}})

    monkeypatch.setattr("cds_service.engine.evaluate", evaluate)
    world.feedback(overridden(only_card(world.call(world.request()))))
    assert len(world.call(world.request())["cards"]) == 1


# --- pieces ---------------------------------------------------------------------------------------


def _order(code: dict[str, Any]) -> ImagingOrder:
    return ImagingOrder("ServiceRequest/x", {"resourceType": "ServiceRequest", "code": code}, None)


def test_order_codes_are_all_codings_in_a_stable_order():
    cpt = {"system": "http://www.ama-assn.org/go/cpt", "code": "78306"}
    both = order_codes([_order({"coding": [LOINC_BONE_SCAN, cpt]})])
    assert both == order_codes([_order({"coding": [cpt, LOINC_BONE_SCAN, cpt]})])
    assert both == "http://loinc.org|25031-6,http://www.ama-assn.org/go/cpt|78306"
    assert order_codes([_order({"coding": [cpt]}), _order({"coding": [LOINC_BONE_SCAN]})]) == order_codes(
        [_order({"coding": [LOINC_BONE_SCAN]}), _order({"coding": [cpt]})]
    )
    assert order_codes([_order({"text": " CT Chest "})]) == "text|ct chest"
    assert order_codes([_order({"coding": [{}]}), _order("junk")]) == ""


def test_without_a_configured_secret_a_random_one_is_used_and_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="cds_service.protocol.snooze"):
        first, second = state_secret(None), state_secret(None)
    assert len(first) == 32 and first != second
    assert "CDS_STATE_SECRET" in caplog.text
    assert state_secret(SECRET) == SECRET.encode()


def test_the_window_and_the_secret_are_settings():
    default = Settings.from_env({})
    assert default.snooze_hours == 24.0 and default.state_secret is None
    settings = Settings.from_env({"CDS_SNOOZE_HOURS": "0.5", "CDS_STATE_SECRET": SECRET})
    assert settings.snooze_hours == 0.5 and settings.state_secret == SECRET
    assert SECRET not in repr(settings)  # settings are logged at times; the key never is
    assert Settings.from_env({"CDS_SNOOZE_HOURS": "0"}).snooze_hours == 0.0


@pytest.mark.parametrize(
    ("name", "value"),
    [("CDS_SNOOZE_HOURS", "-1"), ("CDS_SNOOZE_HOURS", "a day"), ("CDS_SNOOZE_HOURS", "nan"),
     ("CDS_SNOOZE_HOURS", "inf"), ("CDS_STATE_SECRET", "short")],
)
def test_bad_snooze_settings_are_refused(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})

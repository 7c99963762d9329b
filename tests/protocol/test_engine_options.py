"""Engine options come from configuration: CDS_QUIET_APPROPRIATE and CDS_QCDSM_ID reach the response."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cds_service import replay
from cds_service.config import Settings

CASES = Path(__file__).resolve().parents[2] / "fixtures" / "cases"
CASE = CASES / "prostate-cm1-stable-on-adt-bone-scan.json"
QCDSM = "http://fhir.org/argonaut/Extension/pama-rating-qcdsm-consulted"
PAMA = "http://fhir.org/argonaut/Extension/pama-rating"


def call(settings: Settings) -> dict:
    """A usually-appropriate bone scan with no pitfall, through the whole app."""
    case = replay.load_case(CASE)
    status, body, _ = replay.run(case, replay.InProcess(case.as_of, settings=settings))
    assert status == 200, body
    return body


def extension_urls(body: dict) -> set[str]:
    (action,) = body["systemActions"]
    return {ext["url"] for ext in action["resource"].get("extension", [])}


def test_defaults_quiet_and_no_qcdsm(settings):
    body = call(settings)
    assert body["cards"] == []  # rated, but no card: alert fatigue spared
    assert PAMA in extension_urls(body) and QCDSM not in extension_urls(body)


def test_quiet_appropriate_off_shows_a_card(settings):
    body = call(replace(settings, quiet_appropriate=False))
    assert len(body["cards"]) == 1
    assert body["cards"][0]["indicator"] == "info"


def test_qcdsm_id_is_sent_when_configured(settings):
    body = call(replace(settings, qcdsm_id="G1001"))
    (action,) = body["systemActions"]
    values = {e["url"]: e.get("valueString") for e in action["resource"]["extension"]}
    assert values[QCDSM] == "G1001"


def test_engine_options_read_from_environment():
    assert Settings.from_env({}).quiet_appropriate is True
    assert Settings.from_env({}).qcdsm_id is None
    env = Settings.from_env({"CDS_QUIET_APPROPRIATE": "false", "CDS_QCDSM_ID": " G1001 "})
    assert env.quiet_appropriate is False and env.qcdsm_id == "G1001"
    assert Settings.from_env({"CDS_QCDSM_ID": ""}).qcdsm_id is None


def test_create_app_warms_up_the_readers_once_when_asked(settings, monkeypatch):
    import cds_service.app as app_module

    calls = []
    monkeypatch.setattr(app_module.facts, "warm_up", lambda valuesets=None: calls.append(valuesets))
    app_module.create_app(settings)
    assert calls == []  # default (issue 11): loaded at first use, a worker starts fast and small
    app = app_module.create_app(replace(settings, preload_readers=True))
    # once, with the loaded knowledge base (its text targets build the NLP pipeline)
    assert calls == [app.extensions["cds"].knowledge.valuesets]
    assert Settings.from_env({"CDS_PRELOAD_READERS": "1"}).preload_readers is True

"""End to end, a site's configuration (CDS_SITE_CONFIG = fixtures/site/example-site.yaml): a hospital
without PSMA PET/CT, whose CDS committee switched off the kidney-contrast warning and shows the flare
caution as information, with its own consult link and name for fluciclovine PET/CT.

Each scenario replays a fixture case through the real app (HTTP and the replay CLI) with and without
the site file, so every assertion about the site is one the default service must fail.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import EXAMPLE_SITE
from e2e_support import all_cases

from cds_service.app import create_app
from cds_service.knowledge.site import SiteConfigError

SITE = "Example General Hospital"
PSMA_TRACER_CODES = {"A9595", "A9593", "A9594", "A9596", "A9800", "A9608"}
FLUCICLOVINE = "A9588"
CASES = {c["name"]: c for c in all_cases()}


def run(runner: Any, name: str, hook: str, way: str = "http") -> dict[str, Any]:
    status, body, _ = getattr(runner, way)(CASES[name], hook)
    assert status == 200, body
    return body


def created_codes(card: dict[str, Any]) -> list[set[str]]:
    """Per suggestion: every code of every order it would create."""
    return [
        {
            c["code"]
            for a in s["actions"]
            if a["type"] == "create"
            for c in a["resource"]["code"]["coding"]
        }
        for s in card.get("suggestions", [])
    ]


def rating_of(action: dict[str, Any]) -> dict[str, str]:
    ext = next(e for e in action["resource"]["extension"] if e["url"].endswith("imaging-appropriateness"))
    return {e["url"]: e.get("valueCode") or e.get("valueString") for e in ext["extension"]}


def page(runner: Any, as_of: Any, path: str) -> str:
    response = runner.app(as_of).client.get(path)
    assert response.status_code == 200
    return str(response.get_data(as_text=True))


@pytest.mark.parametrize("way", ["http", "cli"])
def test_psma_unavailable_biochemical_recurrence_gets_a_cited_alternative(e2e, e2e_site, way):
    name = "prostate-bcr-post-prostatectomy-bone-scan"
    default = run(e2e, name, "order-select", way)
    assert any(PSMA_TRACER_CODES & codes for card in default["cards"] for codes in created_codes(card))

    body = run(e2e_site, name, "order-select", way)
    [card] = body["cards"]
    suggested = created_codes(card)
    assert suggested and not any(PSMA_TRACER_CODES & codes for codes in suggested)
    assert "PSMA" not in " ".join(s["label"] for s in card["suggestions"])
    # the alternative is the rule's own: fluciclovine PET/CT, rated by the same scenario and cited there
    first = card["suggestions"][0]
    assert first["isRecommended"] and FLUCICLOVINE in suggested[0]
    created = next(a for a in first["actions"] if a["type"] == "create")
    rated = rating_of(created)
    assert rated["rule"] == "prostate-biochemical-recurrence" and rated["procedure"] == "fluciclovine-pet-ct"
    assert rated["category"] == "usually-appropriate" and rated["sourceKind"] == "acr"
    assert f"Not offered at {SITE}**: PSMA PET/CT" in card["detail"]
    rule_page = page(e2e_site, _as_of(name), "/rules/prostate-biochemical-recurrence")
    assert "Fluciclovine (18F) PET/CT" in rule_page
    assert "ACR Post-treatment Follow-up Prostate Cancer 2017" in rule_page


def _as_of(name: str) -> Any:
    from cds_service import replay

    return replay.load(CASES[name]["_path"]).as_of


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_an_order_for_psma_pet_is_rated_not_blocked_and_says_not_offered_locally(e2e, e2e_site, hook):
    name = "prostate-bcr-post-prostatectomy-psma-pet"
    assert run(e2e, name, "order-select")["cards"] == []  # usually appropriate: quiet by default

    body = run(e2e_site, name, hook)
    [card] = body["cards"]
    assert f"not offered at {SITE}" in card["summary"]
    assert "the order is not blocked" in card["detail"]
    assert card["indicator"] == "info"
    # still rated, with the rating the source gives: nothing about availability changes a rating
    [action] = body["systemActions"]
    assert rating_of(action)["category"] == "usually-appropriate"
    assert FLUCICLOVINE in created_codes(card)[0]


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_a_switched_off_pitfall_no_longer_fires_and_its_page_says_who_and_why(e2e, e2e_site, hook):
    name = "prostate-mets-dialysis-ct-cap-contrast"
    default = run(e2e, name, hook)
    assert any("contrast-kidney-risk" in link["url"] for c in default["cards"] for link in c["links"])

    body = run(e2e_site, name, hook)
    assert not any("contrast-kidney-risk" in link["url"] for c in body["cards"] for link in c["links"])
    assert all(c["indicator"] != "warning" for c in body["cards"])
    assert all(rating_of(a)["rule"] != "contrast-kidney-risk" for a in body["systemActions"])

    rule_page = page(e2e_site, _as_of(name), "/rules/contrast-kidney-risk")
    assert (
        "Switched off at this site by Dr A. Rivera, CDS committee on 2026-11-02: Dialysis patients get "
        "iodinated contrast under the nephrology protocol"
    ) in rule_page
    assert "Switched off" not in page(e2e, _as_of(name), "/rules/contrast-kidney-risk")
    index = page(e2e_site, _as_of(name), "/rules")
    assert "switched off at this site by Dr A. Rivera" in index and "Not offered here: PSMA PET/CT" in index


def test_a_downgraded_caution_is_shown_as_information(e2e, e2e_site):
    name = "prostate-mets-flare-bone-scan"
    [default] = run(e2e, name, "order-select")["cards"]
    assert default["indicator"] == "warning"
    [card] = run(e2e_site, name, "order-select")["cards"]
    assert card["indicator"] == "info"
    assert any("flare-phenomenon" in link["url"] for link in card["links"])  # still shown, as info
    rule_page = page(e2e_site, _as_of(name), "/rules/flare-phenomenon")
    assert "Shown as info at this site by Dr B. Chen" in rule_page


@pytest.mark.parametrize("rule_id", ["red-flag-cord-compression", "red-flag-new-neuro-symptoms"])
@pytest.mark.parametrize("change", ["off: true", "indicator: info"])
def test_a_red_flag_cannot_be_switched_off_or_downgraded(e2e, tmp_path, rule_id, change):
    site = tmp_path / "site.yaml"
    site.write_text(
        f'version: "1"\nrules:\n  {rule_id}:\n    {change}\n    reason: too many alerts\n    approved_by: X\n'
    )
    import dataclasses

    with pytest.raises(SiteConfigError) as refused:
        create_app(dataclasses.replace(e2e.settings, site_config=site))
    assert str(refused.value).startswith(f"{site}: rules.{rule_id}: ")
    assert "red flags can never be switched off or shown as info" in str(refused.value)


def test_red_flags_still_fire_at_the_site(e2e_site):
    body = run(e2e_site, "prostate-mets-cord-compression-bone-scan", "order-select")
    assert [c["indicator"] for c in body["cards"]][:1] == ["critical"]


def test_every_card_carries_the_local_consult_link(e2e, e2e_site):
    name = "prostate-mets-flare-bone-scan"
    consult = "https://intranet.example.org/radiology/consult"
    assert all(consult not in json.dumps(c["links"]) for c in run(e2e, name, "order-sign")["cards"])
    for name in ("prostate-mets-flare-bone-scan", "prostate-mets-cord-compression-bone-scan"):
        cards = run(e2e_site, name, "order-sign")["cards"]
        assert cards and all(
            {"label": "Radiology consult, Example General (ext. 4321)", "url": consult, "type": "absolute"}
            in c["links"]
            for c in cards
        )


def test_the_local_name_of_a_study_is_used_in_card_text_and_suggestions(e2e_site):
    [card] = run(e2e_site, "prostate-bcr-post-prostatectomy-bone-scan", "order-select")["cards"]
    local = "Axumin PET/CT (fluciclovine F-18)"
    assert local in card["detail"] and card["suggestions"][0]["label"].startswith(f"Replace with {local}")
    created = next(a for a in card["suggestions"][0]["actions"] if a["type"] == "create")
    assert created["resource"]["code"]["text"].startswith(local)


def test_quiet_mode_is_set_per_service(e2e, e2e_site):
    """The example site shows usually-appropriate orders at signing only (quiet: false for the
    order-sign service); order-select keeps CDS_QUIET_APPROPRIATE (quiet)."""
    name = "breast-neoadjuvant-bone-pain-ct-cap-contrast"
    assert run(e2e, name, "order-sign")["cards"] == []
    assert run(e2e_site, name, "order-select")["cards"] == []
    cards = run(e2e_site, name, "order-sign")["cards"]
    assert cards and all(c["indicator"] == "info" and "usually appropriate" in c["summary"] for c in cards)


class _Clock:
    t = 1_900_000_000.0

    def __call__(self) -> float:
        return self.t


def test_snooze_hours_are_set_per_service_and_a_dismissal_counts_for_both(e2e, tmp_path):
    """order-select keeps CDS_SNOOZE_HOURS (24 h); the example site sets 72 h for order-sign."""
    import dataclasses

    from cds_service import replay
    from cds_service.bundle_search import BundleStore

    settings = dataclasses.replace(
        e2e.settings, site_config=EXAMPLE_SITE, feedback_db=tmp_path / "fb.sqlite3", state_secret="s" * 40
    )
    rp = replay.load(CASES["prostate-bcr-post-prostatectomy-bone-scan"]["_path"])
    app = replay.InProcess(rp.as_of, settings=settings)
    state = app.client.application.extensions["cds"]
    clock = _Clock()
    for snoozer in state.snoozers.values():
        snoozer.clock = clock
    state.snoozer.clock = clock
    assert {s: z.window_seconds / 3600 for s, z in state.snoozers.items()} == {
        "imaging-appropriateness": 24, "imaging-appropriateness-sign": 72
    }

    def call(hook: str) -> list[dict[str, Any]]:
        rp.hook = hook
        request = replay.build_request(rp)
        service = replay.SERVICE_IDS[hook]
        replay.fill_prefetch(request, replay.discovery_templates(app, service), BundleStore(rp.bundle))
        status, body = app.post(f"/cds-services/{service}", request)
        assert status == 200, body
        return list(body["cards"])

    [card] = call("order-select")
    assert call("order-sign")
    status, _ = app.post("/cds-services/imaging-appropriateness/feedback", {"feedback": [
        {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-15T10:00:00Z"}
    ]})
    assert status == 200
    assert call("order-select") == [] and call("order-sign") == []
    clock.t += 48 * 3600  # past order-select's 24 h, inside order-sign's 72 h
    assert call("order-select") and call("order-sign") == []
    clock.t += 30 * 3600
    assert call("order-sign")


def test_each_audit_row_records_the_site_file_version(e2e, tmp_path):
    import dataclasses

    from sqlalchemy import select

    from cds_service import replay
    from cds_service.state.tables import audit

    rows = []
    for site in (EXAMPLE_SITE, None):
        db = tmp_path / f"{site is None}.sqlite3"
        settings = dataclasses.replace(e2e.settings, site_config=site, feedback_db=db)
        rp = replay.load(CASES["prostate-mets-flare-bone-scan"]["_path"])
        app = replay.InProcess(rp.as_of, settings=settings)
        status, _, _ = replay.run(rp, app)
        assert status == 200
        store = app.client.application.extensions["cds"].feedback
        with store.engine.connect() as connection:
            rows.append(connection.execute(select(audit.c.site_config_version)).scalars().all())
    assert rows == [["2026-11-30.1"], [None]]


def test_rule_pages_mark_studies_not_offered_and_their_local_names(e2e, e2e_site):
    name = "prostate-bcr-post-prostatectomy-bone-scan"
    default = page(e2e, _as_of(name), "/rules/prostate-biochemical-recurrence")
    assert "not offered at this site" not in default and "called" not in default
    at_site = page(e2e_site, _as_of(name), "/rules/prostate-biochemical-recurrence")
    assert "PSMA PET/CT skull base to mid-thigh <span" in at_site and "(not offered at this site)" in at_site
    assert "(called Axumin PET/CT (fluciclovine F-18) here)" in at_site
    assert "site configuration Example General Hospital, version 2026-11-30.1" in at_site

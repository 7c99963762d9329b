"""The governance dashboard (`/admin/`) in a real browser: headless Chromium driven by Playwright.

A real `cds-service serve` (fresh state database, CDS_ADMIN_TOKEN, the example site file
fixtures/site/example-site.yaml) gets every fixture case once (the case's hooks taken in turn, so
both services) over HTTP, as an EHR would send it, plus two imaging orders with codes outside the
catalog; then feedback on some of the cards (a suggestion accepted, overridden with a coded reason,
overridden without one, a repeat, a card of the other service, a card never issued). The figures
the page must show are counted here from those responses and that feedback
(tests/browser/harness.py), never by the dashboard's own queries; the same records are read back
from the database through SQLAlchemy on `cds_service/state/tables.py` and must agree. Missing and
unreadable facts, which a response does not give as codes, are counted from the audit rows.

In the browser: every figure cell of all eight tables and each table's JSON twin; the service
filter chosen in the form and applied with its button; a date range outside the data, then today
only; a CSV downloaded by clicking its link; a full-page screenshot saved under the test's output
folder (`make test-browser`: test-output/); 401 without the token, with a wrong one, or without
the Bearer scheme; no patient identifier, hookInstance or card uuid in the page, CSVs or JSON.

Chromium is the system's (/usr/bin/chromium, or CHROMIUM_PATH): Playwright never downloads one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from tests.browser import harness
from tests.browser.harness import Observed, Sent, figures, nonzero

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# Every table of the contract. The test counts them from the responses and the feedback it sent,
# except the facts a response does not show as codes (missing-facts; the unreadable rows of
# data-quality): those it counts from the audit rows it reads itself.
COUNTED = ("rules", "studies", "override-reasons", "rated-share", "alert-burden", "missing-facts",
           "data-quality", "weekly")
SELECT, SIGN = harness.SERVICES

# Every figure cell of every table: {table: {row key: {column: text}}}
READ_TABLES = """() => Object.fromEntries([...document.querySelectorAll('table[id]')].map(t => [t.id,
  Object.fromEntries([...t.querySelectorAll('tbody tr[data-key]')].map(tr => [tr.dataset.key,
    Object.fromEntries([...tr.querySelectorAll('td[data-col]')].map(td =>
      [td.dataset.col, td.textContent.trim()]))]))]))"""
_INT = re.compile(r"-?\d+")
_PERCENT = re.compile(r"(-?\d+(?:\.\d+)?)%")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The service, the replayed cases, the feedback sent and what the test expects from them."""
    assert Path(CHROMIUM).is_file(), (
        f"no Chromium at {CHROMIUM}: install Debian's chromium package (.ci/run does) or set CHROMIUM_PATH"
    )
    workdir = tmp_path_factory.mktemp("dashboard-service")
    with harness.running_service(workdir) as service:
        calls, identities = harness.replay_cases(service.base, sorted(harness.CASES_DIR.glob("*.json")))
        day = datetime.now(UTC).date().isoformat()
        sent = harness.plan_feedback(calls)
        assert {s.outcome for s in sent} == {"accepted", "overridden", "dismissed"}
        # the same item twice is stored once; a card of the other service, or one never issued, not at all
        select_card = next(s for s in sent if s.service == SELECT).card
        stamp = sent[0].item["outcomeTimestamp"]
        never_issued = "8d0c5f8e-0000-4000-8000-000000000000"
        extra = [sent[0]] + [
            Sent(SIGN, card, "dismissed", None,
                 {"card": card, "outcome": "overridden", "outcomeTimestamp": stamp})
            for card in (select_card, never_issued)
        ]
        answers = harness.post_feedback(service.base, sent + extra)
        expected = Observed.from_responses(calls, sent + extra, day)
        expected.quality = Observed.from_database(service.db_path).quality
        assert sum(a["stored"] for a in answers) == len(expected.feedback) == len(sent)
        assert sum(a["unknown"] for a in answers) == 2
        yield {
            "service": service, "calls": calls, "identities": identities, "sent": sent,
            "expected": expected, "day": day,
        }


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        # Chromium refuses to run its sandbox as root (CI and this project's machines run as root):
        # --no-sandbox there only; any other user keeps the sandbox. /usr/bin/chromium is Debian's
        # build, never a downloaded one.
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, chromium_sandbox=os.geteuid() != 0)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def admin(browser: Browser, world: dict[str, Any]) -> Iterator[BrowserContext]:
    context = browser.new_context(
        base_url=world["service"].base, accept_downloads=True,
        extra_http_headers={"Authorization": f"Bearer {world['service'].token}"},
    )
    try:
        yield context
    finally:
        context.close()


def _value(text: str, where: str) -> float | int | None:
    if text == "\u2014":
        return None
    if _INT.fullmatch(text):
        return int(text)
    m = _PERCENT.fullmatch(text)
    assert m, f"{where}: {text!r} is not an integer, a percentage or \u2014"
    return float(m.group(1))


def read_page(page: Page) -> dict[str, dict[str, dict[str, float | int | None]]]:
    raw = page.evaluate(READ_TABLES)
    return {
        table: {key: {col: _value(text, f"{table}/{key}/{col}") for col, text in cols.items()}
                for key, cols in rows.items()}
        for table, rows in raw.items()
    }


def _same(actual: float | int | None, expected: float | int | None) -> bool:
    if actual is None or expected is None:
        return actual is expected
    return abs(float(actual) - float(expected)) < 0.051  # a percentage shown with one decimal


def assert_tables(shown: Mapping[str, Mapping[str, Mapping[str, Any]]], expected: harness.Figures,
                  what: str, tables: tuple[str, ...] = COUNTED) -> None:
    problems = []
    for table in tables:
        assert table in shown, f"{what}: no <table id={table!r}> on the page"
        want, got = nonzero(expected[table]), nonzero(shown[table])
        for key in sorted(set(want) | set(got)):
            if key not in got:
                problems.append(f"{table}/{key}: missing, expected {want[key]}")
                continue
            if key not in want:
                problems.append(f"{table}/{key}: shown {got[key]}, expected no such row")
                continue
            for col, value in want[key].items():
                if col not in got[key]:
                    problems.append(f"{table}/{key}: no cell data-col={col!r}")
                elif not _same(got[key][col], value):
                    problems.append(f"{table}/{key}/{col}: shown {got[key][col]}, expected {value}")
    assert not problems, f"{what}:\n" + "\n".join(problems)


def _open(context: BrowserContext, query: str = "") -> Page:
    page = context.new_page()
    response = page.goto(f"/admin/{query}")
    assert response is not None and response.status == 200, response and response.status
    return page


# --- the tests ----------------------------------------------------------------------------------

def test_the_database_holds_what_the_test_saw(world: dict[str, Any]) -> None:
    """Cross-check: the audit rows, card index and feedback rows read through SQLAlchemy
    (`cds_service/state/tables.py`) are, record by record, what the responses and the feedback said."""
    expected: Observed = world["expected"]
    stored = Observed.from_database(world["service"].db_path)
    e_calls, e_cards, e_feedback = expected.comparable()
    s_calls, s_cards, s_feedback = stored.comparable()
    assert s_cards == e_cards
    assert s_feedback == e_feedback
    assert s_calls == e_calls
    assert figures(stored) == figures(expected)
    # the replay is representative: both services, every indicator, all three outcomes, rated share
    assert {c.service for c in expected.calls} == {SELECT, SIGN}
    assert {c.indicator for c in expected.cards.values()} == {"info", "warning", "critical"}
    shares = figures(expected)["rated-share"]
    assert all(shares[k]["orders"] for k in harness.SHARE_KEYS), shares
    assert any(k.startswith("code|") for k in figures(expected)["data-quality"])


def test_the_site_file_is_in_force(admin: BrowserContext, world: dict[str, Any]) -> None:
    """The service runs with the example site file: every audit row names its version, the page
    says which version the figures were made under, and the rules it switches off fire nowhere (so
    the dashboard, which must equal the counts, lists none)."""
    site = yaml.safe_load(world["service"].site_file.read_text())
    with sqlite3.connect(world["service"].db_path) as db:
        versions = {row[0] for row in db.execute("SELECT DISTINCT site_config_version FROM audit")}
    assert versions == {str(site["version"])}
    # YAML 1.1 (PyYAML) reads a bare `off` key as the boolean false
    off = {rule for rule, change in (site.get("rules") or {}).items() if change.get("off", change.get(False))}
    assert off, "the example site file switches no rule off"
    assert not off & set(figures(world["expected"])["rules"])
    shown = _open(admin).inner_text("#site-versions")
    assert f"version {site['version']} ({len(world['calls'])} calls)" in shown, shown


def test_dashboard_figures_equal_the_counts_of_the_replayed_cases(admin: BrowserContext,
                                                                  world: dict[str, Any]) -> None:
    page = _open(admin)
    expected = figures(world["expected"])
    assert_tables(read_page(page), expected, "all services, all days")
    assert page.locator("#open-mode").count() == 0  # a token is set: not the open development mode
    # each table's JSON twin, at the address its link gives, says the same
    twins = {}
    for name in COUNTED:
        href = page.get_attribute(f"a[data-json={name}]", "href")
        assert href, f"no JSON link for {name}"
        answer = admin.request.get(href)
        assert answer.status == 200, (href, answer.status)
        twins[name] = {row["key"]: {c: v for c, v in row.items() if c not in ("key", "display")}
                       for row in answer.json()["rows"]}
    assert_tables(twins, expected, "JSON twins")


def test_filters_by_service_and_date_change_the_figures(admin: BrowserContext, world: dict[str, Any]) -> None:
    expected: Observed = world["expected"]
    page = _open(admin)
    page.select_option("#filters select[name=service]", SIGN)
    with page.expect_navigation():
        page.click("#apply")
    assert f"service={SIGN}" in page.url
    only_sign = figures(expected, service=SIGN)
    assert only_sign != figures(expected)  # the filter must be able to show a difference
    assert_tables(read_page(page), only_sign, f"service={SIGN}")

    # a date range before any card or call: every figure empty
    page.fill("#filters input[name=from]", "2001-01-01")
    page.fill("#filters input[name=to]", "2001-01-31")
    page.select_option("#filters select[name=service]", "all")
    with page.expect_navigation():
        page.click("#apply")
    assert "from=2001-01-01" in page.url and "to=2001-01-31" in page.url
    empty = figures(expected, start="2001-01-01", end="2001-01-31")
    assert all(not nonzero(empty[t]) for t in COUNTED)
    assert_tables(read_page(page), empty, "2001-01")

    # today only, inclusive on both ends: everything again
    day = world["day"]
    page.fill("#filters input[name=from]", day)
    page.fill("#filters input[name=to]", day)
    with page.expect_navigation():
        page.click("#apply")
    assert_tables(read_page(page), figures(expected, start=day, end=day), f"{day}..{day}")


def test_csv_download_matches_the_table(admin: BrowserContext, world: dict[str, Any],
                                        tmp_path: Path) -> None:
    page = _open(admin, f"?service={SELECT}")
    shown = read_page(page)["rules"]
    with page.expect_download() as info:
        page.click("a[data-csv=rules]")
    download = info.value
    saved = tmp_path / (download.suggested_filename or "rules.csv")
    download.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert rows, "the CSV has no rows"
    by_key = {r["key"]: r for r in rows}
    assert set(by_key) == set(shown)
    for key, cols in shown.items():
        for col, value in cols.items():
            raw = by_key[key][col]
            assert _same(None if raw == "" else float(raw), value), (key, col, raw, value)
    # the link kept the page's filter: the select service's figures, not both services'
    assert_tables({"rules": shown}, figures(world["expected"], service=SELECT), f"service={SELECT}",
                  tables=("rules",))


def test_full_page_screenshot_is_saved(admin: BrowserContext, tmp_path: Path) -> None:
    page = _open(admin)
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    viewport = page.viewport_size or {"height": 720}
    assert width > 0 and height > viewport["height"], (width, height)  # the whole page, not one screen


def _navigate_status(page: Page, path: str) -> int:
    """The HTTP status of a navigation. Chromium shows its own error page for an error answer with an
    empty body (page.goto then raises), so the status is read from the response event."""
    with page.expect_response(lambda r: r.url.endswith(path)) as answer:
        try:
            page.goto(path)
        except PlaywrightError as exc:
            assert "ERR_HTTP_RESPONSE_CODE_FAILURE" in str(exc), exc
    return answer.value.status


def test_without_the_token_the_dashboard_answers_401(browser: Browser, world: dict[str, Any]) -> None:
    base = world["service"].base
    refused = [({}, "/admin/"), ({}, "/admin/rules.csv"), ({}, "/admin/api/rules"),
               ({"Authorization": "Bearer " + "0" * 48}, "/admin/"),
               ({"Authorization": world["service"].token}, "/admin/")]  # no Bearer scheme
    for headers, path in refused:
        context = browser.new_context(base_url=base, extra_http_headers=headers)
        try:
            page = context.new_page()
            assert _navigate_status(page, path) == 401, (headers, path)
            assert page.locator("table#rules").count() == 0
            assert world["service"].token not in page.content()
        finally:
            context.close()


def test_no_patient_identifier_reaches_the_dashboard(admin: BrowserContext, world: dict[str, Any]) -> None:
    page = _open(admin)
    texts = [page.content()]
    for name in COUNTED:
        texts.append(admin.request.get(f"/admin/{name}.csv").text())
        texts.append(json.dumps(admin.request.get(f"/admin/api/{name}").json()))
    private = {v for ident in world["identities"] for v in ident.values()}
    private |= {c.request["hookInstance"] for c in world["calls"]}
    private |= set(world["expected"].cards)  # card uuids link feedback to a patient's call
    assert len(world["identities"]) > 20
    for text in texts:
        leaked = sorted(v for v in private if v in text)
        assert not leaked, f"identifiers on the dashboard: {leaked[:5]}"

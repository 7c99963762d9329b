"""GET /admin/ (HTML), /admin/NAME.csv and /admin/api/NAME: access, the HTML contract, and the same
figures in all three forms as counted from the written history."""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from cds_service.app import create_app
from cds_service.config import ConfigError, Settings
from cds_service.governance.queries import TABLES

from . import history as h
from .conftest import Clock, DashboardPage, figure

TOKEN = "t0ken-for-the-governance-tests-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REMOTE = {"REMOTE_ADDR": "10.20.30.40"}
PERCENT_COLS = {c.name for t in TABLES for c in t.columns if c.kind == "percent"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(feedback_db=tmp_path / "state.sqlite3", cache_dir=None, strict_responses=True,
                    today=date(2026, 12, 2))


def app_with(settings: Settings, **changes: Any) -> Any:
    app = create_app(replace(settings, **changes))
    app.testing = True
    return app


@pytest.fixture
def secured(settings: Settings) -> Any:
    return app_with(settings, admin_token=TOKEN).test_client()


@pytest.fixture
def written(secured: Any, clock: Clock) -> h.History:
    past = h.make()
    h.write(secured.application.extensions["cds"].feedback, clock, past)
    return past


# --- access -------------------------------------------------------------------------------------

PATHS = ["/admin/", "/admin/rules.csv", "/admin/api/rules"]


@pytest.mark.parametrize("path", PATHS)
def test_without_a_token_setting_the_dashboard_does_not_exist_for_a_remote_caller(settings, path):
    client = app_with(settings).test_client()
    assert client.get(path, environ_base=REMOTE).status_code == 404
    assert client.get(path, environ_base=REMOTE, headers=AUTH).status_code == 404


@pytest.mark.parametrize("path", PATHS)
def test_open_development_mode_on_localhost_says_so(settings, path):
    client = app_with(settings).test_client()
    response = client.get(path)  # the test client's peer is 127.0.0.1
    assert response.status_code == 200
    if path == "/admin/":
        assert DashboardPage(response.get_data(as_text=True)).open_mode


@pytest.mark.parametrize("headers", [{"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"},
                                     {"X-Real-IP": "203.0.113.9"}])
def test_a_proxied_local_request_is_not_open_mode(settings, headers):
    # nginx on the same host makes every visitor's peer 127.0.0.1
    assert app_with(settings).test_client().get("/admin/", headers=headers).status_code == 404


def test_trusted_clients_turn_open_mode_off(settings, tmp_path):
    trusted = tmp_path / "trusted.json"
    trusted.write_text(json.dumps({"https://ehr.example.org": {"jwks": {"keys": []}}}))
    client = app_with(settings, trusted_clients=trusted, public_base_url="http://localhost").test_client()
    assert client.get("/admin/").status_code == 404


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token-of-the-same-len", f"Basic {TOKEN}", "Bearer",
                                    f"Bearer {TOKEN}x", f"bearer  {TOKEN[:-1]}"])
def test_with_a_token_setting_anything_but_the_token_is_401(secured, path, header):
    headers = {"Authorization": header} if header else {}
    for env in ({}, REMOTE):  # localhost gets no exception once a token is set
        response = secured.get(path, headers=headers, environ_base=env)
        assert response.status_code == 401
        assert response.get_data() == b""


@pytest.mark.parametrize("path", PATHS)
def test_the_token_opens_every_endpoint_and_the_page_is_not_marked_open(secured, path):
    response = secured.get(path, headers=AUTH, environ_base=REMOTE)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    if path == "/admin/":
        assert not DashboardPage(response.get_data(as_text=True)).open_mode


def test_the_token_is_never_logged(secured, caplog):
    caplog.set_level(logging.DEBUG)
    secured.get("/admin/", headers=AUTH)
    secured.get("/admin/", headers={"Authorization": f"Bearer {TOKEN[:-1]}Z"})
    assert TOKEN not in caplog.text and TOKEN[:-1] not in caplog.text


def test_a_short_token_setting_is_refused_at_start():
    with pytest.raises(ConfigError, match="CDS_ADMIN_TOKEN must be at least 16"):
        Settings.from_env({"CDS_ADMIN_TOKEN": "short"})
    assert Settings.from_env({"CDS_ADMIN_TOKEN": TOKEN}).admin_token == TOKEN
    assert TOKEN not in repr(Settings.from_env({"CDS_ADMIN_TOKEN": TOKEN}))


# --- the contract ---------------------------------------------------------------------------------

def page(client: Any, query: str = "") -> DashboardPage:
    response = client.get(f"/admin/{query}", headers=AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/html"
    return DashboardPage(response.get_data(as_text=True))


def test_the_page_has_the_filter_form_and_every_table_with_csv_and_json_links(secured):
    p = page(secured, "?from=2026-11-01&to=2026-11-30&service=imaging-appropriateness")
    assert {"input:from:date", "input:to:date", "select:service:"} <= p.form_fields and p.has_apply
    assert set(p.tables) == {t.name for t in TABLES}
    for t in TABLES:
        for links, prefix in ((p.csv_links, f"/admin/{t.name}.csv"), (p.json_links, f"/admin/api/{t.name}")):
            url = urlsplit(links[t.name])
            assert url.path == prefix
            assert parse_qs(url.query) == {"from": ["2026-11-01"], "to": ["2026-11-30"],
                                           "service": ["imaging-appropriateness"]}


QUERIES = [
    ("", None, None, None),
    ("?from=2026-11-08&to=2026-11-20", date(2026, 11, 8), date(2026, 11, 20), None),
    (f"?service={h.SIGN}&to=2026-11-10", None, date(2026, 11, 10), h.SIGN),
    (f"?service=all&from=2026-11-10&service={h.SELECT}", date(2026, 11, 10), None, "all"),
]


@pytest.mark.parametrize("query, start, end, service", QUERIES)
def test_the_page_shows_the_counts_of_the_written_history(secured, written, query, start, end, service):
    want = h.expected(written, start, end, None if service in (None, "all") else service)
    p = page(secured, query)
    for name, rows in want.items():
        shown = {k: {c: figure(v, c in PERCENT_COLS) for c, v in cols.items()} for k, cols in rows.items()}
        assert p.tables[name] == shown, name


@pytest.mark.parametrize("query", ["", "?from=2026-11-08&to=2026-11-20", f"?service={h.SIGN}"])
def test_csv_and_json_say_what_the_page_says(secured, written, query):
    p = page(secured, query)
    for t in TABLES:
        cols = [c.name for c in t.columns]
        data = secured.get(p.json_links[t.name], headers=AUTH)
        assert data.status_code == 200 and data.mimetype == "application/json"
        body = data.get_json()
        assert body["table"] == t.name and body["columns"] == cols
        as_html = {str(r["key"]): {c: figure(r[c], c in PERCENT_COLS) for c in cols} for r in body["rows"]}
        assert as_html == p.tables[t.name], t.name

        sheet = secured.get(p.csv_links[t.name], headers=AUTH)
        assert sheet.status_code == 200 and sheet.mimetype == "text/csv"
        assert sheet.headers["Content-Disposition"] == f'attachment; filename="{t.name}.csv"'
        reader = list(csv.reader(io.StringIO(sheet.get_data(as_text=True))))
        assert reader[0][: len(cols) + 1] == ["key", *cols]
        from_csv = {
            row[0]: {c: figure(None if row[i + 1] == "" else (float(row[i + 1]) if c in PERCENT_COLS
                                                             else int(row[i + 1])), c in PERCENT_COLS)
                     for i, c in enumerate(cols)}
            for row in reader[1:]
        }
        assert from_csv == p.tables[t.name], t.name


@pytest.mark.parametrize("path", PATHS + ["/admin/api/weekly", "/admin/data-quality.csv"])
@pytest.mark.parametrize("query", ["?from=2026-02-30", "?to=12/01/2026", "?from=2026-11-20&to=2026-11-01",
                                   "?service=other", "?from=2026-11-01T00:00"])
def test_bad_filter_values_are_400_operation_outcomes(secured, path, query):
    response = secured.get(path + query, headers=AUTH)
    assert response.status_code == 400
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "invalid"


def test_an_unknown_table_is_404(secured):
    assert secured.get("/admin/api/patients", headers=AUTH).status_code == 404
    assert secured.get("/admin/patients.csv", headers=AUTH).status_code == 404


def test_a_formula_looking_code_is_defused_in_csv(secured, clock):
    store = secured.application.extensions["cds"].feedback
    from cds_service.protocol.feedback import AuditEntry
    store.audit(AuditEntry(h.SELECT, "x", "order-select", "1", (), (), (), 0, None, orders=1,
                           unknown_codes=("=HYPERLINK(1)|2",)))
    text = secured.get("/admin/data-quality.csv", headers=AUTH).get_data(as_text=True)
    assert "code|=HYPERLINK" in text  # key starts with "code|": nothing to defuse there
    store.audit(AuditEntry(h.SELECT, "x", "order-select", "1", (), (), (), 0, None, orders=1,
                           missing_facts=("=cmd",)))
    text = secured.get("/admin/missing-facts.csv", headers=AUTH).get_data(as_text=True)
    assert "'=cmd,1" in text


def test_the_page_names_the_site_configurations_in_force_over_the_range(secured, clock):
    from cds_service.protocol.feedback import AuditEntry

    store = secured.application.extensions["cds"].feedback
    for day, version in (("2026-11-02", None), ("2026-11-03", "2026.1"), ("2026-11-04", "2026.1"),
                         ("2026-11-20", "2026.2")):
        clock.set(f"{day}T10:00:00")
        store.audit(AuditEntry(h.SELECT, "x", "order-select", "1", (), (), (), 0, None,
                               site_config_version=version))
    html = secured.get("/admin/?to=2026-11-10", headers=AUTH).get_data(as_text=True)
    assert "none (1 call), version 2026.1 (2 calls)." in html and "2026.2" not in html
    later = secured.get("/admin/?from=2026-11-10", headers=AUTH).get_data(as_text=True)
    assert "version 2026.2 (1 call)" in later


@pytest.mark.parametrize("path", PATHS)
def test_an_unreadable_state_database_is_503_not_a_crash(settings, path, tmp_path, caplog):
    db = tmp_path / "broken.sqlite3"
    client = app_with(settings, admin_token=TOKEN, feedback_db=db).test_client()
    for f in tmp_path.glob("broken.sqlite3*"):
        f.write_bytes(b"not a database at all " * 512)  # a disk gone bad under the service
    response = client.get(path, headers=AUTH)
    assert response.status_code == 503
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert "Traceback" not in caplog.text

"""`/admin/`: the governance dashboard (read-only HTML, CSV and JSON of the same tables).

Access (README, Governance dashboard): with CDS_ADMIN_TOKEN set, every request needs
`Authorization: Bearer <token>` (compared in constant time; 401 otherwise). Without it the dashboard
does not exist (404), except in open development mode: no CDS_TRUSTED_CLIENTS, not CDS_ENV=production,
and a request that reached the service over the loopback interface without passing a proxy; the page
then says it is open.

No scripts, no external assets: the Content-Security-Policy allows only the page's own stylesheet
(by hash) and inline SVG, so the page also works on a locked-down intranet.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import ipaddress
import logging
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from markupsafe import Markup
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import NotFound

from cds_service.governance import charts
from cds_service.governance.queries import (
    TABLES,
    TABLES_BY_NAME,
    FilterError,
    Filters,
    Row,
    build,
    parse_filters,
    site_versions,
)
from cds_service.protocol import access_log
from cds_service.protocol.discovery import SERVICES
from cds_service.protocol.errors import InvalidRequest, ProtocolError
from cds_service.protocol.views import ServiceState, Unauthorized

log = logging.getLogger(__name__)
T = TypeVar("T")

blueprint = Blueprint("governance", __name__, template_folder="templates")

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1a1a1a;max-width:72rem}
h1{font-size:1.4rem;margin:0 0 .5rem} h2{font-size:1.1rem;margin:1.6rem 0 .2rem}
p.about{margin:.1rem 0 .5rem;color:#555}
#open-mode{background:#fff3cd;border:1px solid #e0c060;padding:.4rem .6rem}
table{border-collapse:collapse;margin:.3rem 0}
th,td{border-bottom:1px solid #ddd;padding:.2rem .6rem;text-align:left}
td[data-col]{text-align:right;font-variant-numeric:tabular-nums} th.num{text-align:right}
form#filters{display:flex;gap:.8rem;align-items:end;flex-wrap:wrap;padding:.5rem 0}
form#filters label{display:flex;flex-direction:column;font-size:.85rem}
.links{font-size:.85rem} .empty{color:#777} svg{display:block;margin:.3rem 0}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_NO_DATA = "\u2014"  # the em dash a figure cell shows when there is nothing to divide by


def _state() -> ServiceState:
    state: ServiceState = current_app.extensions["cds"]
    return state


def _open_mode(state: ServiceState) -> bool:
    """Development only: no trusted clients, not production, and a loopback peer that no proxy
    stands in front of (a proxy on the same host would make every visitor look local)."""
    settings = state.settings
    if settings.trusted_clients is not None or settings.environment == "production":
        return False
    if any(h in request.headers for h in ("Forwarded", "X-Forwarded-For", "X-Real-IP")):
        return False
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def _authorize() -> bool:
    """True: open development mode. Raises NotFound (dashboard off) or Unauthorized."""
    state = _state()
    token = state.settings.admin_token
    if token is None:
        if _open_mode(state):
            access_log.note(auth="open")
            return True
        raise NotFound()
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    # compare_digest on bytes: constant time whatever the given value (never logged)
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        access_log.note(auth="admin token refused")
        raise Unauthorized()
    access_log.note(auth="ok")
    return False


def _filters() -> Filters:
    try:
        return parse_filters(request.args, [s.id for s in SERVICES])
    except FilterError as exc:
        raise InvalidRequest(str(exc)) from exc


def _secured(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _read(read: Callable[[], T]) -> T:
    try:
        return read()
    except SQLAlchemyError as exc:
        # the state database is down or unreadable: the service's guidance is not, so no 500
        log.warning("governance view: state database error (%s)", type(exc).__name__)
        raise ProtocolError("The state database is not available; try again shortly", status=503) from None


def _table(name: str) -> str:
    if name not in TABLES_BY_NAME:
        raise NotFound()
    return name


def cell(value: Any, kind: str) -> str:
    """The text of a figure cell: an integer, a percentage with one decimal, or an em dash."""
    if value is None:
        return _NO_DATA
    return f"{value:.1f}%" if kind == "percent" else str(int(value))


@blueprint.get("/admin/")
def dashboard() -> Response:
    open_mode = _authorize()
    filters = _filters()
    engine = _state().feedback.engine
    tables = _read(lambda: build(engine, filters))
    versions = _read(lambda: site_versions(engine, filters))
    query = urlencode(filters.query())
    html = render_template(
        "governance/dashboard.html",
        style=Markup(STYLE),
        tables=TABLES,
        rows=tables,
        filters=filters,
        query=query,
        services=[s.id for s in SERVICES],
        open_mode=open_mode,
        cell=cell,
        share_chart=Markup(charts.share_bar(tables["rated-share"])),
        weekly_chart=Markup(charts.weekly_bars(tables["weekly"])),
        knowledge_version=str(getattr(_state().knowledge, "version", "")),
        site_versions=versions,
        names=_names(_state().knowledge),
    )
    return _secured(Response(html, mimetype="text/html"))


def _names(knowledge: Any) -> dict[str, dict[str, str]]:
    """Rule titles and study names for the page's tooltips (the key cell itself stays the id)."""
    rules = {s.id: s.title for s in knowledge.scenarios}
    rules.update({p.id: p.title for p in knowledge.pitfalls.values()})
    rules.update({o.id: o.title for o in knowledge.texts.outcomes.values()})
    studies = {pid: p.display for pid, p in knowledge.catalog.procedures.items()}
    return {"rules": rules, "studies": studies}


@blueprint.get("/admin/api/<name>")
def table_json(name: str) -> Response:
    _authorize()
    name = _table(name)
    filters = _filters()
    spec = TABLES_BY_NAME[name]
    rows = _read(lambda: build(_state().feedback.engine, filters, [name]))[name]
    return _secured(jsonify({
        "table": name,
        "columns": [c.name for c in spec.columns],
        "filters": filters.query(),
        "rows": rows,
    }))


@blueprint.get("/admin/<name>.csv")
def table_csv(name: str) -> Response:
    _authorize()
    name = _table(name)
    filters = _filters()
    spec = TABLES_BY_NAME[name]
    rows = _read(lambda: build(_state().feedback.engine, filters, [name]))[name]
    response = Response(to_csv(spec.columns, spec.text_columns, rows), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}.csv"'
    return _secured(response)


def to_csv(columns: Any, text_columns: tuple[str, ...], rows: list[Row]) -> str:
    """Header `key,COL...`; figures as in the JSON (percentages as numbers, empty for no data)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    names = [c.name for c in columns]
    writer.writerow(["key", *names, *text_columns])
    for row in rows:
        figures = ["" if row.get(n) is None else row[n] for n in names]
        writer.writerow([_safe(row["key"]), *figures, *(_safe(row.get(t) or "") for t in text_columns)])
    return out.getvalue()


def _safe(text: str) -> str:
    # codes come from EHRs: a leading = + - @ would run as a formula in a spreadsheet
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text

"""Human-readable pages explaining each rule, linked from every card (`GET /rules/<rule_id>`).

A rule id is a scenario id, a pitfall id or an engine outcome (`insufficient-data`,
`no-criteria-apply`, `pet-tracer-unspecified`). Everything taken from the rule files is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Blueprint, Response, abort, current_app
from markupsafe import Markup

from cds_service.knowledge import Knowledge, load_knowledge
from cds_service.knowledge.model import Outcome, Pitfall, Scenario
from cds_service.knowledge.predicates import describe

blueprint = Blueprint("rule_pages", __name__)

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
    "table{border-collapse:collapse;width:100%}"
    "td,th{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}"
    "code{background:#f4f4f4;padding:0 .2rem}"
)


def _knowledge() -> Knowledge:
    state = current_app.extensions.get("cds")
    knowledge = getattr(state, "knowledge", None) or current_app.extensions.get("cds_knowledge")
    if knowledge is None:  # blueprint mounted without the service state (scripts, tests)
        knowledge = current_app.extensions["cds_knowledge"] = load_knowledge()
    return knowledge


def _list(items: Iterable[str]) -> Markup:
    return Markup("<ul>") + Markup("").join(Markup("<li>%s</li>") % i for i in items) + Markup("</ul>")


def _page(title: str, body: Markup, version: str) -> Response:
    html = (
        Markup(
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>%s</title><style>%s</style>'
            "</head><body><h1>%s</h1>"
        )
        % (title, Markup(_STYLE), title)
        + body
        + Markup("<hr><p><small>Knowledge base version %s</small></p></body></html>") % version
    )
    return Response(str(html), mimetype="text/html")


def _scenario_body(s: Scenario, k: Knowledge) -> Markup:
    procs = k.catalog.procedures
    body = Markup("<p>%s</p><p><strong>Source:</strong> %s; %s</p>") % (
        s.description,
        s.acr_citation,
        "; ".join(k.texts.cite(seed) for seed in s.seeds),
    )
    body += Markup("<h2>When it applies</h2><p><strong>Patients:</strong> <code>%s</code></p>") % describe(
        s.population
    )
    if s.requires:
        body += Markup("<p><strong>Facts required to decide:</strong></p>") + _list(
            r.label for r in s.requires
        )
    body += Markup("<p><strong>Entry criteria:</strong> <code>%s</code></p>") % describe(s.criteria)
    for v in s.variants:
        body += Markup("<h2>%s</h2>") % v.title
        if v.when:
            body += Markup("<p>Applies when <code>%s</code></p>") % describe(v.when)
        rows = Markup("").join(
            Markup("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>")
            % (
                procs[r.procedure_id].display,
                k.texts.category_labels[r.category],
                procs[r.procedure_id].rrl_text,
                r.rationale,
                r.source,
            )
            for r in v.ratings.values()
        )
        if rows:
            body += (
                Markup(
                    "<table><tr><th>Study</th><th>Rating</th><th>Radiation</th><th>Why</th>"
                    "<th>Source</th></tr>%s</table>"
                )
                % rows
            )
        body += Markup(
            "<p>Studies not listed here get <em>no criteria apply</em>; no rating is invented.</p>"
        )
    if s.recommended:
        body += Markup("<h2>Recommended by the source (no ACR category)</h2>") + _list(
            f"{procs[p].display} ({procs[p].rrl_text}): {note}" for p, note in s.recommended.items()
        )
    if s.urgent_procedure:
        body += (
            Markup("<p><strong>Urgent study:</strong> %s, whatever else was ordered.</p>")
            % procs[s.urgent_procedure].display
        )
    if s.pitfalls:
        body += Markup("<h2>Pitfalls checked</h2>") + _list(
            Markup('<a href="%s">%s</a>') % (p, k.pitfalls[p].title) for p in s.pitfalls
        )
    if s.evidence:
        body += Markup("<h2>Evidence</h2><p>%s</p>") % s.evidence
    return body


def _pitfall_body(p: Pitfall, k: Knowledge) -> Markup:
    procs = k.catalog.procedures
    applies = [procs[i].display for i in sorted(p.applies_procedures)]
    applies += [f"any study with {c} contrast" for c in sorted(p.applies_contrast)]
    body = Markup(
        "<p>%s</p><p><strong>Applies to:</strong> %s</p><p><strong>Fires when:</strong> <code>%s</code></p>"
    ) % (p.text, "; ".join(applies), describe(p.trigger))
    if p.prefer:
        body += Markup("<p><strong>Suggests instead:</strong> %s</p>") % ", ".join(
            procs[i].display for i in p.prefer
        )
    if p.prefer_contrast_not:
        body += (
            Markup("<p><strong>Suggests instead:</strong> the scenario's studies without %s contrast</p>")
            % p.prefer_contrast_not
        )
    used = [s.title for s in k.scenarios if p.id in s.pitfalls]
    return body + Markup("<h2>Used in</h2>") + _list(used) + Markup("<h2>Sources</h2>") + _list(p.sources)


def _outcome_body(o: Outcome) -> Markup:
    return Markup("<p>%s</p><h2>Sources</h2>") % o.description + _list(o.sources)


@blueprint.get("/rules/<rule_id>")
def rule_page(rule_id: str) -> Response:
    k = _knowledge()
    scenario = k.scenario(rule_id)
    if scenario:
        return _page(scenario.title, _scenario_body(scenario, k), k.version)
    if rule_id in k.pitfalls:
        pitfall = k.pitfalls[rule_id]
        return _page(pitfall.title, _pitfall_body(pitfall, k), k.version)
    if rule_id in k.texts.outcomes:
        outcome = k.texts.outcomes[rule_id]
        return _page(outcome.title, _outcome_body(outcome), k.version)
    abort(404)

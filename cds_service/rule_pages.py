"""Human-readable pages explaining each rule, linked from every card (`GET /rules/<rule_id>`).

A rule id is a scenario id, a pitfall id or an engine outcome (`insufficient-data`,
`no-criteria-apply`, `pet-tracer-unspecified`, ...). `GET /rules` lists them all. A rule page holds
what a card leaves out: its source kind (ACR rating, another guideline translated by the project, or a
source-article recommendation), citations, review date, the alternatives table, the full reasoning in
words, the codes of the concepts it reads, and the end-to-end cases that pin it
(`GET /rules/cases/<name>`). Everything taken from the rule files is escaped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, current_app
from markupsafe import Markup, escape

from cds_service.engine.card_text import sentences
from cds_service.knowledge import Knowledge, load_knowledge
from cds_service.knowledge.cases import DEFAULT_CASES_DIR, RuleCases, cases_by_rule
from cds_service.knowledge.docs import NO_RATING, SYSTEM_LABELS
from cds_service.knowledge.explain import Clause, concepts_of, explain, med_classes_of
from cds_service.knowledge.model import UNVERIFIED_MARK, Outcome, Pitfall, Scenario

blueprint = Blueprint("rule_pages", __name__)

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
    "table{border-collapse:collapse;width:100%}"
    "td,th{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}"
    "code{background:#f4f4f4;padding:0 .2rem}"
    ".meta{color:#444}.unverified{color:#8a4b00}"
    ".local{border-left:4px solid #8a4b00;padding-left:.6rem}"
)
KIND_LABELS = {
    "acr": "ACR Appropriateness Criteria rating",
    "translated": "another guideline's statement translated by this service (not an ACR rating)",
    "seed": "recommendation of a source article, without a category",
}
PITFALL_KIND_LABELS = {
    "acr": "ACR Appropriateness Criteria text",
    "translated": "another guideline's statement",
    "seed": "source article and the literature it cites (a caution, not a rating)",
}
SEED_FILE = re.compile(r"\b(?:seed )?(\d{3}_[0-9a-f]{16}\.txt)")


def _site() -> Any:
    """The site configuration (knowledge/site.py SiteConfig) the service runs with, or None."""
    return getattr(current_app.extensions.get("cds"), "site", None)


def _local_change(rule_id: str) -> Markup:
    """What this site changed about the rule, who approved it, when and why (CDS_SITE_CONFIG)."""
    site = _site()
    override = site.rules.get(rule_id) if site else None
    if override is None:
        return Markup("")
    return Markup('<p class="local" id="site-change"><strong>Local change:</strong> %s. '
                  "<small>(site configuration %s, version %s)</small></p>") % (
        override.sentence[:1].upper() + override.sentence[1:], site.site or "of this service", site.version
    )


def _knowledge() -> Knowledge:
    state = current_app.extensions.get("cds")
    knowledge = getattr(state, "knowledge", None) or current_app.extensions.get("cds_knowledge")
    if knowledge is None:  # blueprint mounted without the service state (scripts, tests)
        knowledge = current_app.extensions["cds_knowledge"] = load_knowledge()
    return knowledge


@cache
def _cases(directory: Path = DEFAULT_CASES_DIR) -> tuple[dict[str, RuleCases], dict[str, dict[str, Any]]]:
    """(rule id -> cases, case name -> case), read once: the fixtures do not change while serving."""
    by_name: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else ():
        try:
            case = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        by_name[str(case.get("name") or path.stem)] = case
    return cases_by_rule(directory), by_name


def _list(items: Iterable[Any]) -> Markup:
    return Markup("<ul>") + Markup("").join(Markup("<li>%s</li>") % i for i in items) + Markup("</ul>")


def _page(title: str, body: Markup, version: str) -> Response:
    html = (
        Markup(
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>%s</title><style>%s</style>'
            '</head><body><p><a href="/rules">All rules</a></p><h1>%s</h1>'
        )
        % (title, Markup(_STYLE), title)
        + body
        + Markup("<hr><p><small>Knowledge base version %s%s</small></p></body></html>")
        % (version, _site_line())
    )
    return Response(str(html), mimetype="text/html")


def _site_line() -> str:
    site = _site()
    return f"; site configuration {site.site or site.file}, version {site.version}" if site else ""


def _text(text: str) -> Markup:
    """Rule text with every sentence the reference marks unverified ([I]) labelled as such."""
    out = Markup("")
    for sentence in sentences(text):
        if UNVERIFIED_MARK in sentence:
            clean = re.sub(r"\s*" + re.escape(UNVERIFIED_MARK), "", sentence).strip()
            note = "unverified figure, not shown on cards"
            out += Markup('<span class="unverified">%s (%s)</span> ') % (clean, note)
        else:
            out += Markup("%s ") % sentence
    return out


def _clause(c: Clause) -> Markup:
    if not c.parts:
        return escape(c.text)
    return escape(c.text) + _list(_clause(p) for p in c.parts)


def _meta(kind: Markup | str, reviewed: str) -> Markup:
    return Markup('<p class="meta"><strong>Source kind:</strong> %s<br><strong>Reviewed:</strong> %s</p>') % (
        kind,
        reviewed or "not recorded",
    )


def _scenario_kind(s: Scenario) -> Markup:
    kinds = []
    for kind in s.source_kinds:
        label = KIND_LABELS[kind]
        if kind == "translated":
            label += " from " + ", ".join(s.translated_from)
        kinds.append(label)
    return Markup("; ").join(escape(k) for k in kinds) if kinds else escape(NO_RATING)


def _medications(k: Knowledge, classes: list[str]) -> Markup:
    """Each medication class the rule reads, with its ingredients and their codes."""
    vs = k.valuesets
    codes: dict[str, list[str]] = {}
    for (system, code), ingredients in vs.drug_index.items():
        for ingredient in ingredients:
            codes.setdefault(ingredient, []).append(f"{SYSTEM_LABELS.get(system, system)} {code}")
    body = Markup("")
    for cls in classes:
        members = [i for i in vs.ingredients.values() if cls in i.classes]
        rows = Markup("").join(
            Markup("<tr><td>%s</td><td>%s</td></tr>") % (i.name, ", ".join(codes.get(i.id, [])) or "none")
            for i in members
        )
        body += Markup(
            "<details><summary>Medication class <code>%s</code>, %d ingredients</summary>"
            "<table><tr><th>Ingredient</th><th>Codes</th></tr>%s</table></details>"
        ) % (cls, len(members), rows)
    return body


def _concepts(k: Knowledge, ids: list[str], classes: Iterable[str] = ()) -> Markup:
    """The codes of each concept the rule reads: what a chart entry must carry to count."""
    if not ids and not classes:
        return Markup("")
    sets = k.valuesets.sets
    body = Markup(
        "<h2>Concepts and their codes</h2><p>Facts are matched on (system, code) only; an ICD-10-CM "
        "category covers its descendants.</p>"
    ) + _medications(k, list(classes))
    for vid in ids:
        vs = sets[vid]
        rows = Markup("").join(
            Markup("<tr><td>%s</td><td><code>%s</code></td><td>%s</td></tr>")
            % (
                SYSTEM_LABELS.get(c.system, c.system),
                (c.code or f"{c.prefix}* (category)") + (" (excluded)" if c.exclude else ""),
                c.display + ("" if c.verified else " (unverified code)"),
            )
            for c in vs.codes
        )
        table = (
            Markup("<table><tr><th>System</th><th>Code</th><th>Display</th></tr>%s</table>") % rows
            if rows
            else Markup("<p>No codes (reference range or derived fact).</p>")
        )
        body += Markup("<details><summary>%s (<code>%s</code>), %d codes</summary>%s</details>") % (
            vs.title,
            vid,
            len(vs.codes),
            table,
        )
    return body


def _case_links(rule_id: str) -> Markup:
    cases = _cases()[0].get(rule_id) or RuleCases()
    body = Markup("<h2>End-to-end cases</h2>")
    if not cases.fires and not cases.absent:
        return body + Markup("<p>No fixture case pins this rule yet.</p>")

    def links(names: tuple[str, ...]) -> Markup:
        return Markup(", ").join(Markup('<a href="/rules/cases/%s">%s</a>') % (n, n) for n in names)

    if cases.fires:
        body += Markup("<p><strong>Fires in:</strong> %s</p>") % links(cases.fires)
    if cases.absent:
        body += Markup("<p><strong>Must not fire in:</strong> %s</p>") % links(cases.absent)
    return body


def _study(k: Knowledge, procedure_id: str) -> Markup:
    """A study's catalog name, with what this site says about it (local name, not offered)."""
    site = _site()
    name = escape(k.catalog.procedures[procedure_id].display)
    if site is None:
        return name
    if procedure_id in site.display_names:
        name += Markup(' <span class="local">(called %s here)</span>') % site.display_names[procedure_id]
    if procedure_id in site.unavailable:
        name += Markup(' <span class="local" data-local="not-offered">(not offered at this site)</span>')
    return name


def _ratings_table(s: Scenario, k: Knowledge, variant: Any) -> Markup:
    procs = k.catalog.procedures
    rows = Markup("").join(
        Markup("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>")
        % (
            _study(k, r.procedure_id),
            k.texts.category_labels[r.category],
            r.provenance if r.is_acr else f"Translated from {r.guideline}: not an ACR rating",
            procs[r.procedure_id].rrl_text,
            _text(r.rationale),
            r.source,
        )
        for r in variant.ratings.values()
    )
    if not rows:
        return Markup("<p>No study is rated in this variant.</p>")
    return Markup(
        "<table><tr><th>Study</th><th>Rating</th><th>Source kind</th><th>Radiation</th><th>Why</th>"
        "<th>Source</th></tr>%s</table>"
    ) % rows


def _scenario_body(s: Scenario, k: Knowledge) -> Markup:
    procs = k.catalog.procedures
    body = Markup("<p>%s</p>") % _text(s.description)
    body += _meta(_scenario_kind(s), s.reviewed)
    body += Markup("<p><strong>Sources:</strong></p>") + _list(
        [s.acr_citation, *(k.texts.cite(seed) for seed in s.seeds)]
    )
    body += Markup("<h2>When it applies</h2><p><strong>Patients:</strong></p>") + _list(
        [_clause(explain(s.population, k))]
    )
    if s.requires:
        body += Markup("<p><strong>Facts required to decide</strong> (without them: no rating):</p>") + _list(
            r.label for r in s.requires
        )
    body += Markup("<p><strong>Entry criteria:</strong></p>") + _list([_clause(explain(s.criteria, k))])
    for v in s.variants:
        body += Markup("<h2>%s</h2>") % v.title
        if v.when:
            body += Markup("<p>Applies when:</p>") + _list([_clause(explain(v.when, k))])
        body += _ratings_table(s, k, v)
        if v.preferred:
            body += Markup("<p><strong>Preferred:</strong> %s</p>") % ", ".join(
                procs[p].display for p in v.preferred
            )
        body += Markup(
            "<p>Studies not listed here get <em>no criteria apply</em>; no rating is invented.</p>"
        )
    if s.recommended:
        body += Markup("<h2>Recommended by the source (no category; source kind: seed)</h2>") + _list(
            Markup("%s (%s): %s") % (procs[p].display, procs[p].rrl_text, _text(note))
            for p, note in s.recommended.items()
        )
    if s.urgent_procedure:
        body += (
            Markup("<p><strong>Urgent study:</strong> %s, whatever else was ordered.</p>")
            % procs[s.urgent_procedure].display
        )
    if s.pitfalls:
        body += Markup("<h2>Pitfalls checked</h2>") + _list(
            Markup('<a href="/rules/%s">%s</a>') % (p, k.pitfalls[p].title) for p in s.pitfalls
        )
    if s.evidence:
        body += Markup("<h2>Evidence</h2><p>%s</p>") % _text(s.evidence)
    preds = [s.population, s.criteria, *(r.when for r in s.requires), *(v.when for v in s.variants if v.when)]
    return body + _concepts(k, concepts_of(k, *preds), med_classes_of(*preds)) + _case_links(s.id)


def _pitfall_body(p: Pitfall, k: Knowledge) -> Markup:
    procs = k.catalog.procedures
    applies = [procs[i].display for i in sorted(p.applies_procedures)]
    applies += [f"any study with {c} contrast" for c in sorted(p.applies_contrast)]
    kind = PITFALL_KIND_LABELS[p.source_kind] + (f" ({p.guideline})" if p.guideline else "")
    body = Markup("<p>%s</p>") % _text(p.text)
    body += _meta(kind, p.reviewed)
    body += Markup("<p><strong>Applies to:</strong> %s</p><p><strong>Fires when:</strong></p>") % "; ".join(
        applies
    ) + _list([_clause(explain(p.trigger, k))])
    if p.prefer:
        body += Markup("<p><strong>Suggests instead:</strong> %s</p>") % ", ".join(
            procs[i].display for i in p.prefer
        )
    if p.prefer_contrast_not:
        body += (
            Markup("<p><strong>Suggests instead:</strong> the scenario's studies without %s contrast</p>")
            % p.prefer_contrast_not
        )
    used = [Markup('<a href="/rules/%s">%s</a>') % (s.id, s.title) for s in k.scenarios if p.id in s.pitfalls]
    body += Markup("<h2>Used in</h2>") + _list(used) + Markup("<h2>Sources</h2>") + _list(p.sources)
    return body + _concepts(k, concepts_of(k, p.trigger), med_classes_of(p.trigger)) + _case_links(p.id)


def _outcome_body(o: Outcome) -> Markup:
    body = Markup("<p>%s</p>") % o.description
    body += _meta("engine rule (applied by the service itself, not a clinical rating)", "")
    return body + Markup("<h2>Sources</h2>") + _list(o.sources) + _case_links(o.id)


def _index_body(k: Knowledge) -> Markup:
    cases = _cases()[0]

    site = _site()

    def row(rule_id: str, title: str, kind: str, source: Markup | str, reviewed: str) -> Markup:
        c = cases.get(rule_id) or RuleCases()
        html = Markup(
            '<tr data-rule="%s"><td><a href="/rules/%s">%s</a></td><td>%s</td><td>%s</td><td>%s</td>'
            "<td>%d / %d</td>"
        ) % (rule_id, rule_id, title, kind, source, reviewed or "", len(c.fires), len(c.absent))
        if site:
            override = site.rules.get(rule_id)
            html += Markup('<td data-col="site">%s</td>') % (override.sentence if override else "")
        return html + Markup("</tr>")

    rows = [row(s.id, s.title, s.kind, _scenario_kind(s), s.reviewed) for s in k.scenarios]
    rows += [
        row(p.id, p.title, "pitfall", PITFALL_KIND_LABELS[p.source_kind], p.reviewed)
        for p in k.pitfalls.values()
    ]
    rows += [row(o.id, o.title, "engine outcome", "engine rule", "") for o in k.texts.outcomes.values()]
    return (
        Markup(
            "<p>Every card links to the rule that produced it. Red flags are checked first, then scenarios "
            "by priority; pitfalls add warnings to a rated order.</p>"
        )
        + _site_summary(k)
        + Markup(
            "<table><tr><th>Rule</th><th>Kind</th>"
            "<th>Source kind</th><th>Reviewed</th><th>e2e cases (fires / must not fire)</th>"
        )
        + (Markup("<th>At this site</th>") if site else Markup(""))
        + Markup("</tr>")
        + Markup("").join(rows)
        + Markup("</table>")
    )


def _site_summary(k: Knowledge) -> Markup:
    """The site's changes beyond single rules: studies not offered, contact, local names."""
    site = _site()
    if site is None:
        return Markup("")
    procs = k.catalog.procedures
    name = site.site or site.file
    items = [Markup("Site configuration <code>%s</code>, version %s") % (name, site.version)]
    if site.unavailable:
        names = ", ".join(procs[p].display for p in sorted(site.unavailable))
        items.append(Markup("Not offered here: %s") % names)
    if site.contact:
        label, url = site.contact
        items.append(Markup('Local contact on every card: <a href="%s">%s</a>') % (url, label))
    for pid, name in site.display_names.items():
        items.append(Markup("%s is called %s here") % (procs[pid].display, name))
    for sid, o in site.services.items():
        parts = ([f"quiet {'on' if o.quiet else 'off'}"] if o.quiet is not None else []) + (
            [f"snooze {o.snooze_hours:g} h"] if o.snooze_hours is not None else []
        )
        items.append(Markup("Service %s: %s") % (sid, ", ".join(parts)))
    return Markup(
        '<div class="local" id="site-summary"><h2>Local changes at this site</h2>%s</div>'
    ) % _list(items)


def _cited(text: str, k: Knowledge) -> str:
    """A case names source articles by file id; a page shows their citation."""
    return SEED_FILE.sub(lambda m: k.texts.source_articles.get(m.group(1), "a source article"), text)


def _case_body(case: dict[str, Any], k: Knowledge) -> Markup:
    exp = case.get("expected") or {}
    body = Markup("<p>%s</p>") % _cited(str(case.get("description") or ""), k)
    body += Markup("<p><strong>Patient chart:</strong> <code>%s</code>; <strong>orders:</strong> %s; "
                   "<strong>hooks:</strong> %s</p>") % (
        str(case.get("patient") or ""),
        ", ".join(str(o) for o in case.get("orders") or []),
        ", ".join(str(h) for h in case.get("hooks") or []),
    )
    rules = exp.get("scenario")
    rules = rules if isinstance(rules, list) else [rules]
    body += Markup("<p><strong>Expected rule:</strong> %s</p>") % Markup(" or ").join(
        Markup('<a href="/rules/%s">%s</a>') % (r, r) for r in rules if isinstance(r, str)
    )
    rows = Markup("").join(
        Markup("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>")
        % (
            name,
            str(o.get("procedure") or ""),
            " or ".join(o["pama"]) if isinstance(o.get("pama"), list) else str(o.get("pama") or ""),
            ", ".join(o.get("pitfalls") or []),
        )
        for name, o in (exp.get("orders") or {}).items()
        if isinstance(o, dict)
    )
    body += Markup(
        "<table><tr><th>Order</th><th>Study</th><th>Expected rating</th><th>Expected pitfalls</th></tr>%s"
        "</table>"
    ) % rows
    sources = [_cited(str(s), k) for s in case.get("sources") or []]
    return body + (Markup("<h2>Sources</h2>") + _list(sources) if sources else Markup(""))


@blueprint.get("/rules")
def rule_index() -> Response:
    k = _knowledge()
    return _page("Rules of the imaging appropriateness service", _index_body(k), k.version)


@blueprint.get("/rules/cases/<name>")
def case_page(name: str) -> Response:
    case = _cases()[1].get(name)  # looked up among the loaded cases only: no path is built from input
    if case is None:
        abort(404)
    k = _knowledge()
    return _page(f"End-to-end case {name}", _case_body(case, k), k.version)


@blueprint.get("/rules/<rule_id>")
def rule_page(rule_id: str) -> Response:
    k = _knowledge()
    scenario = k.scenario(rule_id)
    if scenario:
        return _page(scenario.title, _local_change(rule_id) + _scenario_body(scenario, k), k.version)
    if rule_id in k.pitfalls:
        pitfall = k.pitfalls[rule_id]
        return _page(pitfall.title, _local_change(rule_id) + _pitfall_body(pitfall, k), k.version)
    if rule_id in k.texts.outcomes:
        outcome = k.texts.outcomes[rule_id]
        return _page(outcome.title, _outcome_body(outcome), k.version)
    abort(404)

"""Ratings -> CDS Hooks 2.0 cards (at most one per study plus one per red flag) and rating systemActions.

Every card: a uuid, a summary under 140 characters that stands alone (the verdict and the better
study), a brief GFM detail of at most 12 lines (the verdict with its source kind, the deciding facts
with dates, cautions, the better study, one line of evidence, what could not be read), coded override
reasons with display, and an absolute link to `/rules/<rule_id>`, whose page holds the alternatives
table, the sources and the full reasoning (cds_service/rule_pages.py). Wording: engine/card_text.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cds_service.engine import card_text as ct
from cds_service.engine.actions import (
    RatingInfo,
    add_tracer_action,
    can_order,
    new_orders,
    rating_action,
    replace_actions,
)
from cds_service.engine.options import EngineOptions
from cds_service.engine.rating import (
    PAMA_BY_CATEGORY,
    SHOWN_ALTERNATIVES,
    Alternative,
    FiredPitfall,
    StudyRating,
)
from cds_service.engine.scenario import INSUFFICIENT_DATA, NO_CRITERIA_APPLY, ScenarioMatch, Selection
from cds_service.knowledge import Knowledge
from cds_service.knowledge.model import Procedure
from cds_service.model import Facts, HookRequest, ImagingOrder, PatientRecord

SUMMARY_MAX = ct.SUMMARY_MAX


@dataclass
class Rendered:
    cards: list[dict[str, Any]] = field(default_factory=list[Any])
    system_actions: list[dict[str, Any]] = field(default_factory=list[Any])
    card_index: dict[str, dict[str, str]] = field(default_factory=dict)
    rule_ids: list[str] = field(default_factory=list)
    missing_facts: list[str] = field(default_factory=list)  # what the cards ask to record (ids)


@dataclass(frozen=True)
class RenderContext:
    request: HookRequest
    record: PatientRecord
    facts: Facts
    knowledge: Knowledge
    options: EngineOptions
    drafted: frozenset[str] = frozenset()  # procedure ids already among the draft orders


def _summary(text: str) -> str:
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1].rstrip(" ,;:") + "…"


def _md(text: str) -> str:
    """Neutralise characters that would turn record text into markup or break a table."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("|", "\\|")
        .replace("*", "\\*")
    )


def _bullets(lines: Iterable[str]) -> str:
    return "\n".join(f"- {_md(line)}" for line in lines)


def _category_label(ctx: RenderContext, category: str | None) -> str:
    if not category:
        return "Recommended by the source, not rated"
    return ctx.knowledge.texts.category_labels[category]


def _shown_facts(evidence: Iterable[str], limit: int) -> list[str]:
    lines = list(dict.fromkeys(evidence))
    return lines if len(lines) <= limit + 1 else lines[:limit]


def _facts(evidence: Iterable[str], limit: int = ct.MAX_FACTS) -> str:
    """The deciding facts with their dates, at most `limit` (the rest are counted, not listed)."""
    lines = list(dict.fromkeys(evidence))
    if not lines:
        return ""
    shown = _shown_facts(lines, limit)
    more = len(lines) - len(shown)
    extra = f"\n- and {more} more facts (the rule page explains which facts count)" if more else ""
    return "**Facts**\n\n" + _bullets(shown) + extra


def _confidence(ctx: RenderContext) -> str:
    """One line: what could not be read or used, each item once."""
    issues = list(ctx.facts.data_issues)
    issues += [f"could not retrieve {key}" for key in ctx.record.incomplete]
    issues = list(dict.fromkeys(issues))
    if not issues:
        return ""
    return "**Confidence lowered**, check the record: " + _md("; ".join(issues)) + "."


def _evidence(text: str | None) -> str:
    line = ct.verified(text or "", limit=1)
    return f"**Evidence**: {_md(line)}" if line else ""


def _fit_detail(build: Callable[[int], str]) -> str:
    """`build(facts_limit)` -> detail; fewer facts until the detail fits the line budget."""
    limit = ct.MAX_FACTS
    detail = build(limit)
    while ct.line_count(detail) > ct.DETAIL_MAX_LINES and limit > 1:
        limit -= 1
        detail = build(limit)
    return detail


def _join(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p)


def _card(
    ctx: RenderContext,
    out: Rendered,
    *,
    rule_id: str,
    title: str,
    scenario_id: str,
    procedure_id: str,
    summary: str,
    detail: str,
    indicator: str,
    suggestions: list[dict[str, Any]] | None = None,
    also_explained: Iterable[tuple[str, str]] = (),
    orders: Iterable[ImagingOrder] = (),
) -> None:
    texts = ctx.knowledge.texts
    base = ctx.request.base_url.rstrip("/")
    url = f"{base}/rules/{rule_id}"
    card_uuid = ctx.options.new_uuid()
    card: dict[str, Any] = {
        "uuid": card_uuid,
        "summary": _summary(summary),
        "detail": detail,
        "indicator": indicator,
        "source": {
            "label": texts.source_label,
            "url": url,
            "topic": {"system": texts.rule_system, "code": rule_id, "display": title},
        },
        "overrideReasons": [
            {"system": texts.override_system, "code": c, "display": d} for c, d in texts.override_reasons
        ],
        "links": [{"label": f"Why this advice: {title}", "url": url, "type": "absolute"}]
        + [  # one page per pitfall or modifier that shaped the card
            {"label": extra_label, "url": f"{base}/rules/{extra_id}", "type": "absolute"}
            for extra_id, extra_label in also_explained
        ],
    }
    contact = ctx.knowledge.local.contact
    if contact:  # the site's own radiology consult (CDS_SITE_CONFIG `contact`)
        card["links"].append({"label": contact[0], "url": contact[1], "type": "absolute"})
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "at-most-one"
    out.cards.append(card)
    out.card_index[card_uuid] = {
        "rule_id": rule_id,
        "scenario_id": scenario_id,
        "knowledge_version": ctx.knowledge.version,
        "procedure_id": procedure_id,
        "indicator": indicator,  # alert burden by indicator (governance view)
        "order_codes": order_codes(orders),  # the protocol layer's snooze key (issue 9.7)
    }


def order_codes(orders: Iterable[ImagingOrder]) -> str:
    """The codes of the orders a card is about, "system|code" (all codings; text when uncoded),
    order-independent: the same order placed again, under a new id, gives the same string."""
    keys = []
    for order in orders:
        code = order.resource.get("code")
        code = code if isinstance(code, Mapping) else {}
        raw = code.get("coding")
        codings = raw if isinstance(raw, list) else []
        parts = sorted({
            f"{c.get('system') or ''}|{c['code']}" for c in codings
            if isinstance(c, Mapping) and isinstance(c.get("code"), str) and c["code"]
        })
        text = code.get("text")
        keys.append(",".join(parts) or (f"text|{text.strip().lower()}" if isinstance(text, str) else ""))
    return " + ".join(sorted(k for k in keys if k))


def _suggestion(
    ctx: RenderContext, label: str, actions: list[dict[str, Any]], recommended: bool
) -> dict[str, Any]:
    return {
        "label": label[:120],
        "uuid": ctx.options.new_uuid(),
        "isRecommended": recommended,
        "actions": actions,
    }


def _replacement_suggestions(
    ctx: RenderContext, rated: StudyRating, alts: Iterable[Alternative]
) -> list[dict[str, Any]]:
    # Never propose a study that is already drafted in this ordering session.
    offer = [a for a in alts if can_order(a.procedure, ctx.knowledge) and a.procedure.id not in ctx.drafted]
    return [
        _suggestion(
            ctx,
            f"Replace with {a.procedure.display} ({_category_label(ctx, a.category).lower()}, "
            f"{a.procedure.rrl_symbol})",
            replace_actions(
                rated.study.to_rate, a.procedure, ctx.knowledge, ctx.options, rating=_alt_rating(rated, a)
            ),
            i == 0,
        )
        for i, a in enumerate(offer)
    ]


def _combined_line(rated: StudyRating) -> str:
    if len(rated.study.orders) <= 1:
        return ""
    return "Rated as one study from " + _md(" + ".join(rated.study.references)) + "."


def _alt_text(ctx: RenderContext, alts: Iterable[Alternative]) -> str:
    return "; ".join(
        f"{_md(a.procedure.display)} ({_category_label(ctx, a.category).lower()}, {a.procedure.rrl_text})"
        for a in alts
    )


def _better_line(ctx: RenderContext, rated: StudyRating) -> str:
    if rated.replacements:
        return "**Consider instead**: " + _alt_text(ctx, rated.replacements[:SHOWN_ALTERNATIVES]) + "."
    if rated.category == "usually-not-appropriate":
        return "**No alternative** study is rated appropriate for this scenario."
    return ""


def _study_summary(ctx: RenderContext, rated: StudyRating) -> str:
    """Verdict and better study in one sentence; shorter study names, then less context, until it fits."""
    proc, scenario = rated.procedure, rated.match.scenario  # type: ignore[union-attr]
    assert proc is not None
    category = rated.category
    label = _category_label(ctx, category).lower() if category else ""
    better = rated.replacements[0].procedure if rated.replacements else None
    names = [(proc.display, better.display if better else "")]
    names.append((ct.short_name(proc), ct.short_name(better) if better else ""))
    if not ctx.knowledge.local.offered(proc.id) and category != "usually-not-appropriate":
        where = ctx.knowledge.local.where
        verdict = f"{label} for {scenario.label}" if category else f"not rated for {scenario.label}"
        return ct.fit(
            *(f"{n} is not offered {where} ({verdict}); consider {b}" for n, b in names if b),
            *(f"{n} is not offered {where}; consider {b}" for n, b in names if b),
            *(f"{n} is {label} but not offered {where}" for n, _ in names if category),
            *(f"{n} is not offered {where}" for n, _ in names),
        )
    if category == "usually-not-appropriate":
        short = names[1][0]
        if not better:  # the verdict and its context; "no other study" only when it fits
            tail = "; no other study is rated appropriate"
            return ct.fit(
                *(f"{n} is usually not appropriate for {scenario.label}{tail}" for n, _ in names),
                f"{short} is usually not appropriate for {scenario.label}",
            )
        return ct.fit(  # the better study is never dropped: the context is, if need be
            *(f"{n} is usually not appropriate for {scenario.label}; consider {b}" for n, b in names),
            f"{short} is usually not appropriate here; consider {names[1][1]}",
        )
    if category and rated.pitfalls:
        first = rated.pitfalls[0].pitfall
        joiner = ", but" if first.indicator == "warning" else ";"
        verb = label if label.startswith("may") else f"is {label}"  # "may be appropriate", not "is may be"
        named = better is not None and ct.short_name(better) in first.short  # "..., PSMA PET/CT does"
        with_better = [f"{n} {verb}{joiner} {first.short}; consider {b}" for n, b in names if b and not named]
        if first.indicator == "warning" and better and not named:  # warning + better study before category
            with_better.append(f"{names[1][0]}: {first.short}; consider {names[1][1]}")
        return ct.fit(*with_better, *(f"{n} {verb}{joiner} {first.short}" for n, _ in names))
    if category:
        return ct.fit(*(f"{n}: {label} for {scenario.label}" for n, _ in names))
    if rated.pitfalls:
        short = rated.pitfalls[0].pitfall.short
        with_better = [f"{n}: {short}; consider {b}" for n, b in names if b]
        return ct.fit(*with_better, *(f"{n}: {short}" for n, _ in names))
    if rated.coverage:  # a part of a rated combination, or a variant the scenario does not rate
        procedures = ctx.knowledge.catalog.procedures.values()
        summary = ct.grammar(rated.coverage.summary)
        shorter = ct.shorten(summary, procedures)
        return ct.fit(summary, shorter, shorter.replace(f" for {scenario.label}", " here", 1))
    return ct.fit(*(f"{n}: not rated; report or problem text suggests {scenario.label}" for n, _ in names))


def _verdict(ctx: RenderContext, rated: StudyRating) -> str:
    scenario = rated.match.scenario  # type: ignore[union-attr]
    if rated.rating:
        return (
            f"**{_category_label(ctx, rated.category)}** for {_md(scenario.label)}: "
            f"{_md(ct.verified(rated.rating.rationale))}\n\n*Source*: {_md(ct.provenance(rated.rating))}"
        )
    if rated.text_note:
        return "**Not rated**: on the coded record alone no scenario rates this study."
    if rated.coverage:
        return _md(ct.grammar(rated.coverage.note).replace("*", ""))  # its emphasis would show escaped
    return f"**Not rated** for {_md(scenario.label)}: no criteria apply to this study."


def _caution(fired: FiredPitfall, facts: Iterable[str] = ()) -> str:
    """One line per fired pitfall: its first two sentences and the record facts that fired it
    (those the Facts list does not already show)."""
    p = fired.pitfall
    shown = set(facts)
    evidence = [e for e in dict.fromkeys(fired.evidence) if e not in shown]
    record = f" (record: {_md('; '.join(evidence))})" if evidence else ""
    return f"**{_md(p.title)}**: {_md(ct.verified(p.text, limit=2))}{record}"


def _not_here(ctx: RenderContext, rated: StudyRating) -> str:
    """" (not offered at <site>)" after an ordered study the site does not offer, in a list of orders."""
    proc = rated.procedure
    local = ctx.knowledge.local
    return f" (not offered {local.where})" if proc is not None and not local.offered(proc.id) else ""


def _not_offered_card(ctx: RenderContext, out: Rendered, rated: StudyRating) -> None:
    """An order no rule rates, for a study the site does not offer: not blocked, but said."""
    proc = rated.procedure
    assert proc is not None
    outcome = ctx.knowledge.texts.outcomes[NO_CRITERIA_APPLY]
    where = ctx.knowledge.local.where
    _card(
        ctx,
        out,
        rule_id=outcome.id,
        title=outcome.title,
        scenario_id=rated.scenario_id,
        procedure_id=proc.id,
        summary=ct.fit(f"{proc.display} is not offered {where}", f"{ct.short_name(proc)} is not offered"),
        detail=_join(
            f"**Not offered {_md(where)}**: {_md(proc.display)}. The order is not blocked; no rule rates it "
            "for this patient, so no other study is suggested.",
            _confidence(ctx),
        ),
        indicator="info",
        orders=rated.study.to_rate,
    )


def _not_offered_line(ctx: RenderContext, rated: StudyRating) -> str:
    """Why the card suggests another study than the source would: the site does not offer it."""
    if not rated.not_offered:
        return ""
    local = ctx.knowledge.local
    names = "; ".join(p.display for p in rated.not_offered)
    ordered = rated.procedure is not None and rated.not_offered[0].id == rated.procedure.id
    if rated.replacements:
        then = "the order is not blocked; " if ordered else ""
        then += "the next study the rule supports is suggested instead"
    elif ordered:
        then = "the order is not blocked; the rule supports no other study that is offered here"
    else:
        then = "the rule supports no other study that is offered here"
    return f"**Not offered {_md(local.where)}**: {_md(names)}; {then}."


def _study_card(ctx: RenderContext, out: Rendered, rated: StudyRating) -> None:
    match, proc = rated.match, rated.procedure
    if match is None or proc is None:
        return
    category = rated.category
    # a text-held-back rating, and an order for a study the site does not offer, are always shown
    quiet = not rated.pitfalls and not rated.text_note and ctx.knowledge.local.offered(proc.id)
    if category == "usually-appropriate" and quiet and ctx.options.quiet_appropriate:
        return
    if category is None and quiet and rated.coverage is None:
        return
    scenario = match.scenario
    # a site may show a scenario's verdict as info (CDS_SITE_CONFIG `rules`); a pitfall's own
    # indicator comes from the site's knowledge view
    unsuited = category == "usually-not-appropriate" and scenario.id not in ctx.knowledge.local.info_only
    warn = unsuited or any(p.pitfall.indicator == "warning" for p in rated.pitfalls)

    def build(limit: int) -> str:
        return _join(
            _verdict(ctx, rated),
            _unknown_line(rated),
            f"**Read from text**: {_md(rated.text_note)}" if rated.text_note else "",
            _combined_line(rated),
            _facts(match.evidence, limit),
            "\n\n".join(_caution(p, _shown_facts(match.evidence, limit)) for p in rated.pitfalls),
            _not_offered_line(ctx, rated),
            _better_line(ctx, rated),
            _evidence(scenario.evidence) if category != "usually-not-appropriate" else "",
            _confidence(ctx),
        )

    detail = _fit_detail(build)
    suggestions = _replacement_suggestions(ctx, rated, rated.replacements) + _coverage_suggestions(ctx, rated)
    if category == "usually-not-appropriate" and not suggestions:
        removal = [
            {
                "type": "delete",
                "description": f"Remove the draft order {o.reference}",
                "resourceId": o.reference,
            }
            for o in rated.study.to_rate
        ]
        suggestions = [_suggestion(ctx, f"Remove the {proc.display} order", removal, True)]
    _card(
        ctx,
        out,
        rule_id=scenario.id,
        title=scenario.title,
        scenario_id=scenario.id,
        procedure_id=proc.id,
        summary=_study_summary(ctx, rated),
        detail=detail,
        indicator="warning" if warn else "info",
        suggestions=suggestions,
        also_explained=[(p.pitfall.id, f"Pitfall: {p.pitfall.title}") for p in rated.pitfalls],
        orders=rated.study.to_rate,
    )
    out.rule_ids += [p.pitfall.id for p in rated.pitfalls]


def _coverage_suggestions(ctx: RenderContext, rated: StudyRating) -> list[dict[str, Any]]:
    """Complete a part into the rated study (add the missing parts), or order the rated study instead."""
    cov = rated.coverage
    if cov is None or cov.related is None or cov.related_rating is None or cov.inherited:
        return []
    whole = Alternative(cov.related, cov.related_rating.category, cov.related_rating.rationale)
    add = [p for p in cov.add if p.id not in _drafted_parts(ctx)]
    label = _category_label(ctx, whole.category).lower()
    if add:
        template = rated.study.to_rate[0].resource
        actions = [
            {"type": "create", "description": f"Order {o['code']['text']}", "resource": o}
            for p in add
            for o in new_orders(p, template, ctx.knowledge, ctx.options, rating=_alt_rating(rated, whole))
        ]
        names = " and ".join(p.display for p in add)
        return [_suggestion(ctx, f"Add {names} ({cov.related.display}: {label})", actions, True)]
    if cov.replace_with is not None:
        return _replacement_suggestions(ctx, rated, [whole])
    return []


def _unknown_line(rated: StudyRating) -> str:
    """Rated although part of the facts is unknown (engine/completions.py): say so, and why it holds."""
    if not rated.unknown_facts:
        return ""
    labels = " and ".join(u.label for u in rated.unknown_facts)
    return f"**Rated with the {_md(labels)} unknown**: no possible value of it would change this rating."


def _outcome_words(ctx: RenderContext, outcome: str) -> str:
    if outcome in ctx.knowledge.texts.category_labels:
        return _category_label(ctx, outcome).lower()
    return {NO_CRITERIA_APPLY: "no criteria apply", "pet-tracer-unspecified": "the PET tracer decides"}.get(
        outcome, "not rated without more data"
    )


def _condition(words: str) -> str:
    return words if words.startswith("depending") else f"if {words}"


def _open_question_card(ctx: RenderContext, out: Rendered, rated: StudyRating) -> None:
    """Not rated: only the unknown facts that could change the rating, and which value would."""
    question = rated.open_question
    assert question is not None
    outcome = ctx.knowledge.texts.outcomes[INSUFFICIENT_DATA]
    scenario = question.scenario
    name = rated.procedure.display if rated.procedure else "This study"
    ask = " and ".join(u.label for u in question.ask)
    groups = [(_outcome_words(ctx, o), _condition(c), exact) for o, c, exact in question.outcomes]
    appropriate = [g for g in groups if "appropriate" in g[0] and "not" not in g[0]]
    candidates = [f"{name}: " + "; ".join(f"{w} {c}" for w, c, _ in groups) + f". Record the {ask}"]
    for w, c, exact in appropriate[:1]:  # what would make the study appropriate
        candidates.append(f"{name}: {w} {'only ' if exact else ''}{c}; record the {ask}")
    verb = "are" if len(question.ask) > 1 else "is"
    candidates.append(f"{name}: not rated until the {ask} {verb} recorded")
    summary = next((c for c in candidates if len(c) <= SUMMARY_MAX), candidates[-1])
    detail = _join(
        f"**Not rated**: for *{_md(scenario.title)}* the rating depends on the {_md(ask)}, "
        "which the record does not give.",
        f"**Known**: {_md(', '.join(question.known))}" if question.known else "",
        "**What would decide it**\n\n" + _bullets(f"{w[:1].upper()}{w[1:]} {c}" for w, c, _ in groups),
        _combined_line(rated),
        _confidence(ctx),
    )
    _card(
        ctx,
        out,
        rule_id=outcome.id,
        title=outcome.title,
        scenario_id=INSUFFICIENT_DATA,
        procedure_id=rated.procedure.id if rated.procedure else "",
        summary=summary,
        detail=detail,
        indicator="info",
        also_explained=[(scenario.id, f"Scenario: {scenario.title}")],
    )
    # machine-readable: which facts to record (CDS Hooks 2.0 card `extension`)
    out.cards[-1]["extension"] = {"missingFacts": [u.id for u in question.ask]}
    out.missing_facts += [u.id for u in question.ask]


def _tracer_card(ctx: RenderContext, out: Rendered, rated: StudyRating) -> None:
    order = rated.study.to_rate[0]
    local = ctx.knowledge.local
    options = [
        a
        for a in rated.tracer_options
        if can_order(a.procedure, ctx.knowledge) and local.offered(a.procedure.id)
    ]
    suggestions = [
        _suggestion(
            ctx,
            f"{a.procedure.display} ({_category_label(ctx, a.category).lower()})",
            [add_tracer_action(order, a.procedure, ctx.knowledge, ctx.options, _alt_rating(rated, a))],
            False,
        )
        for a in options
    ]
    outcome = ctx.knowledge.texts.outcomes["pet-tracer-unspecified"]
    scenario = rated.match.scenario if rated.match else None
    # Only the tracers the scenario rates or recommends, i.e. those used for this cancer
    # (PSMA agents / fluciclovine in prostate cancer, FDG in breast cancer), are named.
    offered = [a.procedure for a in rated.tracer_options if local.offered(a.procedure.id)]
    tracers = ct.or_list(ct.tracer_name(p) for p in offered)
    absent = [a.procedure.display for a in rated.tracer_options if not local.offered(a.procedure.id)]
    for_whom = f" for {_md(scenario.label)}" if scenario else ""
    detail = _join(
        f"This PET/CT cannot be rated: {_md(rated.study.unresolved_reason or 'tracer not coded')}. "
        "The tracer decides the rating, so the service does not assume one.",
        f"**Tracers rated{for_whom}**: {_alt_text(ctx, rated.tracer_options)}."
        if rated.tracer_options
        else "",
        f"**Not offered {_md(local.where)}**: {_md('; '.join(absent))}." if absent else "",
        _confidence(ctx),
    )
    summary = (
        f"PET/CT tracer not specified: choose {tracers} PET/CT to get a rating"
        if tracers
        else "PET/CT tracer not specified: code the tracer to get a rating"
    )
    _card(
        ctx,
        out,
        rule_id=outcome.id,
        title=outcome.title,
        scenario_id=rated.scenario_id,
        procedure_id=rated.procedure.id if rated.procedure else "",
        summary=ct.fit(summary),
        detail=detail,
        indicator="warning",
        suggestions=suggestions,
        also_explained=[(scenario.id, f"Scenario: {scenario.title}")] if scenario else (),
        orders=rated.study.to_rate,
    )
    out.rule_ids.append(outcome.id)


def _drafted_parts(ctx: RenderContext) -> frozenset[str]:
    """Procedure ids on the draft, the components of drafted combined studies included."""
    procs = ctx.knowledge.catalog.procedures
    parts = set(ctx.drafted)
    for pid in ctx.drafted:
        proc = procs.get(pid)
        parts.update(proc.components if proc else ())
    return frozenset(parts)


def _red_flag_card(
    ctx: RenderContext, out: Rendered, flag: ScenarioMatch, ratings: list[StudyRating]
) -> None:
    scenario = flag.scenario
    procs = ctx.knowledge.catalog.procedures
    assert scenario.urgent_procedure is not None  # the rule-file schema requires it on red flags
    urgent: Procedure = procs[scenario.urgent_procedure]
    parts = [procs[c] for c in urgent.components] or [urgent]
    part_ids = {p.id for p in parts}
    # Never suggest what is already on the draft (every draft order, not only the rated ones):
    # MRI brain drafted -> no second MRI brain; MRI lumbar drafted -> complete the whole spine.
    drafted = _drafted_parts(ctx)
    missing = [p for p in parts if p.id not in drafted]
    already = urgent.id in drafted or not missing
    partial = not already and len(missing) < len(parts)
    ordered = [r for r in ratings if r.procedure is None or r.procedure.id not in part_ids | {urgent.id}]
    to_replace = tuple(o for r in ordered for o in r.study.to_rate)
    template = next((o.resource for r in ratings for o in r.study.to_rate), None)
    suggestions = []
    if partial and template is not None:
        names = " and ".join(p.display for p in missing)
        suggestions = [
            _suggestion(
                ctx,
                f"Complete the {urgent.display}: add urgent {names}",
                _add_only(ctx, urgent, template, _urgent_rating(flag), skip=frozenset(drafted)),
                True,
            )
        ]
    elif not already and to_replace:
        suggestions = [
            _suggestion(
                ctx,
                f"Replace with urgent {urgent.display}",
                replace_actions(
                    to_replace, urgent, ctx.knowledge, ctx.options, urgent=True, rating=_urgent_rating(flag)
                ),
                True,
            ),
            _suggestion(
                ctx,
                f"Add urgent {urgent.display} and keep the current order",
                _add_only(ctx, urgent, to_replace[0].resource, _urgent_rating(flag)),
                False,
            ),
        ]
    if already:
        action = f"perform the ordered {urgent.display} urgently"
    elif partial:
        action = f"complete the {urgent.display} urgently"
    else:
        action = f"order urgent {urgent.display}"
    summary = ct.fit(f"URGENT: {scenario.label}: {action}")
    rated_lines = [
        f"{r.procedure.display if r.procedure else 'Unrecognised study'}: "
        f"{_category_label(ctx, r.category).lower() if r.category else 'no criteria apply'}"
        + _not_here(ctx, r)
        for r in ratings
    ]
    on_draft = [p.display for p in parts if p.id in drafted]
    recommended = f"**Red flag: {_md(scenario.title)}.** "
    if already:
        recommended += f"Perform the ordered {_md(urgent.display)} ({urgent.rrl_text}) urgently."
    elif partial:
        recommended += (
            f"Complete the {_md(urgent.display)} urgently. Already on the draft: {_md(', '.join(on_draft))}; "
            f"add {_md(' and '.join(p.display for p in missing))}."
        )
    else:
        recommended += f"Order {_md(urgent.display)} ({urgent.rrl_text}) urgently, whatever else was ordered."
    local = ctx.knowledge.local
    if not already and not all(local.offered(p.id) for p in [urgent, *missing]):
        # a red flag is never switched off: without the study here, the card says to get it elsewhere
        suggestions = []
        recommended += f" It is not offered {_md(local.where)}: arrange it urgently elsewhere."
    urgent_rating = flag.variant.ratings.get(urgent.id)

    def build(limit: int) -> str:
        return _join(
            recommended,
            _facts(flag.evidence, limit),
            "**Orders under this red flag**: " + _md("; ".join(rated_lines)) + "." if rated_lines else "",
            _evidence(scenario.evidence),
            f"*Source*: {_md(ct.provenance(urgent_rating))}" if urgent_rating else "",
            _confidence(ctx),
        )

    detail = _fit_detail(build)
    _card(
        ctx,
        out,
        rule_id=scenario.id,
        title=scenario.title,
        scenario_id=scenario.id,
        procedure_id=urgent.id,
        summary=summary,
        detail=detail,
        indicator="critical",
        suggestions=suggestions,
    )


def _alt_rating(rated: StudyRating, alt: Alternative) -> RatingInfo:
    """The rating a proposed alternative carries: what the same scenario says about it."""
    scenario_id = rated.match.scenario.id if rated.match else rated.scenario_id
    pama = PAMA_BY_CATEGORY.get(alt.category or "", "no-criteria-apply")
    rating = rated.match.variant.ratings.get(alt.procedure.id) if rated.match else None
    kind = rating.source_kind if rating else None
    return RatingInfo(pama, alt.category, scenario_id, scenario_id, alt.procedure.id, kind)


def _urgent_rating(flag: ScenarioMatch) -> RatingInfo:
    procedure_id = flag.scenario.urgent_procedure
    assert procedure_id is not None  # the rule-file schema requires it on red flags
    rating = flag.variant.ratings.get(procedure_id)
    category = rating.category if rating else None
    pama = PAMA_BY_CATEGORY.get(category or "", "no-criteria-apply")
    kind = rating.source_kind if rating else None
    return RatingInfo(pama, category, flag.scenario.id, flag.scenario.id, procedure_id, kind)


def _add_only(
    ctx: RenderContext,
    procedure: Procedure,
    template: Mapping[str, Any],
    rating: RatingInfo,
    skip: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    orders = new_orders(
        procedure, template, ctx.knowledge, ctx.options, urgent=True, rating=rating, skip=skip
    )
    return [
        {"type": "create", "description": f"Order urgent {o['code']['text']}", "resource": o} for o in orders
    ]


def _missing_facts(label: str) -> str:
    """ "grade group, PSA and T category (...): missing PSA, T category" -> "PSA, T category"."""
    return label.split(": missing ", 1)[1] if ": missing " in label else label


def _insufficient_card(
    ctx: RenderContext, out: Rendered, selection: Selection, ratings: list[StudyRating]
) -> None:
    outcome = ctx.knowledge.texts.outcomes[INSUFFICIENT_DATA]
    first = selection.missing[0]
    lines = [
        f"For {_md(m.scenario.label)}: record " + "; ".join(_md(_missing_facts(x)) for x in m.missing)
        for m in selection.missing
    ]
    ordered = [r.procedure.display + _not_here(ctx, r) for r in ratings if r.procedure]
    detail = _join(
        "No rating rather than a guess: facts that decide the scenario or its variant are missing. "
        "Record them and re-select the order.",
        "**Missing facts**\n\n" + "\n".join(f"- {line}" for line in dict.fromkeys(lines)),
        "**Orders not rated**: " + _md(", ".join(ordered)) if ordered else "",
        _confidence(ctx),
    )
    _card(
        ctx,
        out,
        rule_id=outcome.id,
        title=outcome.title,
        scenario_id=INSUFFICIENT_DATA,
        procedure_id=ratings[0].procedure.id if ratings and ratings[0].procedure else "",
        summary=ct.fit(f"No rating: record is missing {_missing_facts(first.missing[0])}"),
        detail=detail,
        indicator="info",
        orders=[o for r in ratings for o in r.study.to_rate],
    )
    # the requirements (cards/scenarios `requires` ids) that failed; none when the data could not
    # be retrieved at all (that is unreadable data, not a missing fact)
    out.missing_facts += [req.id for m in selection.missing for req in m.requirements]


UNREADABLE_DATA = "unreadable-data"


def _rated_somewhere(ctx: RenderContext, rated: StudyRating) -> bool:
    proc = rated.procedure
    return proc is not None and any(
        proc.id in variant.ratings for scenario in ctx.knowledge.scenarios for variant in scenario.variants
    )


def _data_notice_card(ctx: RenderContext, out: Rendered, ratings: list[StudyRating]) -> None:
    """The one card of a call that would otherwise be silent (quietly appropriate, no criteria
    apply) while some of the chart could not be read or used: a rating that looks fine may rest on
    a PSA with an unknown unit or on data that never arrived, and only a card can say so."""
    outcome = ctx.knowledge.texts.outcomes[UNREADABLE_DATA]
    count = len(ctx.facts.data_issues) + len(ctx.record.incomplete)
    rated_lines = [
        f"{r.procedure.display if r.procedure else 'Unrecognised study'}: "
        + (
            f"{_category_label(ctx, r.category).lower()} for {r.match.scenario.label}"
            if r.category and r.match
            else "no criteria apply with the data that could be read"
        )
        for r in ratings
    ]
    first = ratings[0]
    detail = _join(
        "Part of the chart could not be read or used, so this advice may be incomplete; nothing was guessed.",
        "**Orders**: " + _md("; ".join(rated_lines)) + "." if rated_lines else "",
        _confidence(ctx),
    )
    _card(
        ctx,
        out,
        rule_id=outcome.id,
        title=outcome.title,
        scenario_id=first.scenario_id,
        procedure_id=first.procedure.id if first.procedure else "",
        summary=f"Check the chart: {count} item{'s' if count != 1 else ''} could not be read or used, "
        "so this imaging advice may be incomplete",
        detail=detail,
        indicator="info",
        orders=[o for r in ratings for o in r.study.to_rate],
    )
    out.rule_ids.append(outcome.id)


def render(ctx: RenderContext, selection: Selection, ratings: list[StudyRating]) -> Rendered:
    out = Rendered()
    for flag in selection.red_flags:
        _red_flag_card(ctx, out, flag, ratings)
        out.rule_ids.append(flag.scenario.id)
    if not selection.red_flags:
        undetermined = [
            r for r in ratings if r.scenario_id == INSUFFICIENT_DATA and r.open_question is None
        ]
        if undetermined:
            _insufficient_card(ctx, out, selection, undetermined)
            out.rule_ids.append(INSUFFICIENT_DATA)
        for rated in ratings:
            if rated.open_question is not None:
                _open_question_card(ctx, out, rated)
            elif rated.rule_id == "pet-tracer-unspecified":
                _tracer_card(ctx, out, rated)
            elif rated.match is None and rated.scenario_id == NO_CRITERIA_APPLY and _not_here(ctx, rated):
                _not_offered_card(ctx, out, rated)
            else:
                _study_card(ctx, out, rated)
    in_scope = [r for r in ratings if _rated_somewhere(ctx, r)]
    if not out.cards and in_scope and (ctx.facts.data_issues or ctx.record.incomplete):
        # Quiet mode and no-criteria-apply stay silent only when the chart was read in full. A study
        # no scenario rates (a knee MRI) gets no card: no chart data could change its rating.
        _data_notice_card(ctx, out, in_scope)
    for rated in ratings:
        if rated.pama is not None:
            out.system_actions += [
                rating_action(o, rated, ctx.knowledge, ctx.options) for o in rated.study.to_rate
            ]
    out.rule_ids = list(dict.fromkeys(out.rule_ids + [r.rule_id for r in ratings]))
    return out

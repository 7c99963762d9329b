"""Ratings -> CDS Hooks 2.0 cards (at most one per study plus one per red flag) and rating systemActions.

Every card: a uuid, a plain-verdict summary under 140 characters, GFM detail with the facts that drove
it (dates and values), alternatives with category and radiation level, pitfalls and sources, coded
override reasons with display, and an absolute link to `/rules/<rule_id>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cds_service.engine.actions import (
    RatingInfo,
    add_tracer_action,
    can_order,
    new_orders,
    rating_action,
    replace_actions,
)
from cds_service.engine.options import EngineOptions
from cds_service.engine.rating import PAMA_BY_CATEGORY, Alternative, StudyRating
from cds_service.engine.scenario import INSUFFICIENT_DATA, NO_CRITERIA_APPLY, ScenarioMatch, Selection
from cds_service.knowledge import Knowledge
from cds_service.knowledge.model import Procedure, Scenario
from cds_service.model import Facts, HookRequest, ImagingOrder, PatientRecord

SUMMARY_MAX = 139


@dataclass
class Rendered:
    cards: list[dict] = field(default_factory=list)
    system_actions: list[dict] = field(default_factory=list)
    card_index: dict[str, dict[str, str]] = field(default_factory=dict)
    rule_ids: list[str] = field(default_factory=list)


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
    return ctx.knowledge.texts.category_labels[category] if category else "Not rated (source recommendation)"


def _alt_table(ctx: RenderContext, alts: Iterable[Alternative]) -> str:
    rows = [
        f"| {_md(a.procedure.display)} | {_category_label(ctx, a.category)} | {a.procedure.rrl_text} |"
        for a in alts
    ]
    if not rows:
        return ""
    return "**Alternatives**\n\n| Study | Rating | Radiation (adult RRL) |\n|---|---|---|\n" + "\n".join(rows)


def _sources(ctx: RenderContext, scenario: Scenario | None, extra: Iterable[str]) -> str:
    lines = []
    if scenario:
        lines.append(scenario.acr_citation)
        lines += [ctx.knowledge.texts.cite(seed) for seed in scenario.seeds]
    lines += list(extra)
    return "**Sources**\n\n" + _bullets(dict.fromkeys(lines))


def _confidence(ctx: RenderContext) -> str:
    issues = list(ctx.facts.data_issues)
    issues += [f"could not retrieve {key}" for key in ctx.record.incomplete]
    if not issues:
        return ""
    return (
        "**Confidence lowered**: the record is incomplete or contradictory; check before relying on this.\n\n"
        + _bullets(issues)
    )


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
    suggestions: list[dict] | None = None,
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
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "at-most-one"
    out.cards.append(card)
    out.card_index[card_uuid] = {
        "rule_id": rule_id,
        "scenario_id": scenario_id,
        "knowledge_version": ctx.knowledge.version,
        "procedure_id": procedure_id,
        "order_codes": order_codes(orders),  # the protocol layer's snooze key (issue 9.7)
    }


def order_codes(orders: Iterable[ImagingOrder]) -> str:
    """The codes of the orders a card is about, "system|code" (all codings; text when uncoded),
    order-independent: the same order placed again, under a new id, gives the same string."""
    keys = []
    for order in orders:
        code = order.resource.get("code")
        code = code if isinstance(code, Mapping) else {}
        codings = code.get("coding") if isinstance(code.get("coding"), list) else []
        parts = sorted({
            f"{c.get('system') or ''}|{c['code']}" for c in codings
            if isinstance(c, Mapping) and isinstance(c.get("code"), str) and c["code"]
        })
        text = code.get("text")
        keys.append(",".join(parts) or (f"text|{text.strip().lower()}" if isinstance(text, str) else ""))
    return " + ".join(sorted(k for k in keys if k))


def _suggestion(ctx: RenderContext, label: str, actions: list[dict], recommended: bool) -> dict:
    return {
        "label": label[:120],
        "uuid": ctx.options.new_uuid(),
        "isRecommended": recommended,
        "actions": actions,
    }


def _replacement_suggestions(
    ctx: RenderContext, rated: StudyRating, alts: Iterable[Alternative]
) -> list[dict]:
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


def _ordered_line(rated: StudyRating) -> str:
    proc = rated.procedure
    name = f"{proc.display} (radiation {proc.rrl_text})" if proc else "Imaging study not in the catalog"
    if len(rated.study.orders) > 1:
        name += "; rated as one study from " + " + ".join(rated.study.references)
    return f"**Ordered**: {_md(name)}"


def _study_card(ctx: RenderContext, out: Rendered, rated: StudyRating) -> None:
    match, proc = rated.match, rated.procedure
    if match is None or proc is None:
        return
    category = rated.category
    quiet = not rated.pitfalls and not rated.text_note  # a text-held-back rating is always shown
    if category == "usually-appropriate" and quiet and ctx.options.quiet_appropriate:
        return
    if category is None and quiet and rated.coverage is None:
        return
    scenario = match.scenario
    if category == "usually-not-appropriate":
        better = f"; consider {rated.replacements[0].procedure.display}" if rated.replacements else ""
        summary = f"{proc.display} is usually not appropriate for {scenario.label}{better}"
    elif category and rated.pitfalls:
        label = _category_label(ctx, category).lower()
        joiner = ", but" if rated.pitfalls[0].pitfall.indicator == "warning" else ";"
        verb = label if label.startswith("may") else f"is {label}"  # "may be appropriate", not "is may be"
        summary = f"{proc.display} {verb}{joiner} {rated.pitfalls[0].pitfall.short}"
    elif category:
        summary = f"{proc.display}: {_category_label(ctx, category).lower()} for {scenario.label}"
    elif rated.pitfalls:
        summary = f"{proc.display}: {rated.pitfalls[0].pitfall.short}"
    elif rated.coverage:
        summary = rated.coverage.summary
    else:
        summary = f"{proc.display}: not rated; report or problem text suggests {scenario.label}"
    warn = category == "usually-not-appropriate" or any(
        p.pitfall.indicator == "warning" for p in rated.pitfalls
    )
    verdict = (
        f"**{_category_label(ctx, category)}** for *{_md(scenario.title)}* "
        f"({_md(match.variant.title)}): {_md(rated.rating.rationale)}"
        if rated.rating
        else "**Not rated**: on the coded record alone no scenario rates this study."
        if rated.text_note
        else _md(rated.coverage.note)
        if rated.coverage
        else f"Not rated for *{_md(scenario.title)}*: no criteria apply to this study."
    )
    pitfalls = "\n".join(
        f"- **{_md(p.pitfall.title)}**: {_md(p.pitfall.text)}"
        + (f" *(Record: {_md('; '.join(p.evidence))})*" if p.evidence else "")
        for p in rated.pitfalls
    )
    detail = _join(
        verdict,
        _unknown_line(rated),
        f"**Read from text**: {_md(rated.text_note)}" if rated.text_note else "",
        _ordered_line(rated),
        "**Facts that placed the patient in this scenario**\n\n" + _bullets(match.evidence)
        if match.evidence
        else "",
        "**Caution**\n\n" + pitfalls if pitfalls else "",
        _alt_table(ctx, rated.alternatives),
        f"**Evidence**: {_md(scenario.evidence)}" if scenario.evidence else "",
        _confidence(ctx),
        _sources(
            ctx,
            scenario,
            ([rated.rating.source] if rated.rating else [])
            + [s for p in rated.pitfalls for s in p.pitfall.sources],
        ),
    )
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
        summary=summary,
        detail=detail,
        indicator="warning" if warn else "info",
        suggestions=suggestions,
        also_explained=[(p.pitfall.id, f"Pitfall: {p.pitfall.title}") for p in rated.pitfalls],
        orders=rated.study.to_rate,
    )
    out.rule_ids += [p.pitfall.id for p in rated.pitfalls]


def _coverage_suggestions(ctx: RenderContext, rated: StudyRating) -> list[dict]:
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
        _ordered_line(rated),
        _confidence(ctx),
        _sources(ctx, scenario, outcome.sources),
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


def _tracer_card(ctx: RenderContext, out: Rendered, rated: StudyRating) -> None:
    order = rated.study.to_rate[0]
    options = [a for a in rated.tracer_options if can_order(a.procedure, ctx.knowledge)]
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
    rows = _alt_table(ctx, rated.tracer_options).replace("**Alternatives**", "**Tracer-specific studies**")
    detail = _join(
        f"This PET/CT cannot be rated: {_md(rated.study.unresolved_reason or 'tracer not coded')}. "
        "The tracer decides the rating, so the service does not assume one.",
        f"Scenario: *{_md(scenario.title)}*." if scenario else "",
        rows,
        _confidence(ctx),
        _sources(ctx, scenario, outcome.sources),
    )
    _card(
        ctx,
        out,
        rule_id=outcome.id,
        title=outcome.title,
        scenario_id=rated.scenario_id,
        procedure_id=rated.procedure.id if rated.procedure else "",
        summary="PET/CT tracer not specified: choose the tracer (PSMA, FDG or fluciclovine) to get a rating",
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
    summary = f"URGENT: {scenario.label}: {action}"
    rated_lines = [
        f"{r.procedure.display if r.procedure else 'Unrecognised study'}: "
        f"{_category_label(ctx, r.category).lower() if r.category else 'no criteria apply'}"
        for r in ratings
    ]
    on_draft = [p.display for p in parts if p.id in drafted]
    recommended = f"**Recommended**: {_md(urgent.display)} ({urgent.rrl_text}), urgently."
    if partial:
        recommended += (
            f" Already on the draft: {_md(', '.join(on_draft))}; "
            f"add {_md(' and '.join(p.display for p in missing))}."
        )
    detail = _join(
        f"**Red flag: {_md(scenario.title)}.** {_md(scenario.description)}",
        "**Facts**\n\n" + _bullets(flag.evidence),
        recommended,
        "**Orders under this red flag**\n\n" + _bullets(rated_lines) if rated_lines else "",
        f"**Evidence**: {_md(scenario.evidence)}" if scenario.evidence else "",
        _confidence(ctx),
        _sources(ctx, scenario, [r.source for r in flag.variant.ratings.values()]),
    )
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
) -> list[dict]:
    orders = new_orders(
        procedure, template, ctx.knowledge, ctx.options, urgent=True, rating=rating, skip=skip
    )
    return [
        {"type": "create", "description": f"Order urgent {o['code']['text']}", "resource": o} for o in orders
    ]


def _insufficient_card(
    ctx: RenderContext, out: Rendered, selection: Selection, ratings: list[StudyRating]
) -> None:
    outcome = ctx.knowledge.texts.outcomes[INSUFFICIENT_DATA]
    first = selection.missing[0]
    lines = [
        f"For *{_md(m.scenario.title)}*: record " + "; ".join(_md(x) for x in m.missing)
        for m in selection.missing
    ]
    ordered = [r.procedure.display for r in ratings if r.procedure]
    detail = _join(
        _md(outcome.description),
        "**Missing facts**\n\n" + "\n".join(f"- {line}" for line in lines),
        "**Orders not rated**: " + _md(", ".join(ordered)) if ordered else "",
        _confidence(ctx),
        _sources(ctx, None, outcome.sources + tuple(f"{m.scenario.acr_citation}" for m in selection.missing)),
    )
    _card(
        ctx,
        out,
        rule_id=outcome.id,
        title=outcome.title,
        scenario_id=INSUFFICIENT_DATA,
        procedure_id=ratings[0].procedure.id if ratings and ratings[0].procedure else "",
        summary=f"No rating: record is missing {first.missing[0]}",
        detail=detail,
        indicator="info",
        orders=[o for r in ratings for o in r.study.to_rate],
    )


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
        _md(outcome.description),
        "**Orders**\n\n" + _bullets(rated_lines) if rated_lines else "",
        _confidence(ctx),
        _sources(ctx, None, outcome.sources),
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

"""The seam between the protocol layer and the clinical logic.

`evaluate` is the only function the protocol layer calls. It is pure: same request, record,
knowledge and options in, same result out (uuids come from `options.new_uuid`). The pipeline:
orders -> facts -> scenario -> rating -> (partial facts: completions) -> cards.
"""

from __future__ import annotations

from cds_service.engine.cards import RenderContext, render
from cds_service.engine.completions import complete_ratings
from cds_service.engine.options import EngineOptions
from cds_service.engine.orders import Study, codings, studies_to_rate
from cds_service.engine.rating import rate_study
from cds_service.engine.scenario import select_scenario
from cds_service.engine.text_guard import guard_text_downgrades
from cds_service.facts import extract_facts
from cds_service.knowledge import Knowledge, load_knowledge
from cds_service.model import EngineResult, Facts, HookRequest, PatientRecord

__all__ = ["EngineOptions", "evaluate", "evaluate_facts"]

_default_knowledge: Knowledge | None = None


def evaluate(
    request: HookRequest,
    record: PatientRecord,
    knowledge: Knowledge | None = None,
    options: EngineOptions | None = None,
) -> EngineResult:
    """Rate the imaging orders of `request` for the patient in `record`.

    order-select rates the selected imaging orders, order-sign every draft imaging order; other
    orders are ignored, and a call without imaging orders returns no guidance.
    """
    knowledge = knowledge or _builtin_knowledge()
    studies = studies_to_rate(request.hook, request.draft_orders, request.selections, knowledge.catalog)
    if not studies:
        return EngineResult()
    facts = extract_facts(record, knowledge.valuesets, orders=request.draft_orders)
    return evaluate_facts(request, record, facts, knowledge, options)


def evaluate_facts(
    request: HookRequest,
    record: PatientRecord,
    facts: Facts,
    knowledge: Knowledge,
    options: EngineOptions | None = None,
) -> EngineResult:
    """The pipeline after the facts stage (tests and replays call it with hand-built Facts)."""
    options = options or EngineOptions()
    studies = studies_to_rate(request.hook, request.draft_orders, request.selections, knowledge.catalog)
    if not studies:
        return EngineResult()
    selection = select_scenario(facts, knowledge, tuple(record.incomplete))
    ratings = [rate_study(study, selection, facts, knowledge) for study in studies]
    ratings = guard_text_downgrades(ratings, facts, knowledge, tuple(record.incomplete))
    ratings = complete_ratings(ratings, selection, facts, knowledge, tuple(record.incomplete))
    drafted = frozenset(
        s.procedure_id for s in studies_to_rate("order-sign", request.draft_orders, (), knowledge.catalog)
        if s.procedure_id is not None
    )
    ctx = RenderContext(request, record, facts, knowledge, options, drafted)
    out = render(ctx, selection, ratings)
    return EngineResult(
        cards=tuple(out.cards),
        system_actions=tuple(out.system_actions),
        rule_ids=tuple(out.rule_ids),
        card_index=out.card_index,
        orders=sum(len(s.to_rate) for s in studies),
        missing_facts=tuple(dict.fromkeys(out.missing_facts)),
        unreadable=tuple(dict.fromkeys(
            facts.unreadable + tuple(f"not-retrieved:{key}" for key in record.incomplete)
        )),
        unknown_codes=_unknown_codes(studies),
    )


def _unknown_codes(studies: list[Study]) -> tuple[str, ...]:
    """ "system|code" of the imaging orders not in the procedure catalog (codes only: the order's
    text and ids stay out)."""
    return tuple(dict.fromkeys(
        f"{system}|{code}"
        for study in studies if study.procedure_id is None
        for order in study.to_rate
        for system, code in codings(order.resource.get("code"))
    ))


def _builtin_knowledge() -> Knowledge:
    # The app passes its loaded knowledge; this fallback serves scripts and the REPL.
    global _default_knowledge
    if _default_knowledge is None:
        _default_knowledge = load_knowledge()
    return _default_knowledge

"""(Study, selected scenario, facts) -> rating, fired pitfalls and the alternatives to offer.

Semantics: a study rated in the scenario's variant gets that ACR category (usually/may-be
appropriate -> PAMA `appropriate`, usually-not-appropriate -> `not-appropriate`); a study the scenario
does not rate gets `no-criteria-apply` and never an invented category. A PET/CT whose tracer is not
coded gets no rating when the tracer would change the answer. Red flags outrank the scenario: under
a red flag, orders are rated by the red-flag rule only. With insufficient data nothing is rated.

A study the variant does not rate is still answered, never silently (engine/coverage.py): a part of
a rated combination (CT chest alone, of CT C/A/P) gets a card naming the rated study, its category
and what the part misses, and stays `no-criteria-apply`; another contrast protocol of a rated study,
or an order wider than a rated one, likewise. The one case where a part takes the combination's
category: the combination is rated usually not appropriate and its rule states, in
`applies_to_parts`, that the source's reason holds for each part alone (e.g. "no IV contrast", or
no distant-disease imaging indicated); "usually appropriate" never carries over to a part, since a
part that misses the liver is not the survey the source rated.
"""

from __future__ import annotations

from dataclasses import dataclass

from cds_service.engine.coverage import Coverage, explain, related_ids
from cds_service.engine.orders import PET_UNSPECIFIED, Study
from cds_service.engine.scenario import (
    INSUFFICIENT_DATA,
    NO_CRITERIA_APPLY,
    OpenQuestion,
    ScenarioMatch,
    Selection,
    UnknownFact,
)
from cds_service.knowledge import Knowledge
from cds_service.knowledge.model import Local, Pitfall, Procedure, Rating
from cds_service.knowledge.predicates import Context, evaluate
from cds_service.model import Facts

PAMA_BY_CATEGORY = {
    "usually-appropriate": "appropriate",
    "may-be-appropriate": "appropriate",
    "usually-not-appropriate": "not-appropriate",
}
CATEGORY_ORDER = {"usually-appropriate": 0, "may-be-appropriate": 1, None: 2, "usually-not-appropriate": 3}
KIDNEY_PITFALL = "contrast-kidney-risk"
SHOWN_ALTERNATIVES = 2  # studies a card's "consider instead" line names (engine/cards.py)


@dataclass(frozen=True)
class FiredPitfall:
    pitfall: Pitfall
    evidence: tuple[str, ...]


@dataclass(frozen=True)
class Alternative:
    procedure: Procedure
    category: str | None  # None: recommended by the source without an ACR category
    note: str


@dataclass(frozen=True)
class StudyRating:
    study: Study
    procedure: Procedure | None
    scenario_id: str  # scenario or red flag that rated it, or "no-criteria-apply"/"insufficient-data"
    rule_id: str
    rating: Rating | None  # the ACR-rated entry, when the scenario rates this study
    pama: str | None  # appropriate | not-appropriate | no-criteria-apply | None (no rating given)
    pitfalls: tuple[FiredPitfall, ...] = ()
    alternatives: tuple[Alternative, ...] = ()  # everything the scenario rates or recommends, best first
    replacements: tuple[Alternative, ...] = ()  # what to offer instead of this order, preferred first
    tracer_options: tuple[Alternative, ...] = ()  # for a PET/CT without a coded tracer
    match: ScenarioMatch | None = None
    # set when facts read from text alone would have made this "usually not appropriate" and the
    # rating above is the coded-only one (engine/text_guard.py): what the card tells the clinician
    text_note: str | None = None
    # engine/completions.py: rated although these facts are unknown (no value of them would change
    # the rating), or, when not rated, which unknown facts could change it and how
    unknown_facts: tuple[UnknownFact, ...] = ()
    open_question: OpenQuestion | None = None
    coverage: Coverage | None = None  # how an order the variant does not rate is answered
    # studies the card would have named or suggested that the site does not offer (the ordered one
    # first, when it is one of them): the card says so, and why the suggestion is another study
    not_offered: tuple[Procedure, ...] = ()

    @property
    def category(self) -> str | None:
        return self.rating.category if self.rating else None


def _alternatives(match: ScenarioMatch, knowledge: Knowledge, exclude: str | None) -> list[Alternative]:
    procs = knowledge.catalog.procedures
    variant, scenario = match.variant, match.scenario
    alts = [Alternative(procs[pid], r.category, r.rationale) for pid, r in variant.ratings.items()]
    alts += [
        Alternative(procs[pid], None, note)
        for pid, note in scenario.recommended.items()
        if pid not in variant.ratings
    ]
    preferred = {pid: i for i, pid in enumerate(variant.preferred)}
    alts.sort(key=lambda a: (preferred.get(a.procedure.id, 99), CATEGORY_ORDER[a.category], a.procedure.rrl))
    return [a for a in alts if a.procedure.id != exclude]


def same_kind(a: Procedure, b: Procedure) -> bool:
    """Studies that answer the same question another way: another tracer-specific PET/CT, or another
    contrast protocol of the same coverage (the catalog's `pet_tracer` and `family`)."""
    return (a.pet_tracer and b.pet_tracer) or (a.family is not None and a.family == b.family)


def _offerable(
    alts: list[Alternative], wanted: list[str], kidney_risk: bool, local: Local
) -> tuple[tuple[Alternative, ...], tuple[Procedure, ...]]:
    """Keep alternatives the scenario rates appropriate or recommends, in the `wanted` order, and
    the studies not offered here that the card would otherwise name first (its "consider instead"
    line shows two). A study not offered is replaced by the same rule's studies of the same kind
    (another PET tracer it rates), in the rule's order; none: dropped, never replaced by a study the
    rule does not support."""
    by_id = {a.procedure.id: a for a in alts if a.category != "usually-not-appropriate"}
    if kidney_risk:
        by_id = {pid: a for pid, a in by_id.items() if a.procedure.contrast != "iodinated"}
    chosen: list[Alternative] = []
    skipped: list[Procedure] = []
    for pid in dict.fromkeys(wanted):
        if pid not in by_id:
            continue
        if local.offered(pid):
            chosen.append(by_id[pid])
            continue
        skipped.append(by_id[pid].procedure)
        chosen += [
            a
            for a in by_id.values()
            if local.offered(a.procedure.id) and same_kind(a.procedure, by_id[pid].procedure)
        ]
    unique = {a.procedure.id: a for a in chosen}
    named = [by_id[pid].procedure for pid in dict.fromkeys(wanted) if pid in by_id][:SHOWN_ALTERNATIVES]
    return tuple(unique.values()), tuple(p for p in skipped if p in named)


def _fired_pitfalls(
    match: ScenarioMatch, procedure: Procedure, facts: Facts, knowledge: Knowledge, ctx: Context
) -> tuple[FiredPitfall, ...]:
    fired = []
    for pid in match.scenario.pitfalls:
        pitfall = knowledge.pitfalls[pid]
        if pitfall.applies_to(procedure):
            m = evaluate(pitfall.trigger, facts, ctx)
            if m.ok:
                fired.append(FiredPitfall(pitfall, m.evidence))
    fired.sort(key=lambda f: f.pitfall.indicator != "warning")  # the summary names the first one
    return tuple(fired)


def _kidney_risk(match: ScenarioMatch, facts: Facts, knowledge: Knowledge, ctx: Context) -> bool:
    pitfall = knowledge.pitfalls.get(KIDNEY_PITFALL)
    return bool(
        pitfall and KIDNEY_PITFALL in match.scenario.pitfalls and evaluate(pitfall.trigger, facts, ctx).ok
    )


def _replacements(
    rating: Rating | None,
    procedure: Procedure,
    pitfalls: tuple[FiredPitfall, ...],
    alts: list[Alternative],
    match: ScenarioMatch,
    kidney_risk: bool,
    local: Local,
) -> tuple[tuple[Alternative, ...], tuple[Procedure, ...]]:
    wanted: list[str] = []
    if not local.offered(procedure.id):
        # Ordered here but not offered: the same kind of study the rule rates (another PET tracer),
        # else the rule's own alternatives in order (conventional imaging where it rates it).
        same = [a.procedure.id for a in alts if same_kind(a.procedure, procedure)]
        wanted += same if any(local.offered(pid) for pid in same) else [a.procedure.id for a in alts]
    for fired in pitfalls:
        p = fired.pitfall
        if p.prefer and procedure.id not in p.prefer:
            wanted += p.prefer
        if p.prefer_contrast_not:
            wanted += [a.procedure.id for a in alts if a.procedure.contrast != p.prefer_contrast_not]
    if rating and rating.category == "usually-not-appropriate":
        wanted += list(match.variant.preferred) + [a.procedure.id for a in alts]
    chosen, skipped = _offerable(alts, wanted, kidney_risk, local)
    ordered = () if local.offered(procedure.id) else (procedure,)
    return chosen, ordered + skipped


def _rate_in_scenario(
    study: Study, procedure: Procedure, match: ScenarioMatch, facts: Facts, knowledge: Knowledge, ctx: Context
) -> StudyRating:
    scenario_id = match.scenario.id
    alts = _alternatives(match, knowledge, exclude=procedure.id)
    kidney = _kidney_risk(match, facts, knowledge, ctx)
    options = [a for a in _alternatives(match, knowledge, None) if a.procedure.pet_tracer]
    # A scenario that neither rates nor recommends any tracer-specific PET (undetectable PSA after
    # prostatectomy, low-risk prostate cancer with bone pain): the tracer cannot change the answer,
    # so the untraced PET/CT is answered below like any study the scenario does not rate, with a card.
    if procedure.id == PET_UNSPECIFIED and options:
        outcomes = {PAMA_BY_CATEGORY.get(a.category or "", NO_CRITERIA_APPLY) for a in options}
        tracer_ids = [p.id for p in knowledge.catalog.procedures.values() if p.pet_tracer]
        if len(outcomes) == 1 and len(options) == len(tracer_ids):
            return StudyRating(study, procedure, scenario_id, scenario_id, None, outcomes.pop(), match=match)
        return StudyRating(
            study,
            procedure,
            scenario_id,
            "pet-tracer-unspecified",
            None,
            None,
            alternatives=tuple(alts),
            tracer_options=tuple(options),
            match=match,
        )
    rating = match.variant.ratings.get(procedure.id)
    coverage = None if rating else explain(procedure, match, knowledge, kidney)
    rating = rating or (coverage.inherited if coverage else None)
    pitfalls = _fired_pitfalls(match, procedure, facts, knowledge, ctx)
    pama = PAMA_BY_CATEGORY[rating.category] if rating else NO_CRITERIA_APPLY
    local = knowledge.local
    replacements, not_offered = _replacements(rating, procedure, pitfalls, alts, match, kidney, local)
    return StudyRating(
        study,
        procedure,
        scenario_id,
        scenario_id,
        rating,
        pama,
        pitfalls,
        tuple(alts),
        replacements,
        match=match,
        coverage=coverage,
        not_offered=not_offered,
    )


def _rate_under_red_flags(
    study: Study, procedure: Procedure | None, red_flags: tuple[ScenarioMatch, ...]
) -> StudyRating:
    for flag in red_flags:
        rating = flag.variant.ratings.get(procedure.id) if procedure else None
        if rating:
            return StudyRating(
                study,
                procedure,
                flag.scenario.id,
                flag.scenario.id,
                rating,
                PAMA_BY_CATEGORY[rating.category],
                match=flag,
            )
    flag = red_flags[0]
    return StudyRating(
        study, procedure, flag.scenario.id, flag.scenario.id, None, NO_CRITERIA_APPLY, match=flag
    )


def _could_be_rated(procedure: Procedure | None, selection: Selection, knowledge: Knowledge) -> bool:
    """Would any scenario that lacks facts rate this study? If none would, missing facts cannot matter."""
    if procedure is None:
        return False
    ids = {procedure.id}
    if procedure.id == PET_UNSPECIFIED:  # any tracer-specific PET could be meant
        ids |= {p.id for p in knowledge.catalog.procedures.values() if p.pet_tracer}
    ids |= related_ids(knowledge.catalog, procedure.id)  # a part is answered with its combination
    return any(ids & set(v.ratings) for m in selection.missing for v in m.scenario.variants)


def rate_study(study: Study, selection: Selection, facts: Facts, knowledge: Knowledge) -> StudyRating:
    procedure = knowledge.catalog.procedures.get(study.procedure_id) if study.procedure_id else None
    if selection.red_flags:
        return _rate_under_red_flags(study, procedure, selection.red_flags)
    if selection.match is None:
        if selection.missing and _could_be_rated(procedure, selection, knowledge):
            return StudyRating(study, procedure, INSUFFICIENT_DATA, INSUFFICIENT_DATA, None, None)
        return StudyRating(study, procedure, NO_CRITERIA_APPLY, NO_CRITERIA_APPLY, None, NO_CRITERIA_APPLY)
    if procedure is None:
        return StudyRating(
            study,
            None,
            selection.match.scenario.id,
            selection.match.scenario.id,
            None,
            NO_CRITERIA_APPLY,
            match=selection.match,
        )
    ctx = Context(modality_of=knowledge.modality_of)
    return _rate_in_scenario(study, procedure, selection.match, facts, knowledge, ctx)

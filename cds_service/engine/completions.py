"""Reasoning with partial facts: rate what the known facts already decide, ask only for what could change it.

When a scenario's population holds but a fact it requires is missing, `select_scenario` answers
`insufficient-data`. Often part of that fact is known: the risk group needs grade group, PSA and T
category, and the chart gives two of them. Each missing input has a small finite domain (T1 ... T4,
grade group 1-5, PSA in the bands at the risk thresholds). This stage fills the missing inputs with
every combination of their values ("completions"), runs the unchanged scenario and rating stages on
each, and compares the rating of the ordered study:

- every completion gives the same rating: the known facts decide it. The study is rated, with
  `StudyRating.unknown_facts` naming what was unknown (the rating extension carries it as
  `unknownFact`, the card says it would not change the answer). Nothing is assumed: no single
  value is ever picked, every possible one gives this rating.
- the completions disagree: no rating. `StudyRating.open_question` names only the unknown facts
  whose value could change the rating and which values lead to which rating ("usually appropriate
  if T3 or higher"), for the card.
- nothing of the missing fact is known, a requirement has no domain here, or data could not be
  retrieved: unchanged, the insufficient-data card lists the missing facts.

Domains are declared per requirement id of the scenario files (`PROVIDERS`); a requirement without
one is never completed. Pure functions over Facts; the other stages are reused as they are.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from cds_service.engine.rating import StudyRating, rate_study
from cds_service.engine.scenario import (
    INSUFFICIENT_DATA,
    NO_CRITERIA_APPLY,
    OpenQuestion,
    ScenarioMatch,
    Selection,
    UnknownFact,
    select_scenario,
)
from cds_service.engine.text_guard import guard_text_downgrades
from cds_service.knowledge import Knowledge
from cds_service.knowledge.model import Scenario
from cds_service.knowledge.predicates import Context, evaluate
from cds_service.knowledge.risk import assess_risk, t_category
from cds_service.model import Facts, Measurement

MAX_COMPLETIONS = 512  # far above the largest partial case (35); beyond it, ask for every fact
NOT_RATED = "not-rated"  # a completion that still rates nothing (another fact missing)


@dataclass(frozen=True)
class Unknown:
    """One missing input and its finite domain: value labels, how each value is filled into the
    facts, and how a set of values is said in words (runs of an ordered domain merged)."""

    fact: UnknownFact
    labels: tuple[str, ...]
    fill: Callable[[Facts, int], Facts]
    describe: Callable[[Sequence[int]], str]


@dataclass(frozen=True)
class Partial:
    known: tuple[str, ...]  # the known inputs, for the card ("grade group 1, PSA 5.2 ng/mL")
    unknowns: tuple[Unknown, ...]


# --- describing a set of values ----------------------------------------------------------------


def _runs(indexes: Sequence[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for i in sorted(set(indexes)):
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def _ordered(run_label: Callable[[int, int], str]) -> Callable[[Sequence[int]], str]:
    return lambda indexes: " or ".join(run_label(a, b) for a, b in _runs(indexes))


# --- the risk group: grade group, PSA and T category (knowledge/risk.py) -------------------------

GRADE_GROUPS = (1, 2, 3, 4, 5)
# One PSA per band of knowledge/risk.py (low < 10, intermediate 10-20 inclusive, high > 20): the
# group is constant within a band (tests/engine/test_completions.py checks the band edges).
PSA_BANDS = (5.0, 15.0, 25.0)
_PSA_RUNS = {
    (0, 0): "PSA < 10 ng/mL",
    (1, 1): "PSA 10-20 ng/mL",
    (2, 2): "PSA > 20 ng/mL",
    (0, 1): "PSA up to 20 ng/mL",
    (1, 2): "PSA 10 ng/mL or more",
    (0, 2): "any PSA",
}
# T sub-categories that can change the group (T1a-c are all alike; T3 without letter reads as T3a).
T_CATEGORIES = ("T1", "T2a", "T2b", "T2c", "T3a", "T3b", "T4")
T2_SUBCATEGORIES = ("T2a", "T2b", "T2c")


def _t_run(values: Sequence[str], open_ended: bool) -> Callable[[int, int], str]:
    """"T1-T2" for T1-T2c, "T3 or higher" for T3a-T4: a whole T number when the run holds all of it."""

    def whole(i: int, a: int, b: int) -> str:
        number = values[i][:2]
        members = [j for j, v in enumerate(values) if v[:2] == number]
        return number if len(members) > 1 and a <= min(members) and max(members) <= b else values[i]

    def label(a: int, b: int) -> str:
        start, end = whole(a, a, b), whole(b, a, b)
        if start == end:
            return start
        if open_ended and b == len(values) - 1 and a > 0:
            return f"{start} or higher"
        return f"{start}-{end}"

    return label


def _t_unknown(fact: UnknownFact, values: tuple[str, ...], open_ended: bool) -> Unknown:
    return Unknown(
        fact,
        values,
        lambda f, i: replace(f, tnm={**f.tnm, "T": values[i]}),
        _ordered(_t_run(values, open_ended)),
    )


GRADE_GROUP = Unknown(
    UnknownFact("grade-group", "grade group"),
    tuple(f"grade group {g}" for g in GRADE_GROUPS),
    lambda f, i: replace(f, grade_group=GRADE_GROUPS[i]),
    _ordered(lambda a, b: f"grade group {GRADE_GROUPS[a]}" + (f"-{GRADE_GROUPS[b]}" if b > a else "")),
)
PSA = Unknown(
    UnknownFact("psa", "PSA"),
    tuple(_PSA_RUNS[(i, i)] for i in range(len(PSA_BANDS))),
    lambda f, i: replace(f, psa=(Measurement(PSA_BANDS[i], "ng/mL", f.as_of),)),
    _ordered(lambda a, b: _PSA_RUNS[(a, b)]),
)
T_CATEGORY = _t_unknown(UnknownFact("t-category", "T category"), T_CATEGORIES, open_ended=True)
T_SUBCATEGORY = _t_unknown(
    UnknownFact("t-subcategory", "T2 sub-category"), T2_SUBCATEGORIES, open_ended=False
)


def risk_inputs(facts: Facts) -> Partial | None:
    """The unknown risk inputs; None when none is known (then ask for all three, as before)."""
    t = t_category(facts)
    reasons = assess_risk(facts).reasons
    if not reasons:
        return None
    unknowns = []
    if facts.grade_group is None:
        unknowns.append(GRADE_GROUP)
    if not facts.psa:
        unknowns.append(PSA)
    if t is None:
        unknowns.append(T_CATEGORY)
    elif t == (2, ""):
        unknowns.append(T_SUBCATEGORY)
    return Partial((f"{', '.join(reasons)} (risk group inputs)",), tuple(unknowns))


# --- the PSA trend after local therapy: one PSA known, the earlier one missing -----------------

_TREND_RUNS = {
    (0, 0): "PSA rising by 2 ng/mL or more (above the nadir)",
    (1, 1): "PSA rising by less than 2 ng/mL",
    (2, 2): "PSA not rising",
    (0, 1): "PSA rising",
    (1, 2): "PSA rising by less than 2 ng/mL or not rising",
    (0, 2): "any PSA trend",
}


def _earlier_psa(facts: Facts, i: int) -> Facts:
    latest = facts.psa[-1]
    # a value in each trend class the rules test: Phoenix (nadir + 2), any rise, no rise
    value = (max(latest.value - 2.5, 0.0), latest.value - min(1.0, latest.value / 2), latest.value)[i]
    when = (latest.date or facts.as_of) - timedelta(days=90)
    return replace(facts, psa=(Measurement(value, latest.unit, when), latest))


PSA_TREND = Unknown(
    UnknownFact("psa-trend", "PSA trend (an earlier PSA)"),
    tuple(_TREND_RUNS[(i, i)] for i in range(3)),
    _earlier_psa,
    _ordered(lambda a, b: _TREND_RUNS[(a, b)]),
)


# Below 2 ng/mL no earlier value can lie 2 ng/mL lower: the domain is "rising" or "not rising".
_LOW_TREND_RUNS = {(0, 0): "PSA rising", (1, 1): "PSA not rising", (0, 1): "any PSA trend"}
PSA_TREND_BELOW_2 = Unknown(
    PSA_TREND.fact,
    (_LOW_TREND_RUNS[(0, 0)], _LOW_TREND_RUNS[(1, 1)]),
    lambda f, i: _earlier_psa(f, i + 1),
    _ordered(lambda a, b: _LOW_TREND_RUNS[(a, b)]),
)


def psa_trend_inputs(facts: Facts) -> Partial | None:
    if len(facts.psa) != 1:
        return None  # no PSA at all: nothing known
    latest = facts.psa[-1]
    when = f" on {latest.date.isoformat()}" if latest.date else ""
    trend = PSA_TREND if latest.value >= 2.0 else PSA_TREND_BELOW_2
    return Partial((f"PSA {latest.value:g} ng/mL{when} (the only PSA result)",), (trend,))


# requirement id (cards/scenarios/*.yaml `requires`) -> its domain. Not listed, on purpose:
# `stage-group` and `systemic-therapy` are single facts, so "unknown" means nothing is known;
# `psa` (no PSA at all) likewise.
PROVIDERS: dict[str, Callable[[Facts], Partial | None]] = {
    "risk-group": risk_inputs,
    "psa-trend": psa_trend_inputs,
}


def partial_facts(selection: Selection, facts: Facts) -> Partial | None:
    """What is known and unknown of every missing requirement; None when any of them cannot be
    completed (no domain, nothing known, or data that could not be retrieved)."""
    known: list[str] = []
    unknowns: dict[str, Unknown] = {}
    for missing in selection.missing:
        if not missing.requirements:
            return None
        for req in missing.requirements:
            provider = PROVIDERS.get(req.id)
            part = provider(facts) if provider else None
            if part is None:
                return None
            known += part.known
            unknowns.update((u.fact.id, u) for u in part.unknowns)
    if not unknowns:
        return None
    return Partial(tuple(dict.fromkeys(known)), tuple(unknowns.values()))


# --- enumerating and comparing ---------------------------------------------------------------


def completions(partial: Partial, facts: Facts) -> list[tuple[tuple[int, ...], Facts]] | None:
    sizes = [len(u.labels) for u in partial.unknowns]
    total = 1
    for size in sizes:
        total *= size
    if total > MAX_COMPLETIONS:
        return None
    out = []
    for combo in itertools.product(*(range(size) for size in sizes)):
        completed = facts
        for unknown, i in zip(partial.unknowns, combo, strict=True):
            completed = unknown.fill(completed, i)
        out.append((combo, completed))
    return out


def outcome_of(rated: StudyRating) -> str:
    """An ACR category, no-criteria-apply, the engine rule that withholds the rating (PET tracer
    not coded), or not-rated (data still missing)."""
    if rated.scenario_id == INSUFFICIENT_DATA:
        return NOT_RATED
    if rated.pama is None:
        return rated.rule_id
    return rated.category or NO_CRITERIA_APPLY


def _relevant(outcomes: dict[tuple[int, ...], str], sizes: Sequence[int]) -> list[int]:
    """Unknowns whose value alone changes the outcome for some values of the others."""
    relevant = []
    for k, size in enumerate(sizes):
        if any(
            outcomes[combo[:k] + (v,) + combo[k + 1 :]] != outcome
            for combo, outcome in outcomes.items()
            for v in range(size)
        ):
            relevant.append(k)
    return relevant


def _conditions(
    partial: Partial, outcomes: dict[tuple[int, ...], str], relevant: list[int]
) -> tuple[tuple[str, str, bool], ...]:
    """(outcome, condition in words, exact), in the order the values first reach each outcome.

    A condition names the values of one unknown fact that give the outcome whatever the others
    are ("grade group 4-5 or T3 or higher"); `exact` when those values are the only way to it (then
    the card may say "only if"). With no such value the outcome depends on the facts together."""
    out = []
    for outcome in dict.fromkeys(outcomes.values()):
        deciders = []
        covered: set[tuple[int, ...]] = set()
        for k in relevant:
            unknown = partial.unknowns[k]
            values = [
                v
                for v in range(len(unknown.labels))
                if all(o == outcome for combo, o in outcomes.items() if combo[k] == v)
            ]
            if values:
                deciders.append(unknown.describe(values))
                covered |= {combo for combo in outcomes if combo[k] in values}
        reached = {combo for combo, o in outcomes.items() if o == outcome}
        if deciders:
            out.append((outcome, " or ".join(deciders), covered == reached))
        else:
            together = " and ".join(partial.unknowns[k].fact.label for k in relevant)
            out.append((outcome, f"depending on the {together} together", False))
    return tuple(out)


def _evidence(scenario: Scenario, facts: Facts, ctx: Context, known: tuple[str, ...]) -> tuple[str, ...]:
    """The card's facts from the record itself, never from a completion."""
    lines = list(evaluate(scenario.population, facts, ctx).evidence)
    for pred in [req.when for req in scenario.requires] + [scenario.criteria]:
        m = evaluate(pred, facts, ctx)
        if m.ok:
            lines += m.evidence
    return tuple(dict.fromkeys([*lines, *known]))


def _decided(
    rated: list[StudyRating], partial: Partial, facts: Facts, knowledge: Knowledge
) -> StudyRating:
    first = rated[0]
    unknown = tuple(u.fact for u in partial.unknowns)
    if first.match is None:
        return replace(first, unknown_facts=unknown)
    ctx = Context(modality_of=knowledge.modality_of)
    scenario = first.match.scenario
    match = ScenarioMatch(scenario, first.match.variant, _evidence(scenario, facts, ctx, partial.known))
    # a caution stays only when it fires whatever the unknown value
    always = set.intersection(*({p.pitfall.id for p in r.pitfalls} for r in rated))
    return replace(
        first,
        match=match,
        pitfalls=tuple(p for p in first.pitfalls if p.pitfall.id in always),
        unknown_facts=unknown,
    )


def complete_ratings(
    ratings: Sequence[StudyRating],
    selection: Selection,
    facts: Facts,
    knowledge: Knowledge,
    unretrieved: tuple[str, ...] = (),
) -> list[StudyRating]:
    """Rate the insufficient-data studies whose rating the known facts decide; attach an
    `OpenQuestion` to the others (module doc)."""
    if not any(r.scenario_id == INSUFFICIENT_DATA for r in ratings):
        return list(ratings)
    partial = partial_facts(selection, facts)
    worlds = completions(partial, facts) if partial else None
    if partial is None or not worlds:
        return list(ratings)
    selections = [(combo, f, select_scenario(f, knowledge, unretrieved)) for combo, f in worlds]
    sizes = [len(u.labels) for u in partial.unknowns]
    scenario = selection.missing[0].scenario
    out = []
    for rating in ratings:
        if rating.scenario_id != INSUFFICIENT_DATA:
            out.append(rating)
            continue
        rated = [
            guard_text_downgrades([rate_study(rating.study, sel, f, knowledge)], f, knowledge, unretrieved)[0]
            for _combo, f, sel in selections
        ]
        outcomes = {combo: outcome_of(r) for (combo, _f, _s), r in zip(selections, rated, strict=True)}
        if len(set(outcomes.values())) == 1 and NOT_RATED not in outcomes.values():
            out.append(_decided(rated, partial, facts, knowledge))
            continue
        relevant = _relevant(outcomes, sizes)
        if not relevant:  # nothing the unknown facts could settle: the insufficient-data card
            out.append(rating)
            continue
        question = OpenQuestion(
            scenario,
            partial.known,
            tuple(partial.unknowns[k].fact for k in relevant),
            _conditions(partial, outcomes, relevant),
        )
        out.append(replace(rating, open_question=question))
    return out

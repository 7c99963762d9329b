"""Facts -> which clinical scenario applies (red flags first, then the most specific scenario).

Each scenario file states a population, the facts it requires to decide, entry criteria and
variants. Selection order: every red flag whose criteria hold; then scenarios by priority, the
first whose population, requirements, criteria and a variant all hold. When a scenario's population
matches but a required fact is missing and nothing else applies, the outcome is `insufficient-data`
(name the missing facts, never guess); otherwise `no-criteria-apply`. engine/completions.py then
checks whether the missing facts could change a study's rating at all (`UnknownFact`, `OpenQuestion`).
"""

from __future__ import annotations

from dataclasses import dataclass

from cds_service.knowledge import Knowledge
from cds_service.knowledge.model import Requirement, Scenario, Variant
from cds_service.knowledge.predicates import Context, evaluate
from cds_service.knowledge.risk import assess_risk
from cds_service.model import Facts

INSUFFICIENT_DATA = "insufficient-data"
NO_CRITERIA_APPLY = "no-criteria-apply"


@dataclass(frozen=True)
class ScenarioMatch:
    scenario: Scenario
    variant: Variant
    evidence: tuple[str, ...]  # the facts that made it match, for the card detail


@dataclass(frozen=True)
class MissingFacts:
    scenario: Scenario
    missing: tuple[str, ...]  # labels of the requirements that failed
    # the failed requirements themselves (empty when the data could not be retrieved at all):
    # engine/completions.py enumerates their possible values
    requirements: tuple[Requirement, ...] = ()


@dataclass(frozen=True)
class UnknownFact:
    """A fact the record does not give, e.g. ("t-category", "T category")."""

    id: str  # machine-readable code, sent in the rating extension (`unknownFact`)
    label: str  # words for the card


@dataclass(frozen=True)
class OpenQuestion:
    """Why a study is not rated yet: the unknown facts that could change its rating, and which
    values lead to which rating ("usually appropriate" if "T3 or higher")."""

    scenario: Scenario
    known: tuple[str, ...]  # the known inputs, in words ("grade group 1", "PSA 5.2 ng/mL")
    ask: tuple[UnknownFact, ...]  # only the unknown facts whose value could change the rating
    # (outcome: ACR category or "no-criteria-apply", condition in words, whether that condition is
    # the only way to the outcome)
    outcomes: tuple[tuple[str, str, bool], ...]


@dataclass(frozen=True)
class Selection:
    red_flags: tuple[ScenarioMatch, ...]
    match: ScenarioMatch | None
    missing: tuple[MissingFacts, ...]

    @property
    def outcome(self) -> str:
        if self.match:
            return self.match.scenario.id
        return INSUFFICIENT_DATA if self.missing else NO_CRITERIA_APPLY


def _missing_label(req: Requirement, facts: Facts) -> str:
    if "risk_group_known" in req.when:  # say exactly which risk inputs are absent
        absent = assess_risk(facts).missing
        return f"{req.label}: missing {', '.join(absent)}" if absent else req.label
    return req.label


def _try(scenario: Scenario, facts: Facts, ctx: Context) -> ScenarioMatch | MissingFacts | None:
    population = evaluate(scenario.population, facts, ctx)
    if not population.ok:
        return None
    evidence = list(population.evidence)
    missing = []
    failed = []
    for req in scenario.requires:
        m = evaluate(req.when, facts, ctx)
        if m.ok:
            evidence += m.evidence
        else:
            missing.append(_missing_label(req, facts))
            failed.append(req)
    if missing:
        return MissingFacts(scenario, tuple(missing), tuple(failed))
    criteria = evaluate(scenario.criteria, facts, ctx)
    if not criteria.ok:
        return None
    evidence += criteria.evidence
    for variant in scenario.variants:
        when = evaluate(variant.when, facts, ctx) if variant.when else None
        if when is None or when.ok:
            evidence += when.evidence if when else ()
            return ScenarioMatch(scenario, variant, tuple(dict.fromkeys(evidence)))
    return None


def select_scenario(facts: Facts, knowledge: Knowledge, unretrieved: tuple[str, ...] = ()) -> Selection:
    """`unretrieved`: prefetch keys the protocol layer could not get. With data missing, "no scenario
    matched" is unknown, not "no criteria apply": every scenario then reports it as missing."""
    ctx = Context(modality_of=knowledge.modality_of)
    red_flags: list[ScenarioMatch] = []
    missing: list[MissingFacts] = []
    match: ScenarioMatch | None = None
    for scenario in knowledge.scenarios:  # highest priority first
        result = _try(scenario, facts, ctx)
        if scenario.kind == "red-flag":
            if isinstance(result, ScenarioMatch):
                red_flags.append(result)
        elif isinstance(result, MissingFacts):
            missing.append(result)
        elif isinstance(result, ScenarioMatch) and match is None:
            match = result
    if match is None and unretrieved:
        label = f"data that could not be retrieved ({', '.join(unretrieved)})"
        seen = {m.scenario.id for m in missing}
        missing += [
            MissingFacts(s, (label,))
            for s in knowledge.scenarios
            if s.kind != "red-flag" and s.id not in seen
        ]
    return Selection(tuple(red_flags), match, tuple(missing) if match is None else ())

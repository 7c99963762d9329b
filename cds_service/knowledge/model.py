"""Typed, frozen view of the knowledge base under `cards/` (built by `load_knowledge`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Predicate = Mapping[str, Any]

RRL_SYMBOLS = ("O", "☢", "☢☢", "☢☢☢", "☢☢☢☢", "☢☢☢☢☢")
RRL_DOSES = ("0 mSv", "< 0.1 mSv", "0.1-1 mSv", "1-10 mSv", "10-30 mSv", "30-100 mSv")


@dataclass(frozen=True)
class Code:
    system: str
    code: str
    verified: bool
    source: str


@dataclass(frozen=True)
class Procedure:
    id: str
    display: str
    modality: str
    contrast: str  # none | iodinated | gadolinium
    region: str
    rrl: int  # relative radiation level 0-5
    rrl_verified: bool
    codes: tuple[Code, ...] = ()
    components: tuple[str, ...] = ()  # separately ordered studies that together make this one
    pet_tracer: bool = False  # tracer-specific PET/CT, reached only through tracer codes
    component_only: bool = False  # never rated on its own (e.g. MRI chest as part of MRI C/A/P)
    component_sets: tuple[tuple[str, ...], ...] = ()  # further sets of orders that make this study
    part_of: tuple[str, ...] = ()  # studies this one images a subset of (besides as a component)
    family: str | None = None  # same coverage, other contrast protocols share the family

    @property
    def join_sets(self) -> tuple[tuple[str, ...], ...]:
        """Every set of separately ordered studies that together make this one."""
        return ((self.components,) if self.components else ()) + self.component_sets

    @property
    def rrl_symbol(self) -> str:
        return RRL_SYMBOLS[self.rrl]

    @property
    def rrl_text(self) -> str:
        return f"{RRL_SYMBOLS[self.rrl]} {RRL_DOSES[self.rrl]}"


@dataclass(frozen=True)
class Tracer:
    system: str
    code: str
    procedure: str
    agent: str
    verified: bool
    source: str


@dataclass(frozen=True)
class Catalog:
    procedures: Mapping[str, Procedure]
    by_code: Mapping[tuple[str, str], str]  # (system, code) -> procedure id
    tracers: Mapping[tuple[str, str], Tracer]
    system_aliases: Mapping[str, str] = field(default_factory=dict)
    # procedure id -> every study that contains it (transitively, through components and part_of)
    containers: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def canonical_system(self, system: str) -> str:
        return self.system_aliases.get(system, system)

    def lookup(self, system: str, code: str) -> str | None:
        return self.by_code.get((self.canonical_system(system), code))

    def tracer(self, system: str, code: str) -> Tracer | None:
        return self.tracers.get((self.canonical_system(system), code))

    @property
    def combinations(self) -> tuple[Procedure, ...]:
        """Studies made of several orders, largest first so a whole spine beats a partial one."""
        combos = [p for p in self.procedures.values() if p.components]
        return tuple(sorted(combos, key=lambda p: -len(p.components)))

    @property
    def join_sets(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(combined study, the orders that make it), largest sets first (CT chest + abdomen + pelvis
        is tried before CT abdomen + pelvis, so three orders become one C/A/P, not C + A/P)."""
        sets = [(p.id, parts) for p in self.procedures.values() for parts in p.join_sets]
        return tuple(sorted(sets, key=lambda s: -len(s[1])))

    def contents(self, procedure_id: str) -> frozenset[str]:
        """Every study contained in `procedure_id` (its parts, their parts, ...)."""
        return frozenset(pid for pid, wholes in self.containers.items() if procedure_id in wholes)

    def family_of(self, procedure_id: str) -> tuple[str, ...]:
        """Other contrast protocols of the same coverage (not the study itself)."""
        family = self.procedures[procedure_id].family
        if family is None:
            return ()
        return tuple(p.id for p in self.procedures.values() if p.family == family and p.id != procedure_id)


SOURCE_KINDS = ("acr", "translated", "seed")
# The clinical reference's mark for an unverified figure: a rule-text sentence holding it is never
# shown on a card as a fact (engine/card_text.py) and is labelled unverified on the rule page.
UNVERIFIED_MARK = "[I]"


def acr_reference(acr: Mapping[str, Any]) -> str:
    """ACR topic, variant and version as a clinician looks them up on acsearch.acr.org."""
    topic_id = f" (TopicId {acr['topic_id']})" if acr.get("topic_id") else ""
    variant = f"variant {acr['variant']}"
    return f"ACR Appropriateness Criteria: {acr['topic']}{topic_id}, {variant}, {acr['version']}"


@dataclass(frozen=True)
class Rating:
    procedure_id: str
    category: str
    rationale: str
    source: str
    # acr: an ACR category (topic/variant/version in `acr`); translated: the project's translation of
    # another guideline's statement (`guideline`), which is never sent as an ACR category
    source_kind: str = "acr"
    guideline: str | None = None
    acr: Mapping[str, Any] | None = None  # resolved: the rating's own, else the scenario's
    # Set when the source's reason for this category holds for each part of the study ordered alone
    # (e.g. "no IV contrast"): the words say why; parts then get the category (engine/coverage.py).
    applies_to_parts: str | None = None

    @property
    def is_acr(self) -> bool:
        return self.source_kind == "acr"

    @property
    def provenance(self) -> str:
        """One line saying what kind of rating this is, for cards, rule pages and docs."""
        if self.source_kind == "translated":
            return f"project translation of a {self.guideline} statement, not an ACR rating"
        return acr_reference(self.acr) if self.acr else "ACR Appropriateness Criteria"


@dataclass(frozen=True)
class Variant:
    id: str
    title: str
    when: Predicate | None
    ratings: Mapping[str, Rating]
    preferred: tuple[str, ...]


@dataclass(frozen=True)
class Requirement:
    id: str
    label: str
    when: Predicate


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    label: str
    kind: str  # scenario | red-flag
    priority: int
    description: str
    acr: Mapping[str, Any] | None
    seeds: tuple[str, ...]
    population: Predicate
    requires: tuple[Requirement, ...]
    criteria: Predicate
    variants: tuple[Variant, ...]
    pitfalls: tuple[str, ...]
    recommended: Mapping[str, str] = field(default_factory=dict)  # unrated source recommendations
    urgent_procedure: str | None = None
    evidence: str | None = None
    reviewed: str = ""  # YYYY-MM-DD: ratings and citations last checked against the sources

    @property
    def acr_citation(self) -> str:
        if not self.acr:
            return "No ACR Appropriateness Criteria variant covers this scenario"
        return acr_reference(self.acr)

    @property
    def source_kinds(self) -> tuple[str, ...]:
        """The kinds of source behind this rule: acr / translated ratings, seed recommendations."""
        kinds = {r.source_kind for v in self.variants for r in v.ratings.values()}
        if self.recommended:
            kinds.add("seed")
        return tuple(k for k in SOURCE_KINDS if k in kinds)

    @property
    def translated_from(self) -> tuple[str, ...]:
        names = (
            name.strip()
            for v in self.variants
            for r in v.ratings.values()
            for name in (r.guideline or "").split(" and ")
            if name.strip()
        )
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Pitfall:
    id: str
    title: str
    short: str
    indicator: str
    applies_procedures: frozenset[str]
    applies_contrast: frozenset[str]
    trigger: Predicate
    text: str
    sources: tuple[str, ...]
    prefer: tuple[str, ...] = ()
    prefer_contrast_not: str | None = None
    source_kind: str = "seed"  # acr | translated | seed (a source article)
    guideline: str | None = None  # translated only
    reviewed: str = ""

    def applies_to(self, procedure: Procedure) -> bool:
        return procedure.id in self.applies_procedures or procedure.contrast in self.applies_contrast


@dataclass(frozen=True)
class Outcome:
    id: str
    title: str
    description: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Texts:
    canonical_base: str
    source_label: str
    category_labels: Mapping[str, str]
    override_reasons: tuple[tuple[str, str], ...]  # (code, display)
    outcomes: Mapping[str, Outcome]
    source_articles: Mapping[str, str] = field(default_factory=dict)  # seed id -> citation

    def cite(self, seed: str) -> str:
        """The citation of a source article, as a clinician can look it up (never its file id)."""
        return self.source_articles[seed]

    @property
    def override_system(self) -> str:
        return f"{self.canonical_base}/CodeSystem/override-reason"

    @property
    def rating_extension_url(self) -> str:
        return f"{self.canonical_base}/StructureDefinition/imaging-appropriateness"

    @property
    def rule_system(self) -> str:
        return f"{self.canonical_base}/CodeSystem/rule"


@dataclass(frozen=True)
class Local:
    """What one site changed (CDS_SITE_CONFIG, built by cds_service/knowledge/site.py): the engine
    reads it from the knowledge view it is given, never from a global, so it stays pure."""

    site: str | None = None  # the site's name, for card text ("not offered at <site>")
    version: str | None = None  # the site file's own version (audit rows, check, rule pages)
    unavailable: frozenset[str] = frozenset()  # procedure ids not offered here (groups expanded)
    info_only: frozenset[str] = frozenset()  # scenario ids whose cards are shown as info
    contact: tuple[str, str] | None = None  # (label, url) of the local radiology consult

    def offered(self, procedure_id: str) -> bool:
        return procedure_id not in self.unavailable

    @property
    def where(self) -> str:
        return f"at {self.site}" if self.site else "at this site"

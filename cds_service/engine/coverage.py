"""Orders the matched scenario does not rate: answered with the evidence of the rated study they
belong to, never silently and never with an invented category.

EHRs order one code at a time: a CT C/A/P arrives as CT chest + CT abdomen/pelvis, and often only
one of them is on the draft when the order is selected. The sources rate the combination. For a
study the scenario's variant does not rate, this module finds the nearest rated relative in the
procedure catalog (`components` / `component_sets` / `part_of` / `family`, cards/procedures.yaml):

1. part: the study is part of a rated study (CT chest < CT C/A/P; limited < whole-body bone scan).
   The card names the rated study, its category and what the part misses ("CT chest with IV
   contrast alone misses the abdomen and pelvis"), and offers to add the missing parts. The part
   gets NO category of its own (PAMA `no-criteria-apply`): the source rated the whole survey, and
   a part that misses the liver is not what it rated. Exception, the only case where a part takes
   the combination's category: the rule says, in the rating's `applies_to_parts`, that the source's
   reason for "usually not appropriate" holds for every part ordered alone (no IV contrast for the
   viscera; no distant-disease imaging indicated at all). Then the part is "usually not appropriate"
   with that reason on the card. The loader allows `applies_to_parts` on that category only: a
   "usually appropriate" never carries over to a part.
2. contrast: another contrast protocol of the same coverage is rated, alone or as part of a rated
   study (CT chest without contrast vs CT C/A/P with contrast): no category, the card says what
   differs (no IV contrast) and offers the rated study.
3. wider: the order contains a rated study (CT C/A/P where only CT abdomen/pelvis is rated): no
   category, the card says what the order adds beyond the rated study and offers it.
4. recommended: the source recommends the study without a category: no category, the card quotes it.
5. unrated: nothing related is rated: no category, a short card says so and shows what is rated.

Parts of a study the scenario rates "usually not appropriate" without `applies_to_parts` are case 1
without a category: the card says the combination is rated usually not appropriate and that this
part alone covers only its region. Suggestions never propose an iodinated-contrast study when the
scenario's kidney caution fires, nor a study rated usually not appropriate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cds_service.engine.scenario import ScenarioMatch
from cds_service.knowledge import Knowledge
from cds_service.knowledge.model import Catalog, Local, Procedure, Rating

_RANK = {"usually-appropriate": 0, "may-be-appropriate": 1, "usually-not-appropriate": 2}
PART, CONTRAST, WIDER, RECOMMENDED, UNRATED = "part", "contrast", "wider", "recommended", "unrated"


@dataclass(frozen=True)
class Coverage:
    """Why a study the variant does not rate still gets an answer, and which."""

    kind: str  # part | contrast | wider | recommended | unrated
    summary: str  # card summary (stands alone)
    note: str  # the card's verdict line
    related: Procedure | None = None  # the rated study the answer refers to
    related_rating: Rating | None = None
    inherited: Rating | None = None  # the part's own rating (only via `applies_to_parts`)
    add: tuple[Procedure, ...] = ()  # parts to add to the draft to make the rated study
    replace_with: Procedure | None = None  # or the rated study to order instead


def _regions(parts: list[Procedure]) -> str:
    regions = [p.region for p in parts]
    return ", ".join(regions[:-1]) + " and " + regions[-1] if len(regions) > 1 else regions[0]


def missing_parts(catalog: Catalog, whole: str, part: str) -> list[Procedure] | None:
    """The separately orderable studies that, with `part`, make `whole`; None when `whole` cannot be
    assembled from orders around `part` (a limited bone scan does not grow into a whole-body one)."""
    procs = catalog.procedures
    for parts in procs[whole].join_sets:
        if part in parts:
            return [procs[x] for x in parts if x != part]
        holder = next((x for x in parts if part in catalog.contents(x)), None)
        if holder is not None:
            inner = missing_parts(catalog, holder, part)
            if inner is not None:
                return [procs[x] for x in parts if x != holder] + inner
    return None


def _contrast_difference(ordered: Procedure, rated: Procedure) -> str:
    if ordered.contrast == "none" and rated.contrast != "none":
        return "has no IV contrast"
    if rated.contrast == "none" and ordered.contrast != "none":
        return "adds IV contrast the rated study does not use"
    return "uses another contrast protocol"


def _pick(
    ratings: dict[str, Rating], ids: set[str], catalog: Catalog, preferred: tuple[str, ...]
) -> Rating | None:
    """Best rated study among `ids`: best category, then the closest (fewest parts), then preferred."""
    order = {pid: i for i, pid in enumerate(preferred)}
    rated = [ratings[i] for i in ids if i in ratings]

    def rank(r: Rating) -> tuple[int, int, int]:
        return _RANK[r.category], len(catalog.contents(r.procedure_id)), order.get(r.procedure_id, 99)

    rated.sort(key=rank)
    return rated[0] if rated else None


def _offerable(procedure: Procedure, rating: Rating, kidney_risk: bool, local: Local) -> bool:
    iodinated = procedure.contrast == "iodinated"
    return (
        rating.category != "usually-not-appropriate"
        and not (kidney_risk and iodinated)
        and local.offered(procedure.id)  # never suggest a study the site does not offer
    )


def explain(procedure: Procedure, match: ScenarioMatch, knowledge: Knowledge, kidney_risk: bool) -> Coverage:
    """The answer for `procedure`, which `match.variant` does not rate."""
    catalog, labels, local = knowledge.catalog, knowledge.texts.category_labels, knowledge.local
    procs = catalog.procedures
    ratings = dict(match.variant.ratings)
    label = match.scenario.label
    pid = procedure.id
    family = catalog.family_of(pid)

    def pick(ids: set[str]) -> Rating | None:
        return _pick(ratings, ids, catalog, match.variant.preferred)

    def said(rating: Rating) -> str:
        return f"{procs[rating.procedure_id].display} is {labels[rating.category].lower()} for {label}"

    recommended = match.scenario.recommended.get(pid)
    if recommended:
        return Coverage(
            RECOMMENDED,
            f"{procedure.display}: recommended without a rating for {label}",
            f"Not rated; the source recommends it for *{match.scenario.title}*: {recommended}",
        )

    containers = set(catalog.containers.get(pid, ()))
    # a container whose rule says its "not appropriate" holds for parts decides first
    whole = pick({c for c in containers if c in ratings and ratings[c].applies_to_parts}) or pick(containers)
    if whole is not None:
        w = procs[whole.procedure_id]
        missing = missing_parts(catalog, w.id, pid)
        misses = f"misses the {_regions(missing)}" if missing else f"covers only the {procedure.region}"
        if whole.applies_to_parts:
            inherited = dataclasses.replace(
                whole,
                procedure_id=pid,
                rationale=f"rated for {w.display}, of which this is a part: {whole.rationale} "
                f"{whole.applies_to_parts}",
            )
            return Coverage(
                PART, "", f"{procedure.display} alone {misses}; {said(whole)}.", w, whole, inherited
            )
        offer = _offerable(w, whole, kidney_risk, local)
        orderable = all(p.codes and local.offered(p.id) for p in missing or ())
        add = tuple(missing or ()) if offer and missing and orderable else ()
        return Coverage(
            PART,
            f"{procedure.display} alone {misses}: {w.display} is {labels[whole.category].lower()}",
            f"Not rated alone: {said(whole)}, a study the source rates as a whole; this order alone "
            f"{misses}.",
            w,
            whole,
            add=add,
            replace_with=w if offer and not add else None,
        )

    same = pick(set(family))
    via_part = None if same else pick({c for q in family for c in catalog.containers.get(q, ())})
    other = same or via_part
    if other is not None:
        o = procs[other.procedure_id]
        diff = _contrast_difference(procedure, o)
        if via_part is not None:  # CT chest without contrast vs CT C/A/P with contrast
            own = next(q for q in family if o.id in catalog.containers.get(q, ()))
            missing = missing_parts(catalog, o.id, own)
            diff += f" and misses the {_regions(missing)}" if missing else ""
        return Coverage(
            CONTRAST,
            f"{procedure.display} is not rated for {label}; {o.display} is {labels[other.category].lower()}",
            f"Not rated: this order {diff}; {said(other)}.",
            o,
            other,
            replace_with=o if _offerable(o, other, kidney_risk, local) else None,
        )

    inner = pick(set(catalog.contents(pid)) | {c for q in family for c in catalog.contents(q)})
    if inner is not None:
        r = procs[inner.procedure_id]
        extra = missing_parts(catalog, pid, r.id) if r.id in catalog.contents(pid) else None
        beyond = f"also images the {_regions(extra)}" if extra else "images more than the rated study"
        return Coverage(
            WIDER,
            f"{procedure.display} is not rated for {label}; only {r.display} is "
            f"({labels[inner.category].lower()})",
            f"Not rated: the source rates {r.display} only; this order {beyond}; {said(inner)}.",
            r,
            inner,
            replace_with=r if _offerable(r, inner, kidney_risk, local) else None,
        )

    first = pick(set(match.variant.preferred)) or pick(set(ratings))
    rated = [procs[p].display for p in match.variant.preferred]
    return Coverage(
        UNRATED,
        f"{procedure.display} is not rated for {label}"
        + (f"; {procs[first.procedure_id].display} is {labels[first.category].lower()}" if first else ""),
        f"Not rated: the source for *{match.scenario.title}* gives no rating for this study."
        + (f" The first studies it rates: {', '.join(rated)}." if rated else ""),
    )


def related_ids(catalog: Catalog, procedure_id: str) -> set[str]:
    """Studies whose rating could answer an order for `procedure_id` (for missing-facts checks)."""
    family = set(catalog.family_of(procedure_id)) | {procedure_id}
    related = set(family)
    for q in family:
        related |= set(catalog.containers.get(q, ())) | catalog.contents(q)
    return related

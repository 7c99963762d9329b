"""History of cancer + evidence of active disease -> active cancer (a small pure sub-stage).

EHRs often keep a treated cancer on the problem list only as history (ICD-10-CM Z85.46 / Z85.3,
SNOMED "History of malignant neoplasm of ..."), also while the disease is active again. A history
code alone stays `history-of-...`: a known cancer for the red-flag rules, never a reason to apply a
staging or surveillance scenario. With evidence of active disease it counts as the active cancer:

- metastases (metastatic-disease or any metastasis-* concept), but only when no other primary can
  own them: no active primary cancer coded and no history of a second cancer;
- current systemic therapy of a class used for that cancer only (ADT / ARPI / antiandrogen /
  radioligand for prostate; endocrine / HER2-targeted for breast). Chemotherapy, immunotherapy and
  PARP inhibitors are shared by many cancers: like metastases, they count only when no other
  primary can own them (otherwise a chart with a history code and chemotherapy, and nothing else,
  fell silent: no scenario, no card);
- for prostate, a rising PSA (the last two values) or a coded rising PSA after treatment (R97.21).

ICD-10-CM guidelines code a cancer as current while treatment is directed at it, which is what
these rules recognise. The derived evidence says why, so the card shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

from cds_service.facts.consistency import METASTASIS_CONCEPTS
from cds_service.knowledge.predicates import current_medications
from cds_service.model import Evidence, Facts

ACTIVE_PRIMARIES = ("prostate-cancer", "breast-cancer", "other-cancer")
# Systemic therapy used for many cancers: evidence for a history only when no other cancer is charted.
SHARED_THERAPY = frozenset({"chemotherapy", "immunotherapy", "parp-inhibitor"})
HISTORIES = ("history-of-prostate-cancer", "history-of-breast-cancer", "history-of-cancer")


@dataclass(frozen=True)
class _Rule:
    history: str
    active: str
    label: str
    therapy_classes: frozenset[str]
    psa_counts: bool


RULES = (
    _Rule(
        "history-of-prostate-cancer",
        "prostate-cancer",
        "prostate cancer",
        frozenset({"adt", "arpi", "antiandrogen", "radioligand"}),
        psa_counts=True,
    ),
    _Rule(
        "history-of-breast-cancer",
        "breast-cancer",
        "breast cancer",
        frozenset({"endocrine", "her2-targeted"}),
        psa_counts=False,
    ),
)


@dataclass(frozen=True)
class _Reason:
    text: str
    date: date | None
    from_text: bool = False
    from_order: bool = False


def _on(when: date | None) -> str:
    return f" on {when.isoformat()}" if when else ""


def _metastases(facts: Facts) -> list[_Reason]:
    # one Condition is often in several metastasis concepts (metastatic-disease + metastasis-bone)
    found = {
        ev.source or ev.text: _Reason(f"{ev.text}{_on(ev.date)}", ev.date, ev.from_text, ev.from_order)
        for concept in METASTASIS_CONCEPTS
        for ev in facts.concepts.get(concept, ())
    }
    return list(found.values())


def _therapy(facts: Facts, classes: frozenset[str]) -> list[_Reason]:
    out = []
    for med in current_medications(facts):
        if med.classes & classes:
            since = f" since {med.start.isoformat()}" if med.start else ""
            kinds = ", ".join(sorted(med.classes & classes))
            out.append(_Reason(f"current {med.ingredient} ({kinds}){since}", med.start))
    return out


def _psa(facts: Facts) -> list[_Reason]:
    out = [
        _Reason(f"{ev.text}{_on(ev.date)}", ev.date, ev.from_text, ev.from_order)
        for ev in facts.concepts.get("rising-psa-after-treatment", ())
    ]
    if len(facts.psa) >= 2 and facts.psa[-1].value > facts.psa[-2].value:
        before, last = facts.psa[-2], facts.psa[-1]
        text = f"PSA rising: {before.value:g} ng/mL{_on(before.date)} then {last.value:g} ng/mL"
        text += _on(last.date)
        out.append(_Reason(text, last.date))
    return out


def _evidence(rule: _Rule, history: Evidence, reasons: list[_Reason]) -> Evidence:
    dates = [d for d in [history.date, *(r.date for r in reasons)] if d is not None]
    because = "; ".join(r.text for r in reasons)
    return Evidence(
        text=f"{history.text} counted as active {rule.label}: {because}",
        date=max(dates) if dates else None,
        source=history.source,
        # a derived fact is only as strong as what it rests on
        from_text=history.from_text or all(r.from_text for r in reasons),
        from_order=history.from_order or all(r.from_order for r in reasons),
    )


def derive_active_cancer(facts: Facts) -> Facts:
    """Add prostate-cancer / breast-cancer where a history code comes with evidence of active disease."""
    histories = [h for h in HISTORIES if h in facts.concepts]
    if not histories:
        return facts
    other_primary = any(c in facts.concepts for c in ACTIVE_PRIMARIES)
    metastases = _metastases(facts)
    added: dict[str, tuple[Evidence, ...]] = {}
    issues: list[str] = []
    for rule in RULES:
        if rule.history not in facts.concepts or rule.active in facts.concepts:
            continue
        single_owner = not other_primary and len(histories) == 1
        reasons = _therapy(facts, rule.therapy_classes)
        if single_owner:
            reasons += _therapy(facts, SHARED_THERAPY)
        if rule.psa_counts:
            reasons += _psa(facts)
        if metastases and single_owner:
            reasons += metastases
        elif metastases and not other_primary and not reasons:
            issues.append(
                "metastatic disease with a history of more than one cancer ("
                + ", ".join(h.removeprefix("history-of-") for h in histories)
                + "): the primary is not assumed"
            )
        if reasons:
            added[rule.active] = tuple(_evidence(rule, ev, reasons) for ev in facts.concepts[rule.history])
    if not added and not issues:
        return facts
    concepts = dict(facts.concepts)
    concepts.update(added)
    return replace(
        facts,
        concepts=dict(sorted(concepts.items())),
        data_issues=tuple(dict.fromkeys([*facts.data_issues, *issues])),
    )

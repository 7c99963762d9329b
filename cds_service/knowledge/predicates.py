"""The closed predicate vocabulary that rule files use to state criteria over `Facts`.

A predicate is a one-key mapping, e.g. ``{concept: prostate-cancer}`` or
``{all: [{psa_at_least: 0.2}, {psa_rising: true}]}``. `check` validates a predicate tree at load
time (unknown names or ids -> error messages naming the path); `evaluate` answers it for a patient and
collects the evidence lines that made it true, for the card detail. Business-rules style: the rule
data may only use what this module declares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from cds_service.knowledge import vocabulary as voc
from cds_service.knowledge.risk import assess_risk, t_category
from cds_service.model import Evidence, Facts, ImagingFact, Measurement, MedicationFact

CURRENT_MED_WINDOW_DAYS = 180  # a completed/unknown-status request within this window still counts
# "T2" matches T2 and every sub-category (T2a-c); "T2a" matches only itself.
T_CATEGORIES = ("T0", "T1", "T1a", "T1b", "T1c", "T2", "T2a", "T2b", "T2c", "T3", "T3a", "T3b", "T4")


@dataclass(frozen=True)
class Match:
    ok: bool
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class Context:
    """What a predicate may need besides the facts: catalog id -> modality, for prior imaging."""

    modality_of: Mapping[str, str] = field(default_factory=dict)


# --- argument checkers: return an error message or None --------------------------------------


def _one_of(allowed: frozenset[str] | tuple[str, ...], what: str) -> Callable[[Any], str | None]:
    def check(arg: Any) -> str | None:
        if not isinstance(arg, str) or arg not in allowed:
            return f"unknown {what} {arg!r}"
        return None

    return check


def _list_of(allowed: frozenset[str] | tuple[str, ...], what: str) -> Callable[[Any], str | None]:
    def check(arg: Any) -> str | None:
        if not isinstance(arg, list) or not arg:
            return f"expected a non-empty list of {what} ids"
        bad = [a for a in arg if a not in allowed]
        return f"unknown {what} {bad!r}" if bad else None

    return check


def _number(arg: Any) -> str | None:
    ok = isinstance(arg, int | float) and not isinstance(arg, bool) and arg >= 0
    return None if ok else "expected a non-negative number"


def _true(arg: Any) -> str | None:
    return None if arg is True else "expected true"


def _med_window(arg: Any) -> str | None:
    if not isinstance(arg, dict) or set(arg) != {"classes", "days"}:
        return "expected {classes: [...], days: N}"
    return _list_of(voc.MED_CLASSES, "medication class")(arg["classes"]) or _number(arg["days"])


def _lab_threshold(arg: Any) -> str | None:
    if not isinstance(arg, dict) or set(arg) != {"lab", "value"}:
        return "expected {lab: <lab id>, value: N}"
    return _one_of(voc.LABS, "lab")(arg["lab"]) or _number(arg["value"])


def _receptor(arg: Any) -> str | None:
    if not isinstance(arg, dict) or len(arg) != 1:
        return "expected {er|pr|her2: positive|negative}"
    ((name, value),) = arg.items()
    if name not in voc.RECEPTORS or value not in voc.RECEPTOR_VALUES:
        return f"unknown receptor status {name}: {value}"
    return None


def _concept_window(arg: Any) -> str | None:
    if not isinstance(arg, dict) or set(arg) != {"concepts", "days"}:
        return "expected {concepts: [<concept id>, ...], days: N}"
    return _list_of(voc.CONCEPTS, "concept")(arg["concepts"]) or _number(arg["days"])


def _t_categories(arg: Any) -> str | None:
    return _list_of(T_CATEGORIES, "T category")(arg)


def _imaging(arg: Any) -> str | None:
    if not isinstance(arg, dict) or not {"modality", "findings_any"} <= set(arg):
        return "expected {modality: [...], findings_any: [...], within_days?: N, latest?: bool}"
    extra = set(arg) - {"modality", "findings_any", "within_days", "latest"}
    if extra:
        return f"unknown imaging keys {sorted(extra)}"
    return (
        _list_of(voc.MODALITIES, "modality")(arg["modality"])
        or _list_of(voc.FINDINGS, "imaging finding")(arg["findings_any"])
        or (_number(arg["within_days"]) if "within_days" in arg else None)
        or (None if isinstance(arg.get("latest", False), bool) else "latest must be true or false")
    )


def _imaging_done_arg(arg: Any) -> str | None:
    if not isinstance(arg, dict) or "modality" not in arg:
        return "expected {modality: [...], within_days?: N}"
    extra = set(arg) - {"modality", "within_days"}
    if extra:
        return f"unknown imaging_done keys {sorted(extra)}"
    return _list_of(voc.MODALITIES, "modality")(arg["modality"]) or (
        _number(arg["within_days"]) if "within_days" in arg else None
    )


_LEAVES: dict[str, Callable[[Any], str | None]] = {
    "always": _true,
    "concept": _one_of(voc.CONCEPTS, "concept"),
    "any_concept": _list_of(voc.CONCEPTS, "concept"),
    "med_class": _one_of(voc.MED_CLASSES, "medication class"),
    "any_med_class": _list_of(voc.MED_CLASSES, "medication class"),
    "treated_with_med_class": _list_of(voc.MED_CLASSES, "medication class"),
    "med_started_within_days": _med_window,
    "procedure": _one_of(voc.PROCEDURE_CONCEPTS, "procedure concept"),
    "any_procedure": _list_of(voc.PROCEDURE_CONCEPTS, "procedure concept"),
    "lab_above_ref": _one_of(voc.LABS, "lab"),
    "lab_below": _lab_threshold,
    "psa_at_least": _number,
    "psa_below": _number,
    "psa_above": _number,
    "psa_rising": _true,
    "psa_above_nadir": _number,
    "psa_count_at_least": _number,
    "stage_in": _list_of(voc.STAGE_GROUPS, "stage group"),
    "stage_known": _true,
    "risk_group_in": _list_of(voc.RISK_GROUPS, "risk group"),
    "risk_group_known": _true,
    "t_category_in": _t_categories,
    "diagnosed_within_days": _concept_window,
    "diagnosed_over_days_ago": _concept_window,
    "receptor": _receptor,
    "imaging": _imaging,
    "imaging_done": _imaging_done_arg,
}
PREDICATE_NAMES = frozenset(_LEAVES) | {"all", "any", "not"}


def check(pred: Any, path: str) -> list[str]:
    """Return every problem in a predicate tree, each prefixed with its path in the file."""
    if not isinstance(pred, dict) or len(pred) != 1:
        return [f"{path}: a predicate must be a mapping with exactly one key"]
    ((name, arg),) = pred.items()
    here = f"{path}.{name}"
    if name in ("all", "any"):
        if not isinstance(arg, list) or not arg:
            return [f"{here}: expected a non-empty list of predicates"]
        return [e for i, sub in enumerate(arg) for e in check(sub, f"{here}[{i}]")]
    if name == "not":
        return check(arg, here)
    checker = _LEAVES.get(name)
    if checker is None:
        return [f"{here}: unknown predicate {name!r} (known: {', '.join(sorted(PREDICATE_NAMES))})"]
    problem = checker(arg)
    return [f"{here}: {problem}"] if problem else []


# --- evaluation -----------------------------------------------------------------------------


def evaluate(pred: Mapping[str, Any], facts: Facts, ctx: Context | None = None) -> Match:
    ((name, arg),) = pred.items()
    ctx = ctx or Context()
    if name == "all":
        evidence: list[str] = []
        for sub in arg:
            m = evaluate(sub, facts, ctx)
            if not m.ok:
                return Match(False)
            evidence.extend(m.evidence)
        return Match(True, _dedupe(evidence))
    if name == "any":
        hits = [m for m in (evaluate(sub, facts, ctx) for sub in arg) if m.ok]
        return Match(bool(hits), _dedupe([e for m in hits for e in m.evidence]))
    if name == "not":
        return Match(not evaluate(arg, facts, ctx).ok)
    return _EVALUATORS[name](arg, facts, ctx)


def _dedupe(lines: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(lines))


def _d(value: date | None) -> str:
    return f" on {value.isoformat()}" if value else ""


_TEXT_ORIGIN = {"Condition": "problem text", "DiagnosticReport": "report text"}


def evidence_line(ev: Evidence) -> str:
    """One card line per piece of evidence, saying where a fact came from when it is not the chart's
    coded data: the order's indication, or free text read by NLP (problem or report text)."""
    if ev.from_order:  # dated today by definition: the date adds nothing, the provenance does
        return f"from the order's indication: {ev.text}"
    if ev.from_text:
        origin = _TEXT_ORIGIN.get((ev.source or "").split("/")[0], "free text")
        return f"from {origin}{_d(ev.date)}: {ev.text}"
    return f"{ev.text}{_d(ev.date)}"


def _concepts(ids: list[str], facts: Facts) -> Match:
    found = [c for c in ids if facts.has(c)]
    lines = [evidence_line(ev) for c in found for ev in facts.concepts[c]] or found
    return Match(bool(found), _dedupe(lines))


def current_medications(facts: Facts) -> list[MedicationFact]:
    def current(m: MedicationFact) -> bool:
        if m.permanent or m.status in voc.ONGOING_MED_STATUSES:
            return True
        recent = m.start is not None and (facts.as_of - m.start).days <= CURRENT_MED_WINDOW_DAYS
        return m.status in voc.RECENT_MED_STATUSES and recent

    return [m for m in facts.medications if current(m)]


def treated_medications(facts: Facts) -> list[MedicationFact]:
    """Current or past therapy: every record that says the drug was given, stopped included."""
    return [m for m in facts.medications if m.permanent or m.status in voc.TREATED_MED_STATUSES]


def _med_line(m: MedicationFact) -> str:
    if m.label:  # e.g. "bilateral orchiectomy on 2024-03-01 (surgical castration)"
        return f"{m.label}{_d(m.start)} ({m.ingredient.replace('-', ' ')})"
    since = f" since {m.start.isoformat()}" if m.start else ""
    return f"{m.ingredient} ({', '.join(sorted(m.classes))}, {m.status}){since}"


def _meds(classes: list[str], facts: Facts) -> Match:
    meds = [m for m in current_medications(facts) if m.classes & set(classes)]
    return Match(bool(meds), tuple(_med_line(m) for m in meds))


def _treated_with(classes: list[str], facts: Facts, _ctx: Context) -> Match:
    meds = [m for m in treated_medications(facts) if m.classes & set(classes)]
    return Match(bool(meds), _dedupe([_med_line(m) for m in meds]))


def course_start(med: MedicationFact, facts: Facts) -> date | None:
    """First dose of the uninterrupted course `med` belongs to. Each dose, cycle or refill of a
    therapy is its own record (administrations, per-cycle orders): an earlier record of the same
    ingredient less than CURRENT_MED_WINDOW_DAYS before is the same therapy, not a new start."""
    if med.start is None:
        return None
    earlier = sorted(
        {m.start for m in treated_medications(facts) if m.ingredient == med.ingredient and m.start},
        reverse=True,
    )
    start = med.start
    for when in earlier:
        if when < start and (start - when).days > CURRENT_MED_WINDOW_DAYS:
            break
        start = min(start, when)
    return start


def _med_started(arg: Mapping[str, Any], facts: Facts, _ctx: Context) -> Match:
    lines = []
    for m in current_medications(facts):
        start = course_start(m, facts)
        if not m.classes & set(arg["classes"]) or start is None:
            continue
        days = (facts.as_of - start).days
        if 0 <= days <= arg["days"]:
            lines.append(f"{_med_line(replace(m, start=start))}: started {days} days ago")
    return Match(bool(lines), _dedupe(lines))


def _procedures(ids: list[str], facts: Facts) -> Match:
    hits = [p for p in facts.procedures if p.concept in ids]
    return Match(bool(hits), tuple(f"{p.concept.replace('-', ' ')}{_d(p.date)}" for p in hits))


def _latest(series: tuple[Measurement, ...]) -> Measurement | None:
    return series[-1] if series else None


def _lab_line(name: str, m: Measurement) -> str:
    ref = f" (reference upper limit {m.ref_high:g})" if m.ref_high is not None else ""
    return f"{name.upper()} {m.value:g} {m.unit}{ref}{_d(m.date)}"


def _lab_above(lab: str, facts: Facts, _ctx: Context) -> Match:
    m = _latest(facts.labs.get(lab, ()))
    if m is None or m.ref_high is None or not m.value > m.ref_high:
        return Match(False, ())
    return Match(True, (_lab_line(lab, m),))


def _lab_below(arg: Mapping[str, Any], facts: Facts, _ctx: Context) -> Match:
    m = _latest(facts.labs.get(arg["lab"], ()))
    if m is None or not m.value < arg["value"]:
        return Match(False, ())
    return Match(True, (_lab_line(arg["lab"], m),))


def _psa_line(m: Measurement) -> str:
    return f"PSA {m.value:g} ng/mL{_d(m.date)}"


def _psa_cmp(test: Callable[[float, float], bool]) -> Callable[[Any, Facts, Context], Match]:
    def ev(arg: float, facts: Facts, _ctx: Context) -> Match:
        m = _latest(facts.psa)
        if m is None or not test(m.value, arg):
            return Match(False, ())
        return Match(True, (_psa_line(m),))

    return ev


def _psa_rising(_arg: Any, facts: Facts, _ctx: Context) -> Match:
    ok = len(facts.psa) >= 2 and facts.psa[-1].value > facts.psa[-2].value
    lines = (f"PSA rising: {_psa_line(facts.psa[-2])} then {_psa_line(facts.psa[-1])}",) if ok else ()
    return Match(ok, lines)


def _psa_nadir(arg: float, facts: Facts, _ctx: Context) -> Match:
    if len(facts.psa) < 2:
        return Match(False)
    nadir = min(facts.psa[:-1], key=lambda m: m.value)
    ok = facts.psa[-1].value >= nadir.value + arg
    line = f"{_psa_line(facts.psa[-1])}, nadir {nadir.value:g} ng/mL{_d(nadir.date)}"
    return Match(ok, (line,) if ok else ())


def _psa_count(arg: float, facts: Facts, _ctx: Context) -> Match:
    return Match(len(facts.psa) >= arg)


def _written(facts: Facts, *keys: str) -> list[str]:
    """Staging values read from written notation, for the card: 'Gleason grade group 1 and TNM T1c,
    read from the text "..."' (one line per quoted text)."""
    by_quote: dict[str, list[str]] = {}
    for key in keys:
        evidence = facts.staging_evidence.get(key)
        if evidence is not None and evidence.from_text:
            label, _, quote = evidence.text.partition(", read from the text ")
            by_quote.setdefault(quote, []).append(label)
    return [
        f"{' and '.join(labels)}, read from the text {quote}" if quote else " and ".join(labels)
        for quote, labels in by_quote.items()
    ]


def _stage_in(arg: list[str], facts: Facts, _ctx: Context) -> Match:
    ok = facts.stage_group in arg
    line = "; ".join([f"stage group {facts.stage_group}", *_written(facts, "stage_group")])
    return Match(ok, (line,) if ok else ())


def _risk_in(arg: list[str], facts: Facts, _ctx: Context) -> Match:
    risk = assess_risk(facts)
    ok = risk.group in arg
    line = "; ".join([f"{risk.group} risk ({', '.join(risk.reasons)})", *_written(facts, "grade_group", "T")])
    return Match(ok, (line,) if ok else ())


def _t_in(arg: list[str], facts: Facts, _ctx: Context) -> Match:
    t = t_category(facts)
    ok = t is not None and any(want in (f"T{t[0]}", f"T{t[0]}{t[1]}") for want in arg)
    line = "; ".join([f"T category {facts.tnm.get('T')}", *_written(facts, "T")])
    return Match(ok, (line,) if ok else ())


def diagnosis_date(concepts: list[str], facts: Facts) -> date | None:
    """When the chart first records the cancer: the earliest dated evidence of any of `concepts`
    (e.g. the cancer and its "history of" code) or of its staging (grade group, TNM, stage group,
    which are recorded at diagnosis). The order's own indication is dated today by definition and
    says nothing about when the disease was found."""
    dates = [e.date for c in concepts for e in facts.concepts.get(c, ()) if e.date and not e.from_order]
    dates += [e.date for e in facts.staging_evidence.values() if e.date]
    return min(dates) if dates else None


def _diagnosis_age(arg: Mapping[str, Any], facts: Facts) -> tuple[int | None, str]:
    when = diagnosis_date(arg["concepts"], facts)
    if when is None:
        return None, ""
    days = (facts.as_of - when).days
    return days, f"cancer first recorded on {when.isoformat()} ({days} days ago)"


def _diagnosed_within(arg: Mapping[str, Any], facts: Facts, _ctx: Context) -> Match:
    """Recorded and dated no more than `days` ago; an undated diagnosis is not recent (unknown)."""
    days, line = _diagnosis_age(arg, facts)
    ok = days is not None and days <= arg["days"]
    return Match(ok, (line,) if ok else ())


def _diagnosed_over(arg: Mapping[str, Any], facts: Facts, _ctx: Context) -> Match:
    """Dated more than `days` ago; an undated diagnosis is not old either (unknown)."""
    days, line = _diagnosis_age(arg, facts)
    ok = days is not None and days > arg["days"]
    return Match(ok, (line,) if ok else ())


def _receptor_is(arg: Mapping[str, str], facts: Facts, _ctx: Context) -> Match:
    ((name, value),) = arg.items()
    ok = facts.receptors.get(name) == value
    return Match(ok, (f"{name.upper()} {value}",) if ok else ())


def _studies(arg: Mapping[str, Any], facts: Facts, ctx: Context) -> list[ImagingFact]:
    wanted = set(arg["modality"])
    studies = [
        s for s in facts.imaging if s.procedure in wanted or ctx.modality_of.get(s.procedure) in wanted
    ]
    if "within_days" in arg:
        studies = [s for s in studies if s.date and (facts.as_of - s.date).days <= arg["within_days"]]
    return studies


def _imaging_done(arg: Mapping[str, Any], facts: Facts, ctx: Context) -> Match:
    """A study of the modality is on record (report or completed procedure), whatever it found:
    "no PSMA PET on record" must not depend on the report being coded."""
    studies = _studies(arg, facts, ctx)
    lines = [f"{_MODALITY_LABEL.get(s.procedure, s.procedure)}{_d(s.date)} on record" for s in studies]
    return Match(bool(studies), _dedupe(lines))


def _imaging_hit(arg: Mapping[str, Any], facts: Facts, ctx: Context) -> Match:
    studies = _studies(arg, facts, ctx)
    if arg.get("latest") and studies:
        dated = [(s.date, s) for s in studies if s.date is not None]
        studies = [max(dated, key=lambda pair: pair[0])[1]] if dated else studies[-1:]
    hits = [s for s in studies if s.findings & set(arg["findings_any"])]
    return Match(bool(hits), tuple(_imaging_line(s) for s in hits))


_MODALITY_LABEL = {
    "bone-scan": "bone scan",
    "ct": "CT",
    "mri": "MRI",
    "psma-pet": "PSMA PET",
    "fdg-pet": "FDG PET",
    "other-pet": "PET",
    "spect": "SPECT",
}


def _imaging_line(s: ImagingFact) -> str:
    findings = ", ".join(sorted(s.findings))
    if s.from_text:
        # "read from the CT report of 2026-11-09: 'New lytic lesions ...' (bone-metastases, new-lesions)"
        when = f" of {s.date.isoformat()}" if s.date else ""
        label = _MODALITY_LABEL.get(s.procedure, s.procedure)
        return f"read from the {label} report{when}: {s.conclusion or ''} ({findings})"
    return f"{s.procedure}{_d(s.date)}: {findings}" + (f" ({s.conclusion})" if s.conclusion else "")


_EVALUATORS: dict[str, Callable[[Any, Facts, Context], Match]] = {
    "always": lambda _a, _f, _c: Match(True),
    "concept": lambda a, f, _c: _concepts([a], f),
    "any_concept": lambda a, f, _c: _concepts(a, f),
    "med_class": lambda a, f, _c: _meds([a], f),
    "any_med_class": lambda a, f, _c: _meds(a, f),
    "treated_with_med_class": _treated_with,
    "med_started_within_days": _med_started,
    "procedure": lambda a, f, _c: _procedures([a], f),
    "any_procedure": lambda a, f, _c: _procedures(a, f),
    "lab_above_ref": _lab_above,
    "lab_below": _lab_below,
    "psa_at_least": _psa_cmp(lambda v, t: v >= t),
    "psa_below": _psa_cmp(lambda v, t: v < t),
    "psa_above": _psa_cmp(lambda v, t: v > t),
    "psa_rising": _psa_rising,
    "psa_above_nadir": _psa_nadir,
    "psa_count_at_least": _psa_count,
    "stage_in": _stage_in,
    "stage_known": lambda _a, f, _c: Match(f.stage_group is not None),
    "risk_group_in": _risk_in,
    "risk_group_known": lambda _a, f, _c: Match(assess_risk(f).group is not None),
    "t_category_in": _t_in,
    "diagnosed_within_days": _diagnosed_within,
    "diagnosed_over_days_ago": _diagnosed_over,
    "receptor": _receptor_is,
    "imaging": _imaging_hit,
    "imaging_done": _imaging_done,
}


def describe(pred: Mapping[str, Any]) -> str:
    """Render a predicate in words for rule pages and docs."""
    ((name, arg),) = pred.items()
    if name in ("all", "any"):
        joiner = " AND " if name == "all" else " OR "
        return "(" + joiner.join(describe(p) for p in arg) + ")"
    if name == "not":
        return f"NOT {describe(arg)}"
    if name == "always":
        return "always"
    if isinstance(arg, list):
        arg = ", ".join(str(a) for a in arg)
    elif isinstance(arg, dict):
        arg = ", ".join(f"{k}: {v}" for k, v in arg.items())
    return f"{name.replace('_', ' ')}: {arg}"

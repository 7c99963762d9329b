"""Stage group, TNM categories, Gleason grade group, and mCODE HistoryOfMetastaticCancer.

Read the ways EHRs record them:
- Observations selected by code (mCODE TNMStageGroup / TNM category profiles with SNOMED or
  deprecated LOINC codes, ProstateGleasonGradeGroup, Gleason score) whose value is a SNOMED AJCC
  or ISUP code from cards/valuesets, an AJCC code (http://cancerstaging.org, e.g. "3C", "cT2b"), or
  written notation ("Stage IIA", "cT2b", "Gleason 3+4=7") in valueString / value text;
- Observations whose code is text only ("Clinical stage", "Gleason score"; selected by
  selection.py as STAGING_TEXT);
- `Condition.stage` of a counted breast or prostate cancer Condition: `summary` (coded or text) and
  the `assessment` Observations it references.

An answer *code* that is not recognised leaves the field unset and is reported, never replaced by a
reading of its display; text is read only when the value carries no standard code. Facts read from
text carry `Evidence(from_text=True)` quoting the original string. The latest dated value wins; two
different values on that date are a contradiction, reported and not resolved. A TNM M1 value and a
HistoryOfMetastaticCancer `true` add the metastatic-disease concept; `false` is kept as a negation
for the consistency check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cds_service.facts import stage_notation as notation
from cds_service.facts._util import Partial, add_evidence, codings, freeze, ref
from cds_service.facts.conditions import condition_date, counts
from cds_service.facts.labs import RESULT_STATUSES, observation_date
from cds_service.facts.selection import Hit, is_valid
from cds_service.knowledge.valuesets import LOINC, SNOMED, ValueSets, canonical_system
from cds_service.model import Evidence, Resource

TNM_SETS = {"tnm-t": "T", "tnm-n": "N", "tnm-m": "M"}
GLEASON_SETS = frozenset({"gleason-grade-group", "gleason-score"})
STAGING_SETS = frozenset({"stage-group", *TNM_SETS, *GLEASON_SETS, notation.STAGING_TEXT})
# Conditions whose stage the rules read: a stage recorded on another cancer must not stage these
STAGED_CANCERS = frozenset({"prostate-cancer", "breast-cancer", "inflammatory-breast-cancer"})
_QUOTE_MAX = 80


# --- small readers -----------------------------------------------------------------------------


def _has_standard_code(concept: Any) -> bool:
    """A coding in a system whose codes we match: its meaning is the code, not the text."""
    for coding in codings(concept):
        system = canonical_system(coding.get("system"))
        coded = isinstance(coding.get("code"), str) and bool(coding["code"].strip())
        if coded and (system in (SNOMED, LOINC) or system in notation.AJCC_SYSTEMS):
            return True
    return False


def _value_text(obs: Mapping[str, Any]) -> str | None:
    """valueString, or the text of a value CodeableConcept that has no standard code."""
    if isinstance(obs.get("valueString"), str) and obs["valueString"].strip():
        return str(obs["valueString"])
    value = obs.get("valueCodeableConcept")
    if not _has_standard_code(value):
        return notation.concept_text(value)
    return None


def _ajcc_codes(concept: Any) -> list[str]:
    return [
        str(c["code"])
        for c in codings(concept)
        if isinstance(c.get("system"), str)
        and c["system"].strip() in notation.AJCC_SYSTEMS
        and isinstance(c.get("code"), str)
    ]


def _coded_stage(concept: Any, valuesets: ValueSets) -> str | None:
    for label in valuesets.value_in("stage-group-values", concept):
        group = notation.vocabulary_stage(str(label))
        if group:
            return group
    for code in _ajcc_codes(concept):
        group = notation.ajcc_stage(code)
        if group:
            return group
    return None


def _coded_category(concept: Any, category: str, valuesets: ValueSets) -> str | None:
    for label in valuesets.value_in("tnm-values", concept):
        if str(label).startswith(category):
            return str(label)
    for code in _ajcc_codes(concept):
        ajcc = notation.ajcc_category(code, category)
        if ajcc:
            return ajcc
    return None


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _QUOTE_MAX else text[: _QUOTE_MAX - 1] + "…"


# --- collecting readings -----------------------------------------------------------------------


@dataclass
class _Readings:
    stage: list[tuple[date | None, str, Evidence]] = field(default_factory=list)
    tnm: dict[str, list[tuple[date | None, str, Evidence]]] = field(
        default_factory=lambda: {"T": [], "N": [], "M": []}
    )
    grade: list[tuple[date | None, int, Evidence]] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)

    def add_stage(self, label: str, when: date | None, source: str | None, text: str | None = None) -> None:
        self.stage.append((when, label, _evidence(f"Stage {label}", when, source, text)))

    def add_category(
        self, label: str, when: date | None, source: str | None, text: str | None = None
    ) -> None:
        self.tnm[label[0]].append((when, label, _evidence(f"TNM {label}", when, source, text)))

    def add_grade(self, group: int, when: date | None, source: str | None, text: str | None = None) -> None:
        self.grade.append((when, group, _evidence(f"Gleason grade group {group}", when, source, text)))

    def read_text(self, text: str, when: date | None, source: str | None, gleason: bool = False) -> bool:
        """Every stage, category and grade the text states; False when it states none."""
        found = False
        stage = notation.parse_stage(text)
        if stage:
            self.add_stage(stage, when, source, text)
            found = True
        for label in notation.parse_tnm(text).values():
            self.add_category(label, when, source, text)
            found = True
        grade = notation.parse_grade(text, gleason_context=gleason)
        if grade.group:
            self.add_grade(grade.group, when, source, text)
            found = True
        elif grade.problem:
            self.issues.append(f"grade{_on(when)} ({source}): {grade.problem}; not used")
        return found


def _evidence(label: str, when: date | None, source: str | None, text: str | None) -> Evidence:
    if text is None:
        return Evidence(label, when, source)
    return Evidence(f'{label}, read from the text "{_quote(text)}"', when, source, from_text=True)


def _on(when: date | None) -> str:
    return f" on {when.isoformat()}" if when else ""


def _why(obs: Resource, text: str | None) -> str:
    if text:
        return f'text "{_quote(text)}" not understood'
    if any(k.startswith("value") for k in obs):
        return "value code not recognised"
    return "no value"


def _read_stage_observation(obs: Resource, out: _Readings, valuesets: ValueSets) -> None:
    when, source = observation_date(obs), ref(obs)
    value = obs.get("valueCodeableConcept")
    label = _coded_stage(value, valuesets)
    if label:
        out.add_stage(label, when, source)
        return
    text = None if _has_standard_code(value) else _value_text(obs)
    if text and notation.parse_stage(text):
        out.read_text(text, when, source)
        return
    out.issues.append(f"stage group{_on(when)} ({source}): {_why(obs, text)}; stage not used")


def _read_category_observation(obs: Resource, category: str, out: _Readings, valuesets: ValueSets) -> None:
    when, source = observation_date(obs), ref(obs)
    value = obs.get("valueCodeableConcept")
    label = _coded_category(value, category, valuesets)
    if label:
        out.add_category(label, when, source)
        return
    text = None if _has_standard_code(value) else _value_text(obs)
    if text:
        label = notation.parse_tnm(text).get(category) or notation.ajcc_category(text.strip(), category)
        if label:
            out.add_category(label, when, source, text)
            return
    out.issues.append(f"TNM {category} category{_on(when)} ({source}): {_why(obs, text)}; not used")


def _read_gleason_observation(obs: Resource, out: _Readings, valuesets: ValueSets) -> None:
    """ISUP answer code, written Gleason / grade group, or a numeric Gleason total."""
    when, source = observation_date(obs), ref(obs)
    value = obs.get("valueCodeableConcept")
    coded = valuesets.value_in("gleason-grade-group-values", value)
    if coded:
        out.add_grade(int(coded[0]), when, source)
        return
    problem = "value code not recognised" if _has_standard_code(value) else None
    text = None if problem else _value_text(obs)
    if text:
        reading = notation.parse_grade(text, gleason_context=True)
        if reading.group:
            out.add_grade(reading.group, when, source, text)
            return
        problem = reading.problem or f'text "{_quote(text)}" not understood'
    elif problem is None:
        total = obs.get("valueInteger")
        if total is None and isinstance(obs.get("valueQuantity"), Mapping):
            total = obs["valueQuantity"].get("value")
        if isinstance(total, int | float) and not isinstance(total, bool) and float(total).is_integer():
            group = notation.grade_from_total(int(total))
            if group:
                out.add_grade(group, when, source)
                return
            if int(total) == 7:
                problem = "Gleason score 7 without its patterns (3+4 or 4+3) is ambiguous"
    detail = f" ({problem})" if problem else ""
    out.issues.append(f"Gleason result{_on(when)} ({source}) does not give a grade group{detail}; not used")


def _read_any(obs: Resource, out: _Readings, valuesets: ValueSets, from_text_code: bool) -> bool:
    """A staging Observation known only by its text code or by a Condition.stage reference: its
    value may be a stage, a category or a grade; False when nothing was read."""
    when, source = observation_date(obs), ref(obs)
    value = obs.get("valueCodeableConcept")
    code_text = notation.concept_text(obs.get("code"))
    quoted = code_text if from_text_code else None
    label = _coded_stage(value, valuesets)
    if label:
        out.add_stage(label, when, source, quoted)
        return True
    for category in ("T", "N", "M"):
        label = _coded_category(value, category, valuesets)
        if label:
            out.add_category(label, when, source, quoted)
            return True
    coded = valuesets.value_in("gleason-grade-group-values", value)
    if coded:
        out.add_grade(int(coded[0]), when, source, quoted)
        return True
    value_text = _value_text(obs)
    text = " ".join(t for t in (code_text, value_text) if t)
    if from_text_code and not notation.is_cancer_staging_text(text):
        return False  # "CKD stage 4", a bare "Stage": not a cancer stage we may use
    if _has_standard_code(value):
        out.issues.append(f"staging result{_on(when)} ({source}): value code not recognised; not used")
        return False
    if not text:
        return False
    gleason = "gleason" in (code_text or "").lower()
    if gleason and value_text is None and isinstance(obs.get("valueInteger"), int):
        text = f"{text} {obs['valueInteger']}"
    return out.read_text(text, when, source, gleason=gleason)


def _focus(obs: Resource) -> set[str]:
    """ "Condition/x" of each Observation.focus (read only to leave out another cancer's staging)."""
    focus = obs.get("focus")
    out = set()
    for item in focus if isinstance(focus, list) else ():
        reference = item.get("reference") if isinstance(item, Mapping) else None
        parts = reference.rstrip("/").split("/") if isinstance(reference, str) else []
        if len(parts) >= 2 and parts[-2] == "Condition":
            out.add(f"Condition/{parts[-1]}")
    return out


def _reference_key(reference: Any) -> str | None:
    """ "Observation/x" of a relative or absolute reference."""
    if not isinstance(reference, Mapping) or not isinstance(reference.get("reference"), str):
        return None
    parts = reference["reference"].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "Observation":
        return f"Observation/{parts[-1]}"
    return None


def _read_condition_stage(
    condition: Resource,
    out: _Readings,
    valuesets: ValueSets,
    observation: Any,
    already_read: frozenset[str],
) -> None:
    when, source = condition_date(condition), ref(condition)
    subject = (condition.get("subject") or {}).get("reference")
    for stage in condition.get("stage") or ():
        if not isinstance(stage, Mapping):
            continue
        summary = stage.get("summary")
        label = _coded_stage(summary, valuesets)
        if label:
            out.add_stage(label, when, source)
        elif _has_standard_code(summary):
            out.issues.append(f"stage of {source}: summary code not recognised; stage not used")
        elif notation.concept_text(summary):
            text = str(notation.concept_text(summary))
            if not out.read_text(text, when, source):
                out.issues.append(f'stage of {source}: text "{_quote(text)}" not understood; not used')
        for assessment in stage.get("assessment") or ():
            key = _reference_key(assessment)
            if key is None or key in already_read:
                continue  # read with the staging Observations already
            obs = observation(key)
            # only an assessment of the same subject, with a usable status, validated like any read
            if (
                obs is None
                or (obs.get("subject") or {}).get("reference") != subject
                or obs.get("status") not in RESULT_STATUSES
                or not is_valid(obs)
            ):
                continue
            _read_any(obs, out, valuesets, from_text_code=False)


def _latest(values: list, what: str, issues: list[str]) -> tuple[Any, Evidence | None]:
    """Latest value, or None (with an issue) when the latest date carries two different values."""
    if not values:
        return None, None
    latest = max((d or date.min) for d, _, _ in values)
    at = [(v, e) for d, v, e in values if (d or date.min) == latest]
    distinct = {v for v, _ in at}
    if len(distinct) > 1:
        when = latest.isoformat() if latest != date.min else "an unknown date"
        issues.append(f"{what}: conflicting values {sorted(map(str, distinct))} on {when}; not used")
        return None, None
    at.sort(key=lambda item: item[1].from_text)  # a coded record of the same value is the better evidence
    return at[0]


def extract_staging(
    hits: Iterable[Hit],
    conditions: Iterable[Hit],
    valuesets: ValueSets,
    observations: Iterable[Resource] = (),
) -> Partial:
    """`hits`: selected Observations; `conditions`: selected Conditions (for Condition.stage);
    `observations`: every Observation of the record, to resolve Condition.stage.assessment."""
    out = _Readings()
    concepts: dict[str, list[Evidence]] = {}
    negations: dict[str, list[Evidence]] = {}
    read: set[str] = set()
    conditions = tuple(conditions)
    # staging whose focus is another primary cancer of the patient must not stage breast / prostate
    other_cancers = {
        ref(h.resource) for h in conditions if "other-cancer" in h.ids and not h.ids & STAGED_CANCERS
    }
    for hit in hits:
        obs = hit.resource
        if obs.get("status") not in RESULT_STATUSES:
            continue
        key = ref(obs)
        about = _focus(obs) & other_cancers if other_cancers and hit.ids & STAGING_SETS else set()
        if about:
            out.issues.append(f"staging {key} is about another cancer ({', '.join(sorted(about))}); not used")
            continue
        if "stage-group" in hit.ids:
            _read_stage_observation(obs, out, valuesets)
        for set_id, category in TNM_SETS.items():
            if set_id in hit.ids:
                _read_category_observation(obs, category, out, valuesets)
        if hit.ids & GLEASON_SETS:
            _read_gleason_observation(obs, out, valuesets)
        if notation.STAGING_TEXT in hit.ids:
            _read_any(obs, out, valuesets, from_text_code=True)
        if hit.ids & STAGING_SETS and key:
            read.add(key)
        if "history-of-metastatic-cancer" in hit.ids:
            when = observation_date(obs)
            flag = obs.get("valueBoolean")
            if not isinstance(flag, bool):
                out.issues.append(
                    f"history of metastatic cancer{_on(when)} ({key}) has no yes/no value; not used"
                )
                continue
            history = Evidence(f"History of metastatic cancer: {'yes' if flag else 'no'}", when, key)
            add_evidence(concepts if flag else negations, "metastatic-disease", history)

    by_ref: dict[str, Resource] | None = None

    def observation(key: str) -> Resource | None:
        nonlocal by_ref
        if by_ref is None:  # built only when a Condition.stage references an Observation
            by_ref = {
                f"Observation/{o['id']}": o
                for o in observations
                if isinstance(o, Mapping) and isinstance(o.get("id"), str)
            }
        return by_ref.get(key)

    for hit in conditions:
        if hit.ids & STAGED_CANCERS and hit.resource.get("stage") and counts(hit.resource):
            _read_condition_stage(hit.resource, out, valuesets, observation, frozenset(read))

    issues = out.issues
    evidence_of: dict[str, Evidence] = {}
    stage_group, evidence = _latest(out.stage, "stage group", issues)
    if evidence and stage_group:
        evidence_of["stage_group"] = evidence
    tnm: dict[str, str] = {}
    for category, values in out.tnm.items():
        label, evidence = _latest(values, f"TNM {category}", issues)
        if label and evidence:
            tnm[category] = label
            evidence_of[category] = evidence
            if category == "M" and label.startswith("M1"):
                add_evidence(concepts, "metastatic-disease", evidence)
    grade_group, evidence = _latest(out.grade, "Gleason grade group", issues)
    if evidence and grade_group:
        evidence_of["grade_group"] = evidence
    return Partial(
        concepts=freeze(concepts),
        stage_group=stage_group,
        tnm=tnm,
        grade_group=grade_group,
        staging_evidence=evidence_of,
        issues=tuple(issues),
        negations=freeze(negations),
    )

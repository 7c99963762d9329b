"""Rule predicates in words, and the value sets (concepts and their codes) a rule reads.

For rule pages: a clinician reads "has any of: Bone pain, Back pain" rather than a predicate
expression, and can open the codes each concept stands for. `predicates.describe` stays the compact
one-line form; this module is the readable, nested one (no Python reprs).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cds_service.knowledge import Knowledge


@dataclass(frozen=True)
class Clause:
    """One line of a rule in words; `parts` holds the sub-clauses of an all / any / not."""

    text: str
    parts: tuple[Clause, ...] = ()


_MODALITY = {
    "bone-scan": "bone scan",
    "ct": "CT",
    "mri": "MRI",
    "psma-pet": "PSMA PET",
    "fdg-pet": "FDG-PET",
    "other-pet": "other PET",
    "spect": "SPECT",
    "radiograph": "radiograph",
    "ultrasound": "ultrasound",
    "mammography": "mammography",
}


def _title(k: Knowledge, concept: str) -> str:
    sets = getattr(k.valuesets, "sets", {}) or {}
    vs = sets.get(concept)
    return vs.title if vs else concept.replace("-", " ")


def _titles(k: Knowledge, ids: Any) -> str:
    return ", ".join(_title(k, str(i)) for i in (ids if isinstance(ids, list) else [ids]))


def _words(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_words(v) for v in value)
    if isinstance(value, Mapping):
        return "; ".join(f"{str(key).replace('_', ' ')} {_words(v)}" for key, v in value.items())
    return str(value).replace("-", " ") if isinstance(value, str) else str(value)


def _imaging(arg: Mapping[str, Any]) -> str:
    modality = " or ".join(_MODALITY.get(m, m) for m in arg.get("modality", []))
    findings = " or ".join(str(f).replace("-", " ") for f in arg.get("findings_any", []))
    which = "the latest " if arg.get("latest") else "a "
    within = f" within {arg['within_days']} days" if "within_days" in arg else ""
    return f"{which}{modality} report{within} shows {findings}"


def _leaf(k: Knowledge, name: str, arg: Any) -> str:
    if name == "always":
        return "always"
    if name == "concept":
        return f"has {_title(k, arg)}"
    if name == "any_concept":
        return f"has any of: {_titles(k, arg)}"
    if name in ("procedure", "any_procedure"):
        ids = arg if isinstance(arg, list) else [arg]
        return "had " + " or ".join(str(a).replace("-", " ") for a in ids)
    if name in ("med_class", "any_med_class"):
        return f"is on {_words(arg)} therapy"
    if name == "treated_with_med_class":
        return f"is or was treated with {_words(arg)} therapy"
    if name == "med_started_within_days":
        return f"{_words(arg.get('classes', []))} therapy started or changed within {arg.get('days')} days"
    if name == "lab_above_ref":
        return f"{_title(k, arg)} above the reference range"
    if name == "lab_below":
        return f"{_title(k, arg.get('lab', ''))} below {arg.get('value')}"
    if name == "imaging":
        return _imaging(arg)
    if name == "receptor":
        return "; ".join(f"{str(r).upper()} {v}" for r, v in arg.items())
    labels = {
        "psa_at_least": "latest PSA at least {} ng/mL",
        "psa_below": "latest PSA below {} ng/mL",
        "psa_above_nadir": "PSA more than {} ng/mL above its nadir",
        "psa_count_at_least": "at least {} PSA results",
        "stage_in": "stage group {}",
        "risk_group_in": "risk group {}",
    }
    if name in labels:
        return labels[name].format(_words(arg))
    fixed = {"psa_rising": "PSA rising", "stage_known": "stage group recorded",
             "risk_group_known": "risk group known (grade group, PSA and T category)"}
    return fixed.get(name, f"{name.replace('_', ' ')}: {_words(arg)}")


def explain(pred: Mapping[str, Any], k: Knowledge) -> Clause:
    ((name, arg),) = pred.items()
    if name == "all":
        return Clause("all of:", tuple(explain(p, k) for p in arg))
    if name == "any":
        return Clause("any of:", tuple(explain(p, k) for p in arg))
    if name == "not":
        inner = explain(arg, k)
        return Clause("not: " + inner.text, inner.parts)
    return Clause(_leaf(k, name, arg))


def _leaves(pred: Any) -> Iterator[tuple[str, Any]]:
    if not isinstance(pred, Mapping):
        return
    for name, arg in pred.items():
        if name in ("all", "any"):
            for p in arg:
                yield from _leaves(p)
        elif name == "not":
            yield from _leaves(arg)
        else:
            yield name, arg


def _candidates(name: str, arg: Any) -> list[str]:
    ids = arg if isinstance(arg, list) else [arg]
    if name in ("concept", "any_concept"):
        return [str(i) for i in ids]
    if name in ("procedure", "any_procedure"):
        return [x for i in ids for x in (str(i), f"{i}-procedure")]
    if name == "lab_above_ref":
        return [str(arg)]
    if name == "lab_below":
        return [str(arg.get("lab"))]
    if name.startswith("psa_"):
        return ["psa"]
    if name.startswith("stage_"):
        return ["stage-group", "stage-group-values"]
    if name.startswith("risk_group_"):
        return ["gleason-grade-group", "gleason-grade-group-values", "gleason-score", "psa", "tnm-t"]
    if name == "receptor":
        return [f"{r}-status" for r in arg]
    if name == "imaging":
        return [f"imaging-{m}" for m in arg.get("modality", [])] + [
            f"finding-{f}" for f in arg.get("findings_any", [])
        ]
    return []


def concepts_of(k: Knowledge, *preds: Any) -> list[str]:
    """The value-set ids the predicates read, in first-use order (only those that exist)."""
    sets = getattr(k.valuesets, "sets", {}) or {}
    found = [c for pred in preds for name, arg in _leaves(pred) for c in _candidates(name, arg)]
    return [c for c in dict.fromkeys(found) if c in sets]


_MED_LEAVES = ("med_class", "any_med_class", "treated_with_med_class", "med_started_within_days")


def med_classes_of(*preds: Any) -> list[str]:
    """The medication classes the predicates read (their ingredients are listed in medications.yaml)."""
    found: list[str] = []
    for pred in preds:
        for name, arg in _leaves(pred):
            if name not in _MED_LEAVES:
                continue
            classes = arg.get("classes", []) if isinstance(arg, Mapping) else arg
            found += [str(c) for c in (classes if isinstance(classes, list) else [classes])]
    return list(dict.fromkeys(found))

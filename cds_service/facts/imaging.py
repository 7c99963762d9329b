"""Prior imaging: DiagnosticReports (and completed Procedures) coded as imaging -> ImagingFact.

The modality comes from the report/procedure code (CPT, HCPCS tracer, LOINC radiology, SNOMED),
or from code.text when the report's code is text only. Findings come from
DiagnosticReport.conclusionCode; a report without a usable conclusionCode is read from its text
(`conclusion`, then `presentedForm` text/plain or text/html) with cds_service.facts.text, and its
ImagingFact is marked `from_text` and quotes the sentences read. A PET coded with a PSMA or FDG
tracer code is typed by the tracer; a PET without one stays `other-pet`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from cds_service.facts._util import (
    Partial,
    add_evidence,
    concept_label,
    first_date,
    freeze,
    period_start,
    ref,
)
from cds_service.facts.procedures import performed
from cds_service.facts.report_text import report_texts
from cds_service.facts.selection import Hit, has_usable_coding
from cds_service.facts.text import report_findings
from cds_service.knowledge.valuesets import ValueSets
from cds_service.model import Evidence, ImagingFact, Resource

# most specific first: a report coded both "PET/CT" and "PSMA tracer" is a PSMA PET
MODALITY_PRECEDENCE = (
    "psma-pet",
    "fdg-pet",
    "other-pet",
    "spect",
    "bone-scan",
    "mri",
    "ct",
    "mammography",
    "ultrasound",
    "radiograph",
)
FINDING_SETS = {
    "finding-bone-metastases": "bone-metastases",
    "finding-no-bone-metastases": "no-bone-metastases",
    "finding-visceral-metastases": "visceral-metastases",
    "finding-stable": "stable",
    "finding-progression": "progression",
    "finding-new-lesions": "new-lesions",
    "finding-equivocal": "equivocal",
}
REPORT_STATUSES = frozenset({"final", "amended", "corrected", "appended"})
# Concepts a report conclusion can state that the rules read wherever they are recorded: a cord
# compression seen on MRI is the red flag whether or not a Condition was coded for it.
REPORT_CONCEPTS = frozenset({"cord-compression"})


def modality(ids: frozenset[str]) -> str | None:
    present = {i.removeprefix("imaging-") for i in ids if i.startswith("imaging-")}
    return next((m for m in MODALITY_PRECEDENCE if m in present), None)


def _findings(report: Resource, procedure: str, valuesets: ValueSets) -> tuple[frozenset[str], list[str]]:
    found: set[str] = set()
    for concept in report.get("conclusionCode") or ():
        for set_id in valuesets.ids_for_concept(concept):
            if set_id in FINDING_SETS:
                found.add(FINDING_SETS[set_id])
    issues = []
    if "no-bone-metastases" in found and procedure != "bone-scan":
        # the only "absent" code is generic ("clinical finding absent"): it means "no bone
        # metastases" only on a bone scan
        found.discard("no-bone-metastases")
    if {"bone-metastases", "no-bone-metastases"} <= found:
        found -= {"bone-metastases", "no-bone-metastases"}
        issues.append(f"{ref(report)}: conclusion codes say both bone metastases and none; not used")
    return frozenset(found), issues


def _report_concepts(report: Resource, valuesets: ValueSets) -> set[str]:
    """Concepts a coded report conclusion states that the rules read from any source (red flags)."""
    found: set[str] = set()
    for concept in report.get("conclusionCode") or ():
        found |= valuesets.ids_for_concept(concept) & REPORT_CONCEPTS
    return found


def _from_text(report: Resource, procedure: str, valuesets: ValueSets) -> tuple[ImagingFact | None, Partial]:
    """Findings read from the report text; None when there is no text to read."""
    texts, skipped = report_texts(report)
    if not texts:
        # a report with nothing readable must leave a trace, not count as "no findings"
        issues = [f"{ref(report) or 'DiagnosticReport'}: {why}" for why in skipped]
        return None, Partial(issues=tuple(issues))
    issues = []
    reading = report_findings("\n\n".join(texts), valuesets.text_targets)
    findings = set(reading.findings)
    if "no-bone-metastases" in findings and procedure != "bone-scan":
        # as for codes: "no bone metastases" is read from bone scans only (the rules compare a
        # negative bone scan with a positive CT)
        findings.discard("no-bone-metastases")
    when = report_date(report)
    quotes = " ".join(f"'{q}'" for q in reading.quotes) or None
    fact = ImagingFact(procedure, when, frozenset(findings), quotes, ref(report), from_text=True)
    concepts: dict[str, list[Evidence]] = {}
    for concept, sentence in reading.concepts:
        if concept in REPORT_CONCEPTS:
            add_evidence(concepts, concept, Evidence(f"'{sentence}'", when, ref(report), from_text=True))
    return fact, Partial(concepts=freeze(concepts), issues=tuple(issues))


def report_date(report: Resource) -> date | None:
    return first_date(
        report.get("effectiveDateTime"), period_start(report.get("effectivePeriod")), report.get("issued")
    )


def extract_imaging(reports: Iterable[Hit], procedures: Iterable[Hit], valuesets: ValueSets) -> Partial:
    facts: list[ImagingFact] = []
    issues: list[str] = []
    concepts: dict[str, list[Evidence]] = {}
    for hit in reports:
        report = hit.resource
        procedure = modality(hit.ids)
        if procedure is None or report.get("status") not in REPORT_STATUSES:
            continue
        when = report_date(report)
        if not any(has_usable_coding(c) for c in report.get("conclusionCode") or ()):
            fact, partial = _from_text(report, procedure, valuesets)
            issues += partial.issues
            for concept, evidence in partial.concepts.items():
                for e in evidence:
                    add_evidence(concepts, concept, e)
            if fact is not None:
                facts.append(fact)
                continue
        findings, found_issues = _findings(report, procedure, valuesets)
        issues += found_issues
        for concept in _report_concepts(report, valuesets):
            add_evidence(concepts, concept, Evidence(concept_label_of_report(report), when, ref(report)))
        conclusion = report.get("conclusion") if isinstance(report.get("conclusion"), str) else None
        facts.append(ImagingFact(procedure, when, findings, conclusion, ref(report)))
    for hit in procedures:
        procedure = modality(hit.ids)
        if procedure is None or hit.resource.get("status") != "completed":
            continue
        facts.append(ImagingFact(procedure, performed(hit.resource), frozenset(), None, ref(hit.resource)))
    # the same resource can arrive twice (prefetch and a fallback query overlap)
    facts = list(dict.fromkeys(facts))
    facts.sort(key=lambda f: (f.date or date.min, f.procedure))
    return Partial(imaging=tuple(facts), issues=tuple(issues), concepts=freeze(concepts))


def concept_label_of_report(report: Resource) -> str:
    labels = [concept_label(c) for c in report.get("conclusionCode") or ()]
    return "; ".join(labels) or "report conclusion"

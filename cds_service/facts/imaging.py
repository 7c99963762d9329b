"""Prior imaging: DiagnosticReports (and completed Procedures) coded as imaging -> ImagingFact.

The modality comes from the report/procedure code (CPT, HCPCS tracer, LOINC radiology, SNOMED);
findings only from DiagnosticReport.conclusionCode, never from conclusion text. A PET coded with a
PSMA or FDG tracer code is typed by the tracer; a PET without one stays `other-pet`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from cds_service.facts._util import Partial, first_date, period_start, ref
from cds_service.facts.procedures import performed
from cds_service.facts.selection import Hit
from cds_service.knowledge.valuesets import ValueSets
from cds_service.model import ImagingFact, Resource

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
}
REPORT_STATUSES = frozenset({"final", "amended", "corrected", "appended"})


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


def extract_imaging(reports: Iterable[Hit], procedures: Iterable[Hit], valuesets: ValueSets) -> Partial:
    facts: list[ImagingFact] = []
    issues: list[str] = []
    for hit in reports:
        report = hit.resource
        procedure = modality(hit.ids)
        if procedure is None or report.get("status") not in REPORT_STATUSES:
            continue
        when = first_date(
            report.get("effectiveDateTime"), period_start(report.get("effectivePeriod")), report.get("issued")
        )
        findings, found_issues = _findings(report, procedure, valuesets)
        issues += found_issues
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
    return Partial(imaging=tuple(facts), issues=tuple(issues))

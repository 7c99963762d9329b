"""Deterministic synthetic hook requests for the benchmark.

One metastatic-prostate patient (C61 on ADT, bone metastases, a PSA series, CMP labs, prior bone
scan and CT) whose chart is padded with the everyday noise a real EHR export carries (unrelated
problems, medications, procedures and reports), so the service has to select what its rules read.

The prefetch keys and query templates are NOT hard-coded: `build_request` takes the service's
discovery entry (GET /cds-services) and fills every template from the generated chart, the way a
FHIR server would answer it. `DEFAULT_DISCOVERY` is only used when no service is available (the
floor alone), so that the floor still receives a realistically shaped body.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

Resource = dict[str, Any]

# The chart's "today"; the service is started with CDS_TODAY set to it. The fixtures' bundles
# carry the same date, so the fixture-case arm is rated as in tests/e2e.
AS_OF = date(2026, 11, 15)
PATIENT_ID = "bench-prostate-1"
USER_ID = "Practitioner/bench-oncologist"
ENCOUNTER_ID = "bench-encounter-1"

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
UCUM = "http://unitsofmeasure.org"

# Workload name -> total resources besides the Patient. "typical" pins 60 Observations (issue 5).
SIZES: dict[str, int] = {"small": 5, "typical": 150, "large": 2000}
SCALING_SIZES: tuple[int, ...] = (100, 1000, 5000)

# Used only when no running service can be asked (floor-only runs); mirrors what a service of
# this kind declares. Real runs always use the service's own discovery.
DEFAULT_DISCOVERY: dict[str, Any] = {
    "hook": "order-select",
    "id": "imaging-appropriateness",
    "prefetch": {
        "patient": "Patient/{{context.patientId}}",
        "conditions": "Condition?patient={{context.patientId}}",
        "observations": "Observation?patient={{context.patientId}}",
        "medications": "MedicationRequest?patient={{context.patientId}}",
        "procedures": "Procedure?patient={{context.patientId}}",
        "reports": "DiagnosticReport?patient={{context.patientId}}",
    },
}


@dataclass
class Chart:
    """A generated patient record: the Patient plus resources grouped by type, in a stable order."""

    patient: Resource
    resources: dict[str, list[Resource]] = field(default_factory=dict)

    def count(self) -> int:
        """Resources besides the Patient."""
        return sum(len(v) for v in self.resources.values())

    def of_type(self, resource_type: str) -> list[Resource]:
        if resource_type == "Patient":
            return [self.patient]
        return self.resources.get(resource_type, [])


# --- resource builders ----------------------------------------------------------------------


def _cc(*codings: tuple[str, str, str], text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": s, "code": c, "display": d} for s, c, d in codings]}
    if text:
        out["text"] = text
    return out


def _ref(patient_id: str = PATIENT_ID) -> dict[str, str]:
    return {"reference": f"Patient/{patient_id}"}


def _day(days_ago: int) -> str:
    return (AS_OF - timedelta(days=days_ago)).isoformat()


def _patient() -> Resource:
    return {
        "resourceType": "Patient",
        "id": PATIENT_ID,
        "meta": {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]},
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": "BENCH-0001"}],
        "active": True,
        "name": [{"use": "official", "family": "Bench", "given": ["Synthetic"]}],
        "gender": "male",
        "birthDate": "1954-03-14",
        "address": [{"city": "Springfield", "state": "MA", "postalCode": "01101", "country": "US"}],
    }


def _condition(
    rid: str,
    codings: Iterable[tuple[str, str, str]],
    onset_days_ago: int,
    category: str = "problem-list-item",
) -> Resource:
    return {
        "resourceType": "Condition",
        "id": rid,
        "clinicalStatus": _cc(
            ("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active")
        ),
        "verificationStatus": _cc(
            ("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed")
        ),
        "category": [_cc(("http://terminology.hl7.org/CodeSystem/condition-category", category, category))],
        "code": _cc(*codings),
        "subject": _ref(),
        "onsetDateTime": _day(onset_days_ago),
        "recordedDate": _day(onset_days_ago),
    }


def _observation(
    rid: str,
    loinc: tuple[str, str],
    value: float,
    unit: str,
    days_ago: int,
    category: str = "laboratory",
    ref_range: tuple[float, float] | None = None,
) -> Resource:
    obs: Resource = {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "category": [_cc(("http://terminology.hl7.org/CodeSystem/observation-category", category, category))],
        "code": _cc((LOINC, loinc[0], loinc[1]), text=loinc[1]),
        "subject": _ref(),
        "effectiveDateTime": f"{_day(days_ago)}T08:30:00Z",
        "issued": f"{_day(days_ago)}T12:00:00Z",
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }
    if ref_range:
        obs["referenceRange"] = [
            {
                "low": {"value": ref_range[0], "unit": unit, "system": UCUM, "code": unit},
                "high": {"value": ref_range[1], "unit": unit, "system": UCUM, "code": unit},
            }
        ]
    return obs


def _medication(rid: str, rxnorm: tuple[str, str], days_ago: int, status: str = "active") -> Resource:
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": _cc((RXNORM, rxnorm[0], rxnorm[1]), text=rxnorm[1]),
        "subject": _ref(),
        "authoredOn": _day(days_ago),
        "dosageInstruction": [{"text": "as directed"}],
    }


def _procedure(rid: str, snomed: tuple[str, str], days_ago: int) -> Resource:
    return {
        "resourceType": "Procedure",
        "id": rid,
        "status": "completed",
        "code": _cc((SNOMED, snomed[0], snomed[1]), text=snomed[1]),
        "subject": _ref(),
        "performedDateTime": _day(days_ago),
    }


def _report(
    rid: str,
    loinc: tuple[str, str],
    days_ago: int,
    conclusion: str,
    conclusion_codes: Iterable[tuple[str, str]] = (),
) -> Resource:
    report: Resource = {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "status": "final",
        "category": [_cc(("http://terminology.hl7.org/CodeSystem/v2-0074", "RAD", "Radiology"))],
        "code": _cc((LOINC, loinc[0], loinc[1]), text=loinc[1]),
        "subject": _ref(),
        "effectiveDateTime": f"{_day(days_ago)}T10:00:00Z",
        "issued": f"{_day(days_ago)}T16:00:00Z",
        "conclusion": conclusion,
    }
    codes = [_cc((SNOMED, c, d)) for c, d in conclusion_codes]
    if codes:
        report["conclusionCode"] = codes
    return report


# --- the chart ------------------------------------------------------------------------------

_CLINICAL_CONDITIONS = [
    [(ICD10, "C61", "Malignant neoplasm of prostate"), (SNOMED, "399068003", "Malignant tumor of prostate")],
    [
        (ICD10, "C79.51", "Secondary malignant neoplasm of bone"),
        (SNOMED, "94222008", "Secondary malignant neoplasm of bone"),
    ],
    [(SNOMED, "314994000", "Metastasis from malignant tumor of prostate")],
    [(ICD10, "Z19.1", "Hormone sensitive malignancy status")],
    [(SNOMED, "12584003", "Bone pain")],
]
_NOISE_CONDITIONS = [
    (SNOMED, "38341003", "Hypertensive disorder"),
    (SNOMED, "55822004", "Hyperlipidemia"),
    (SNOMED, "44054006", "Diabetes mellitus type 2"),
    (SNOMED, "40055000", "Chronic sinusitis"),
    (SNOMED, "195662009", "Acute viral pharyngitis"),
    (SNOMED, "10509002", "Acute bronchitis"),
    (SNOMED, "239872002", "Osteoarthritis of hip"),
    (SNOMED, "73595000", "Stress"),
]
_PSA = ("2857-1", "Prostate specific Ag [Mass/volume] in Serum or Plasma")
_CMP = [  # (loinc, display, unit, low, high, typical value)
    ("6768-6", "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 40, 129, 180.0),
    (
        "1920-8",
        "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma",
        "U/L",
        10,
        40,
        28.0,
    ),
    ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 7, 56, 31.0),
    ("1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", "mg/dL", 0.1, 1.2, 0.7),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.7, 1.3, 1.1),
    (
        "33914-3",
        "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, Plasma or Blood "
        "by Creatinine-based formula (MDRD)",
        "mL/min/{1.73_m2}",
        60,
        120,
        68.0,
    ),
]
_TESTOSTERONE = ("2986-8", "Testosterone [Mass/volume] in Serum or Plasma")
_CLINICAL_MEDS = [
    ("752899", "0.25 ML Leuprolide Acetate 30 MG/ML Prefilled Syringe"),
    ("1307298", "enzalutamide"),
]
_NOISE_MEDS = [
    ("314076", "lisinopril 10 MG Oral Tablet"),
    ("617312", "atorvastatin 10 MG Oral Tablet"),
    ("860975", "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet"),
    ("313782", "Acetaminophen 325 MG Oral Tablet"),
    ("197361", "amlodipine 5 MG Oral Tablet"),
]
_CLINICAL_PROCEDURES = [
    ("65575008", "Biopsy of prostate"),
    ("1217123003", "Radiotherapy course of treatment"),
]
_NOISE_PROCEDURES = [
    ("430193006", "Medication reconciliation (procedure)"),
    ("710824005", "Assessment of health and social care needs (procedure)"),
    ("171207006", "Depression screening (procedure)"),
    ("428191000124101", "Documentation of current medications (procedure)"),
]
_BONE_SCAN = ("25031-6", "NM Bone Views")
_CT_CAP = ("72254-6", "CT Chest and Abdomen and Pelvis W contrast IV")
_CHEST_XR = ("36643-5", "XR Chest 2 Views")

# Share of each type in the padded chart; Observations dominate, as in real exports.
_MIX = (
    ("Observation", 0.40),
    ("Condition", 0.20),
    ("MedicationRequest", 0.17),
    ("Procedure", 0.13),
    ("DiagnosticReport", 0.10),
)


def _split(total: int) -> dict[str, int]:
    counts = {t: int(total * share) for t, share in _MIX}
    counts["Condition"] += total - sum(counts.values())  # rounding remainder; keeps 150 -> 60 Observations
    return counts


def generate_chart(total: int, seed: int = 5) -> Chart:
    """A metastatic-prostate chart with exactly `total` resources besides the Patient.

    `total == 5` gives the minimal chart (cancer, bone metastases, one PSA, ADT, one bone scan);
    larger totals follow `_MIX` (150 -> 60 Observations), clinical resources first, then noise.
    """
    if total < 5:
        raise ValueError("a chart needs at least 5 resources")
    rng = random.Random(seed)
    chart = Chart(patient=_patient())
    if total == 5:
        chart.resources = {
            "Condition": [
                _condition("cond-0", _CLINICAL_CONDITIONS[0], 900),
                _condition("cond-1", _CLINICAL_CONDITIONS[1], 400),
            ],
            "Observation": [_observation("obs-0", _PSA, 4.2, "ng/mL", 30)],
            "MedicationRequest": [_medication("med-0", _CLINICAL_MEDS[0], 380)],
            "DiagnosticReport": [
                _report(
                    "dr-0",
                    _BONE_SCAN,
                    400,
                    "Multiple osseous metastases.",
                    [("94222008", "Secondary malignant neoplasm of bone")],
                )
            ],
        }
        return chart
    counts = _split(total)
    chart.resources = {
        "Condition": _conditions(counts["Condition"], rng),
        "Observation": _observations(counts["Observation"], rng),
        "MedicationRequest": _medications(counts["MedicationRequest"], rng),
        "Procedure": _procedures(counts["Procedure"], rng),
        "DiagnosticReport": _reports(counts["DiagnosticReport"], rng),
    }
    return chart


def _conditions(n: int, rng: random.Random) -> list[Resource]:
    out = [
        _condition(f"cond-{i}", codings, 900 - 120 * i) for i, codings in enumerate(_CLINICAL_CONDITIONS[:n])
    ]
    for i in range(len(out), n):
        noise = _NOISE_CONDITIONS[rng.randrange(len(_NOISE_CONDITIONS))]
        out.append(_condition(f"cond-{i}", [noise], rng.randrange(30, 7000), category="encounter-diagnosis"))
    return out


def _observations(n: int, rng: random.Random) -> list[Resource]:
    """A monthly PSA series (a sixth), a few testosterone levels, then CMP panels of the labs the rules read.

    Every Observation carries a code the rules read, so a prefetch template filtered by code still
    delivers all of them ("full prefetch"): chart noise lives in the other resource types.
    """
    out: list[Resource] = []
    n_psa = max(1, n // 6)
    for i in range(n_psa):  # rising on ADT: nadir then climbing, oldest first
        months_ago = n_psa - i
        psa = round(0.8 + 0.35 * max(0, 12 - months_ago) + rng.uniform(-0.05, 0.05), 2)
        out.append(_observation(f"psa-{i}", _PSA, psa, "ng/mL", 30 * months_ago, ref_range=(0.0, 4.0)))
    for i in range(max(0, min(4, n - len(out)))):
        level = round(rng.uniform(18, 40), 1)  # castrate range on ADT
        out.append(_observation(f"testo-{i}", _TESTOSTERONE, level, "ng/dL", 20 + 90 * i))
    i = 0
    while len(out) < n:
        loinc, display, unit, low, high, value = _CMP[i % len(_CMP)]
        panel = i // len(_CMP)
        out.append(
            _observation(
                f"cmp-{i}",
                (loinc, display),
                round(value * rng.uniform(0.9, 1.1), 2),
                unit,
                15 + 45 * panel,
                ref_range=(low, high),
            )
        )
        i += 1
    return out


def _medications(n: int, rng: random.Random) -> list[Resource]:
    out = [_medication(f"med-{i}", rx, 380 - 200 * i) for i, rx in enumerate(_CLINICAL_MEDS[:n])]
    for i in range(len(out), n):
        rx = _NOISE_MEDS[rng.randrange(len(_NOISE_MEDS))]
        out.append(
            _medication(f"med-{i}", rx, rng.randrange(30, 4000), status=rng.choice(["active", "stopped"]))
        )
    return out


def _procedures(n: int, rng: random.Random) -> list[Resource]:
    out = [_procedure(f"proc-{i}", sn, 1000 - 300 * i) for i, sn in enumerate(_CLINICAL_PROCEDURES[:n])]
    for i in range(len(out), n):
        sn = _NOISE_PROCEDURES[rng.randrange(len(_NOISE_PROCEDURES))]
        out.append(_procedure(f"proc-{i}", sn, rng.randrange(10, 5000)))
    return out


def _reports(n: int, rng: random.Random) -> list[Resource]:
    clinical = [
        _report(
            "dr-0",
            _BONE_SCAN,
            400,
            "Multiple osseous metastases in spine and pelvis.",
            [("94222008", "Secondary malignant neoplasm of bone")],
        ),
        _report(
            "dr-1",
            _CT_CAP,
            120,
            "No visceral metastases. Sclerotic bone lesions stable.",
            [("359746009", "Patient's condition stable")],
        ),
    ]
    out = clinical[:n]
    for i in range(len(out), n):
        out.append(
            _report(f"dr-{i}", _CHEST_XR, rng.randrange(30, 4000), "No acute cardiopulmonary process.")
        )
    return out


def text_only_reports(chart: Chart, count: int = 3) -> Chart:
    """The same chart with its first `count` reports as radiology text only (no conclusionCode),
    as reports usually arrive: the service reads them with its clinical text reader (issue 8). The
    first also carries its text as a base64 presentedForm, the other shape feeds send."""
    texts = (
        "Stable osseous metastases in the spine and pelvis, no new lesions.",
        "No visceral metastases. Sclerotic bone lesions stable. New lytic lesion in T10, suspicious for "
        "metastasis.",
        "No acute cardiopulmonary process.",
    )
    resources = {k: [dict(r) for r in v] for k, v in chart.resources.items()}
    reports = resources.get("DiagnosticReport", [])[:count]
    for n, (report, text) in enumerate(zip(reports, texts, strict=False)):
        report.pop("conclusionCode", None)
        report["conclusion"] = text
        if n == 0:
            data = base64.b64encode(f"IMPRESSION: {text}".encode()).decode()
            report["presentedForm"] = [{"contentType": "text/plain", "data": data}]
    return Chart(chart.patient, resources)


def first_seen(chart: Chart, k: int) -> Chart:
    """The same chart as if never seen: another patient (id and every subject), and every resource
    id and every report text differs by `k`, so no content-keyed cache of the service (validation
    verdicts, text readings) can answer it: what an EHR sends for each new patient."""
    out = copy.deepcopy(chart)
    patient_id = f"{chart.patient['id']}-v{k}"
    out.patient["id"] = patient_id
    for resources in out.resources.values():
        for r in resources:
            r["id"] = f"{r['id']}-v{k}"
            if isinstance(r.get("subject"), dict):
                r["subject"] = _ref(patient_id)
            if isinstance(r.get("conclusion"), str):
                r["conclusion"] += f" Accession {k}."
                for form in r.get("presentedForm") or ():
                    data = base64.b64decode(form["data"]).decode() + f" Accession {k}."
                    form["data"] = base64.b64encode(data.encode()).decode()
    return out


TEXT_REASON = "New back pain, rule out progression of bone metastases"


# --- the draft order and the hook request ---------------------------------------------------


def draft_bone_scan(text_reason: bool = False, patient_id: str = PATIENT_ID) -> Resource:
    """An order-select draft: whole-body bone scan (CPT 78306), reason C61 with bone metastases
    (or, with `text_reason`, a reason given as text only, read by the text reader)."""
    order = {
        "resourceType": "ServiceRequest",
        "id": "bench-order-1",
        "status": "draft",
        "intent": "order",
        "category": [_cc((SNOMED, "363679005", "Imaging"))],
        "code": _cc((CPT, "78306", "Bone and/or joint imaging; whole body"), text="NM bone scan whole body"),
        "subject": _ref(patient_id),
        "encounter": {"reference": f"Encounter/{ENCOUNTER_ID}"},
        "authoredOn": AS_OF.isoformat(),
        "requester": {"reference": USER_ID},
        "reasonCode": [_cc((ICD10, "C61", "Malignant neoplasm of prostate"))],
    }
    if text_reason:
        order["reasonCode"] = [{"text": TEXT_REASON}]
    return order


_TOKEN = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")


def fill_template(template: str, context: Mapping[str, Any]) -> str:
    """Replace CDS Hooks 2.0 prefetch tokens; an unknown token is an error (the bench can't guess)."""
    user_id = str(context.get("userId", ""))
    user_type, _, user_ref_id = user_id.partition("/")
    users = {f"user{user_type}Id": user_ref_id} if user_ref_id else {}

    def one(match: re.Match[str]) -> str:
        token = match.group(1)
        if token.startswith("context."):
            value = context.get(token.removeprefix("context."))
            if isinstance(value, str | int | float):
                return str(value)
        elif token in users:
            return users[token]
        raise KeyError(f"cannot fill prefetch token {{{{{token}}}}}")

    return _TOKEN.sub(one, template)


def _token_match(resource: Resource, element: str, wanted: list[str]) -> bool:
    """FHIR token search on a CodeableConcept: `code` or `system|code`, comma = OR."""
    concept = resource.get(element)
    concepts = concept if isinstance(concept, list) else [concept]
    for cc in concepts:
        for coding in (cc or {}).get("coding", []):
            for w in wanted:
                system, bar, code = w.rpartition("|")
                if coding.get("code") == code and (not bar or not system or coding.get("system") == system):
                    return True
    return False


# Search parameters the bench understands; any other parameter is ignored (all resources of the
# type are returned), which over-serves rather than under-serves the service.
_CODE_ELEMENTS = {
    "Condition": "code",
    "Observation": "code",
    "Procedure": "code",
    "DiagnosticReport": "code",
    "MedicationRequest": "medicationCodeableConcept",
}


def search(chart: Chart, query: str) -> tuple[str, list[Resource] | Resource | None]:
    """Answer a filled read (`Patient/x`) or type search (`Type?params`) from the chart.

    Returns ("read", resource-or-None) or ("search", matching resources).
    """
    path, _, qs = query.lstrip("/").partition("?")
    parts = path.split("/")
    if len(parts) == 2 and not qs:
        found = next((r for r in chart.of_type(parts[0]) if r.get("id") == parts[1]), None)
        return "read", found
    resource_type = parts[0]
    matches = list(chart.of_type(resource_type))
    for name, value in parse_qsl(qs, keep_blank_values=True):
        wanted = value.split(",")
        if name in ("patient", "subject"):
            ids = {w.rpartition("/")[2] for w in wanted}
            if resource_type == "Patient":
                continue
            matches = [
                r for r in matches if r.get("subject", {}).get("reference", "").rpartition("/")[2] in ids
            ]
        elif name == "_id":
            matches = [r for r in matches if r.get("id") in wanted]
        elif name in ("code", "category") and resource_type in _CODE_ELEMENTS:
            element = _CODE_ELEMENTS[resource_type] if name == "code" else "category"
            matches = [r for r in matches if _token_match(r, element, wanted)]
        elif name == "status":
            matches = [r for r in matches if r.get("status") in wanted]
    return "search", matches


def searchset(
    resources: list[Resource],
    base: str = "http://bench.invalid/fhir",
    total: int | None = None,
    next_url: str | None = None,
) -> Resource:
    bundle: Resource = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources) if total is None else total,
        "entry": [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def prefetch_for(service: Mapping[str, Any], chart: Chart, context: Mapping[str, Any]) -> dict[str, Any]:
    """Every prefetch key of the discovery entry, answered from the chart as a FHIR server would."""
    out: dict[str, Any] = {}
    for key, template in (service.get("prefetch") or {}).items():
        kind, result = search(chart, fill_template(template, context))
        out[key] = result if kind == "read" else searchset(result)  # type: ignore[arg-type]
    return out


def hook_context(
    service: Mapping[str, Any], text_reason: bool = False, patient_id: str = PATIENT_ID
) -> dict[str, Any]:
    order = draft_bone_scan(text_reason, patient_id)
    context: dict[str, Any] = {
        "userId": USER_ID,
        "patientId": patient_id,
        "encounterId": ENCOUNTER_ID,
        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]},
    }
    if service.get("hook", "order-select") == "order-select":
        context["selections"] = [f"ServiceRequest/{order['id']}"]
    return context


def build_request(
    service: Mapping[str, Any],
    chart: Chart,
    *,
    prefetch: bool = True,
    fhir_server: str | None = None,
    hook_instance: str = "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    text_reason: bool = False,
) -> dict[str, Any]:
    """A CDS Hooks 2.0 call for `service` (a discovery entry) about the generated chart.

    With `prefetch=False` no prefetch is sent and the service must query `fhir_server`.
    """
    patient_id = str(chart.patient.get("id") or PATIENT_ID)
    context = hook_context(service, text_reason, patient_id)
    body: dict[str, Any] = {
        "hookInstance": hook_instance,
        "hook": service.get("hook", "order-select"),
        "context": context,
    }
    if fhir_server:
        body["fhirServer"] = fhir_server
        body["fhirAuthorization"] = {
            "access_token": "bench-not-a-secret",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "bench",
            "patient": patient_id,
        }
    if prefetch:
        body["prefetch"] = prefetch_for(service, chart, context)
    return body


def pick_service(discovery: Mapping[str, Any], preferred: str = "imaging-appropriateness") -> dict[str, Any]:
    """The discovery entry to benchmark: `preferred` if listed, else the first order-select service."""
    services = list(discovery.get("services") or [])
    for s in services:
        if s.get("id") == preferred:
            return dict(s)
    for s in services:
        if s.get("hook") == "order-select":
            return dict(s)
    raise LookupError("the service lists no order-select service in discovery")


# --- fixture cases (issue 11): the e2e fixtures as an EHR would send them -------------------------

CASES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "cases"


def case_requests(service: Mapping[str, Any], cases_dir: Path = CASES_DIR) -> dict[str, dict[str, Any]]:
    """case name -> a CDS Hooks call of `service`'s hook for every fixture case that has it, with
    prefetch filled from the case's bundle by the service's own templates (cds_service.replay)."""
    from cds_service import replay
    from cds_service.bundle_search import BundleStore

    hook = service.get("hook", "order-select")
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(cases_dir.glob("*.json")):
        case = json.loads(path.read_text(encoding="utf-8"))
        if hook not in (case.get("hooks") or ["order-select"]):
            continue
        call = replay.load_case(path)
        call.hook = hook
        request = replay.build_request(call)
        request["hookInstance"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-case/{path.stem}"))
        templates = service.get("prefetch") or {}
        out[path.stem] = replay.fill_prefetch(request, templates, BundleStore(call.bundle))
    return out

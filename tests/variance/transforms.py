"""Transformations: each re-encodes facts a chart already holds, or adds data the service must ignore.

A transformation is a pure function of `Inputs` (the patient bundle and the draft orders): it gets a
deep copy, changes it and returns it, or returns None when it is not meaningful for that chart (no
primary-cancer Condition to re-code, no PSA to re-unit, ...). A transformation that leaves the inputs
as they were is also skipped (see variants.py), so every variant really re-encodes something.
"""

from __future__ import annotations

import base64
import copy
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.variance import codes as C
from tests.variance.codes import ICD, LOINC, RXNORM, SCT, UCUM, Coding, coding
from tests.variance.harness import TODAY, Bundle, add_resource, resources

REPO = Path(__file__).resolve().parents[2]
Res = dict[str, Any]


@dataclass
class Inputs:
    bundle: Bundle
    orders: list[Res]

    @property
    def patient(self) -> Res:
        return next(r for r in resources(self.bundle, "Patient"))

    @property
    def patient_id(self) -> str:
        return str(self.patient["id"])


Transform = Callable[[Inputs], Inputs | None]


# --- reading codes ----------------------------------------------------------------------------------


def codings_of(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, Mapping):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, Mapping)]


def keys_of(concept: Any) -> set[tuple[str, str]]:
    return {(str(c.get("system")), str(c.get("code"))) for c in codings_of(concept)}


def site_of(condition: Mapping[str, Any]) -> str | None:
    for system, code in keys_of(condition.get("code")):
        if (system, code) in C.PRIMARY_CODES:
            return C.PRIMARY_CODES[(system, code)]
        if system == ICD:
            for prefix, site in C.PRIMARY_ICD_PREFIXES.items():
                if code.replace(".", "").startswith(prefix):
                    return site
    return None


def primary_conditions(bundle: Bundle) -> list[Res]:
    return [c for c in resources(bundle, "Condition") if site_of(c)]


def with_code(bundle: Bundle, rtype: str, keys: Iterable[tuple[str, str]]) -> list[Res]:
    wanted = set(keys)
    return [r for r in resources(bundle, rtype) if keys_of(r.get("code")) & wanted]


def concept(*cs: Coding, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [coding(c) for c in cs]}
    if text:
        out["text"] = text
    return out


def sites(bundle: Bundle) -> set[str]:
    return {s for c in primary_conditions(bundle) if (s := site_of(c))}


# --- the knowledge base's medication map (codes only: which RxNorm/SNOMED codes name an ingredient) -


@dataclass(frozen=True)
class DrugCodes:
    ingredient: str
    classes: frozenset[str]
    rxnorm_in: tuple[str, ...]
    snomed: tuple[str, ...]
    clinical: tuple[tuple[str, str, str], ...]  # (rxnorm code, tty, display) of single-ingredient drugs


@cache
def drug_map() -> dict[str, DrugCodes]:
    """Ingredient id -> its codes, from cards/medications.yaml (the catalogue is published-source data;
    the variants only pick codes from it, so they test that every code form reaches the rules)."""
    data = yaml.safe_load((REPO / "cards" / "medications.yaml").read_text()) or {}
    clinical: dict[str, list[tuple[str, str, str]]] = {}
    for drug in data.get("clinical_drugs") or []:
        ingredients = drug.get("ingredients") or []
        if len(ingredients) == 1 and drug.get("rxnorm"):
            clinical.setdefault(ingredients[0], []).append(
                (str(drug["rxnorm"]), str(drug.get("tty") or ""), str(drug.get("display") or ""))
            )
    out = {}
    for ing in data.get("ingredients") or []:
        out[ing["id"]] = DrugCodes(
            ing["id"],
            frozenset(ing.get("classes") or ()),
            tuple(str(c) for c in ing.get("rxnorm") or ()),
            tuple(str(c) for c in ing.get("snomed") or ()),
            tuple(clinical.get(ing["id"], ())),
        )
    return out


def ingredient_of(concept_: Any) -> DrugCodes | None:
    for system, code in keys_of(concept_):
        for drug in drug_map().values():
            if system == RXNORM and (code in drug.rxnorm_in or any(code == c[0] for c in drug.clinical)):
                return drug
            if system == SCT and code in drug.snomed:
                return drug
    return None


MED_TYPES = ("MedicationRequest", "MedicationStatement", "MedicationAdministration")
# Given by injection or infusion, so charted as administrations (oral agents are not).
INJECTABLE = frozenset(
    {
        "leuprolide",
        "goserelin",
        "degarelix",
        "triptorelin",
        "docetaxel",
        "cabazitaxel",
        "doxorubicin",
        "cyclophosphamide",
        "paclitaxel",
        "carboplatin",
        "trastuzumab",
        "pertuzumab",
        "pembrolizumab",
        "epirubicin",
        "fluorouracil",
    }
)
# Dosing interval used for administration series (days): 3-weekly chemotherapy, 12-weekly depot.
INTERVAL = {"adt": 84}
DEFAULT_INTERVAL = 21


def med_requests(bundle: Bundle) -> list[Res]:
    return [
        r for r in resources(bundle, "MedicationRequest") if ingredient_of(r.get("medicationCodeableConcept"))
    ]


# --- conditions ---------------------------------------------------------------------------------------


def _recode_primary(pick: Callable[[Res, str], dict[str, Any]]) -> Transform:
    def t(inp: Inputs) -> Inputs | None:
        conds = primary_conditions(inp.bundle)
        if not conds:
            return None
        for cond in conds:
            site = site_of(cond)
            assert site
            cond["code"] = pick(cond, site)
        return inp

    return t


def _icd_for(cond: Res, site: str) -> Coding:
    for c in codings_of(cond.get("code")):
        if c.get("system") == ICD and site_of({"code": {"coding": [c]}}) == site:
            return (ICD, str(c["code"]), str(c.get("display") or ""))
    for system, code in keys_of(cond.get("code")):
        if system == SCT and code in C.BREAST_ICD_FOR_SNOMED:
            return C.BREAST_ICD_FOR_SNOMED[code]
    return C.SITES[site].icd


def _snomed_for(cond: Res, site: str) -> Coding:
    for c in codings_of(cond.get("code")):
        if c.get("system") == SCT and (SCT, str(c.get("code"))) in C.PRIMARY_CODES:
            return (SCT, str(c["code"]), str(c.get("display") or ""))
    return C.SITES[site].snomed


cancer_icd_only = _recode_primary(lambda cond, site: concept(_icd_for(cond, site)))
cancer_snomed_only = _recode_primary(lambda cond, site: concept(_snomed_for(cond, site)))
cancer_icd_and_snomed = _recode_primary(
    lambda cond, site: concept(_icd_for(cond, site), _snomed_for(cond, site))
)
cancer_histology = _recode_primary(lambda cond, site: concept(C.SITES[site].histology))
cancer_histology_and_icd = _recode_primary(
    lambda cond, site: concept(C.SITES[site].histology, _icd_for(cond, site))
)
cancer_text_only = _recode_primary(lambda cond, site: {"text": C.SITES[site].text})


def active_disease_evidence(bundle: Bundle) -> bool:
    """Metastases, current systemic therapy or a rising marker after treatment: with these a history
    code (Z85.x) still means active cancer (issue 8, "What to build" 2)."""
    if with_code(
        bundle, "Condition", [(ICD, "C79.51"), (SCT, "94222008"), (SCT, "314994000"), (ICD, "R97.21")]
    ):
        return True
    if with_code(bundle, "Observation", [(SCT, "399387003")]):  # cM category charted (cM1 fixture)
        return True
    if any(r.get("status") == "active" for r in med_requests(bundle)):
        return True
    treated = with_code(bundle, "Procedure", [(SCT, "26294005"), (SCT, "1217123003"), (SCT, "448385000")])
    psa = sorted(_psa_values(bundle))
    return bool(treated) and len(psa) >= 2 and psa[-1][1] > psa[0][1]


def cancer_history_code(inp: Inputs) -> Inputs | None:
    if not active_disease_evidence(inp.bundle):
        return None
    return _recode_primary(lambda cond, site: concept(C.SITES[site].history))(inp)


def _all_condition_icd(change: Callable[[dict[str, Any]], None]) -> Transform:
    def t(inp: Inputs) -> Inputs | None:
        found = False
        for cond in resources(inp.bundle, "Condition"):
            for c in codings_of(cond.get("code")):
                if c.get("system") == ICD:
                    change(c)  # type: ignore[arg-type]
                    found = True
        return inp if found else None

    return t


def _undot(c: dict[str, Any]) -> None:
    c["code"] = str(c["code"]).replace(".", "")


def _who_system(c: dict[str, Any]) -> None:
    c["system"] = C.ICD_WHO


icd_undotted = _all_condition_icd(_undot)
icd_generic_system = _all_condition_icd(_who_system)


def _bone_mets(make: Callable[[], dict[str, Any]]) -> Transform:
    def t(inp: Inputs) -> Inputs | None:
        conds = with_code(inp.bundle, "Condition", [(ICD, "C79.51"), (SCT, "94222008")])
        for cond in conds:
            cond["code"] = make()
        return inp if conds else None

    return t


bone_mets_icd_only = _bone_mets(lambda: concept(C.BONE_METS_ICD))
bone_mets_snomed_only = _bone_mets(lambda: concept(C.BONE_METS_SCT))
bone_mets_both = _bone_mets(lambda: concept(C.BONE_METS_ICD, C.BONE_METS_SCT))

CONDITIONS: dict[str, Transform] = {
    "cancer-icd10cm-only": cancer_icd_only,
    "cancer-snomed-only": cancer_snomed_only,
    "cancer-icd10cm-and-snomed": cancer_icd_and_snomed,
    "cancer-histology-snomed": cancer_histology,
    "cancer-histology-snomed-and-icd10cm": cancer_histology_and_icd,
    "cancer-text-only": cancer_text_only,
    "cancer-history-code-with-active-disease": cancer_history_code,
    "icd10cm-undotted": icd_undotted,
    "icd10-generic-system-uri": icd_generic_system,
    "bone-mets-icd10cm-only": bone_mets_icd_only,
    "bone-mets-snomed-only": bone_mets_snomed_only,
    "bone-mets-icd10cm-and-snomed": bone_mets_both,
}


# --- symptoms -----------------------------------------------------------------------------------------


def symptom_conditions(bundle: Bundle) -> dict[str, list[Res]]:
    """Symptom name -> the Conditions that chart it."""
    out: dict[str, list[Res]] = {}
    for key, (name, _) in C.SYMPTOMS.items():
        found = with_code(bundle, "Condition", [key])
        if found:
            out[name] = found
    return out


def _symptom_recode(name: str, make: Callable[[Res], dict[str, Any]]) -> Transform:
    def t(inp: Inputs) -> Inputs | None:
        conds = symptom_conditions(inp.bundle).get(name)
        if not conds:
            return None
        for cond in conds:
            cond["code"] = make(cond)
        return inp

    return t


def _canonical_coding(name: str) -> Coding:
    key = next(k for k, (n, _) in C.SYMPTOMS.items() if n == name)
    cond_display = {
        "back-pain": "Backache",
        "weakness": "Muscle weakness",
        "headache": "Headache",
        "seizure": "Seizure",
        "weight-loss": "Weight loss",
        "bone-pain": "Bone pain",
        "cord-compression": "Unspecified cord compression",
    }[name]
    return (key[0], key[1], cond_display)


def _symptom_as_observation(name: str, loinc_symptom: bool) -> Transform:
    """The symptom charted as an Observation (exam finding / patient-reported symptom), not a Condition."""

    def t(inp: Inputs) -> Inputs | None:
        conds = symptom_conditions(inp.bundle).get(name)
        canonical = _canonical_coding(name)
        if not conds or canonical[0] != SCT:
            return None
        for cond in conds:
            obs: Res = {
                "resourceType": "Observation",
                "id": f"obs-{cond['id']}",
                "status": "final",
                "category": [concept((C.OBSERVATION_CATEGORY, "exam", "Exam"))],
                "subject": copy.deepcopy(cond["subject"]),
                "effectiveDateTime": cond.get("onsetDateTime") or cond.get("recordedDate"),
            }
            if loinc_symptom:
                obs["code"] = concept(C.SYMPTOM_LOINC)
                obs["valueCodeableConcept"] = concept(canonical)
            else:
                obs["code"] = concept(canonical)
                obs["valueBoolean"] = True
            _replace(inp.bundle, cond, obs)
        return inp

    return t


def _replace(bundle: Bundle, old: Res, new: Res) -> None:
    for entry in bundle["entry"]:
        if entry.get("resource") is old:
            entry["resource"] = new
            entry["fullUrl"] = f"https://ehr.example.org/fhir/{new['resourceType']}/{new['id']}"


def _sphincter_instead_of_weakness(alt: Coding) -> Transform:
    def t(inp: Inputs) -> Inputs | None:
        found = symptom_conditions(inp.bundle)
        if "weakness" not in found or "back-pain" not in found:
            return None
        for cond in found["weakness"]:
            cond["code"] = concept(alt)
        return inp

    return t


def symptom_transforms() -> dict[str, Transform]:
    out: dict[str, Transform] = {}
    for _key, (name, alternatives) in C.SYMPTOMS.items():
        for alt in alternatives:
            out[f"{name}-as-{alt[1]}"] = _symptom_recode(name, lambda cond, a=alt: concept(a))
        if alternatives:
            out[f"{name}-coded-twice"] = _symptom_recode(
                name, lambda cond, a=alternatives[0], n=name: concept(_canonical_coding(n), a)
            )
        if _key[0] == SCT:  # a finding (cord compression is a diagnosis, charted as a Condition)
            out[f"{name}-as-exam-observation"] = _symptom_as_observation(name, loinc_symptom=False)
            out[f"{name}-as-loinc-symptom-observation"] = _symptom_as_observation(name, loinc_symptom=True)
    for alt in C.SPHINCTER:
        out[f"sphincter-dysfunction-{alt[1]}-instead-of-weakness"] = _sphincter_instead_of_weakness(alt)
    return out


# --- medications ------------------------------------------------------------------------------------


def _recode_meds(pick: Callable[[DrugCodes, str], Coding | None]) -> Transform:
    def t(inp: Inputs) -> Inputs | None:
        changed = False
        for mr in med_requests(inp.bundle):
            drug = ingredient_of(mr["medicationCodeableConcept"])
            assert drug
            current = next(iter(keys_of(mr["medicationCodeableConcept"])))[1]
            new = pick(drug, current)
            if new is not None and new[1] != current:
                mr["medicationCodeableConcept"] = concept(new)
                changed = True
        return inp if changed else None

    return t


def _pick_in(drug: DrugCodes, current: str) -> Coding | None:
    return (RXNORM, drug.rxnorm_in[0], drug.ingredient) if drug.rxnorm_in else None


def _pick_tty(*ttys: str) -> Callable[[DrugCodes, str], Coding | None]:
    def pick(drug: DrugCodes, current: str) -> Coding | None:
        for code, tty, display in drug.clinical:
            if tty in ttys and code != current:
                return (RXNORM, code, display)
        return None

    return pick


def _pick_snomed(drug: DrugCodes, current: str) -> Coding | None:
    return (SCT, drug.snomed[0], drug.ingredient) if drug.snomed else None


def _med_reference(kind: str) -> Transform:
    """medicationReference instead of an inline code: a contained Medication, or a Medication resource
    in the bundle named `Medication/<id>` or by its `urn:uuid:` fullUrl."""

    def t(inp: Inputs) -> Inputs | None:
        mrs = med_requests(inp.bundle)
        if not mrs:
            return None
        for n, mr in enumerate(mrs, start=1):
            med = {
                "resourceType": "Medication",
                "id": f"med-{mr['id']}",
                "code": mr.pop("medicationCodeableConcept"),
            }
            if kind == "contained":
                med["id"] = f"m{n}"
                mr.setdefault("contained", []).append(med)
                mr["medicationReference"] = {"reference": f"#m{n}"}
            elif kind == "resource":
                add_resource(inp.bundle, med)
                mr["medicationReference"] = {"reference": f"Medication/{med['id']}"}
            else:
                urn = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, med['id'])}"
                add_resource(inp.bundle, med, full_url=urn)
                mr["medicationReference"] = {"reference": urn}
        return inp

    return t


def med_statement(inp: Inputs) -> Inputs | None:
    mrs = med_requests(inp.bundle)
    if not mrs:
        return None
    for mr in mrs:
        status = {"active": "active", "completed": "completed", "stopped": "stopped"}.get(
            mr.get("status"), "active"
        )
        statement: Res = {
            "resourceType": "MedicationStatement",
            "id": f"ms-{mr['id']}",
            "status": status,
            "medicationCodeableConcept": mr["medicationCodeableConcept"],
            "subject": mr["subject"],
            "effectivePeriod": {"start": mr.get("authoredOn")},
            "dateAsserted": mr.get("authoredOn"),
        }
        _replace(inp.bundle, mr, statement)
    return inp


def _series(start: date, every: int) -> list[date]:
    out, day = [], start
    while day <= TODAY:
        out.append(day)
        day += timedelta(days=every)
    return out


def med_administrations(inp: Inputs) -> Inputs | None:
    """Injected / infused agents charted as the administrations given (first dose = start of therapy),
    as infusion-centre systems record them; oral agents stay as orders."""
    mrs = [
        m
        for m in med_requests(inp.bundle)
        if ingredient_of(m["medicationCodeableConcept"]).ingredient in INJECTABLE
    ]  # type: ignore[union-attr]
    mrs = [m for m in mrs if m.get("status") == "active" and m.get("authoredOn")]
    if not mrs:
        return None
    for mr in mrs:
        drug = ingredient_of(mr["medicationCodeableConcept"])
        assert drug
        every = INTERVAL.get(next(iter(drug.classes & set(INTERVAL)), ""), DEFAULT_INTERVAL)
        doses = _series(date.fromisoformat(mr["authoredOn"][:10]), every)
        first = True
        for n, day in enumerate(doses, start=1):
            admin: Res = {
                "resourceType": "MedicationAdministration",
                "id": f"ma-{mr['id']}-{n}",
                "status": "completed",
                "medicationCodeableConcept": copy.deepcopy(mr["medicationCodeableConcept"]),
                "subject": copy.deepcopy(mr["subject"]),
                "effectiveDateTime": day.isoformat(),
                "request": {"reference": f"MedicationRequest/{mr['id']}"},
            }
            if first:
                _replace(inp.bundle, mr, admin)
                first = False
            else:
                add_resource(inp.bundle, admin)
    return inp


FLARE_WINDOW_DAYS = 90  # the flare pitfall's window (cards/pitfalls.yaml, med_started_within_days)


def _started_within(mr: Res, days: int) -> bool:
    authored = mr.get("authoredOn")
    return bool(authored) and (TODAY - date.fromisoformat(str(authored)[:10])).days <= days


def therapy_stopped(inp: Inputs) -> Inputs | None:
    """Metastatic prostate cancer: the rules say "currently undergoing or have been treated with"
    systemic therapy, so therapy that was stopped still counts."""
    if "prostate" not in sites(inp.bundle) or not active_disease_evidence(inp.bundle):
        return None
    mrs = [m for m in med_requests(inp.bundle) if m.get("status") == "active"]
    if not mrs or any(_started_within(m, FLARE_WINDOW_DAYS) for m in mrs):
        # Stopping a therapy started within the flare window changes a fact the flare pitfall reads
        # (current therapy started recently): not a re-encoding there.
        return None
    for mr in mrs:
        mr["status"] = "stopped"
        mr["statusReason"] = concept((SCT, "182846007", "Medication stopped"))  # reason only; not read
    return inp


def orchiectomy_instead_of_adt(inp: Inputs) -> Inputs | None:
    adt = [
        m for m in med_requests(inp.bundle) if "adt" in ingredient_of(m["medicationCodeableConcept"]).classes
    ]  # type: ignore[union-attr]
    if not adt:
        return None
    first = min(adt, key=lambda m: m.get("authoredOn") or "")
    for mr in adt:
        if mr is first:
            _replace(
                inp.bundle,
                mr,
                {
                    "resourceType": "Procedure",
                    "id": "orchiectomy-1",
                    "status": "completed",
                    "code": concept(C.ORCHIECTOMY),
                    "subject": mr["subject"],
                    "performedDateTime": mr.get("authoredOn"),
                },
            )
        else:
            inp.bundle["entry"] = [e for e in inp.bundle["entry"] if e.get("resource") is not mr]
    return inp


MEDICATIONS: dict[str, Transform] = {
    "rxnorm-ingredient": _recode_meds(_pick_in),
    "rxnorm-clinical-drug-scd": _recode_meds(_pick_tty("SCD")),
    "rxnorm-branded-drug-sbd": _recode_meds(_pick_tty("SBD", "BPCK")),
    "rxnorm-brand-name-bn": _recode_meds(_pick_tty("BN")),
    "snomed-substance": _recode_meds(_pick_snomed),
    "contained-medication": _med_reference("contained"),
    "medication-resource-relative": _med_reference("resource"),
    "medication-resource-urn-uuid": _med_reference("urn"),
    "medication-statement": med_statement,
    "medication-administration-series": med_administrations,
    "stopped-therapy-treated-with": therapy_stopped,
    "orchiectomy-instead-of-adt-drug": orchiectomy_instead_of_adt,
}


# --- reports ------------------------------------------------------------------------------------------


def _report_wording(report: Res) -> str:
    """How a radiologist words the finding the report's conclusionCode carries."""
    keys = keys_of(report.get("code"))
    found = {code for _, code in keys_of_list(report.get("conclusionCode"))}
    if "94222008" not in found:
        return "No scintigraphic evidence of osseous metastatic disease."
    if (LOINC, "72254-6") in keys:  # CT chest/abdomen/pelvis
        return "New lytic lesions in T10 and the left iliac bone, suspicious for osseous metastases."
    if "359746009" in found:
        return "Stable osseous metastases, no new lesions."
    if "271299001" in found:
        return "Progression of osseous metastatic disease with several new lesions in the spine and pelvis."
    return (
        "Multiple foci of abnormal tracer uptake in the spine and pelvis, consistent with osseous metastases."
    )


def keys_of_list(concepts: Any) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for c in concepts or []:
        out |= keys_of(c)
    return out


def _reports(change: Callable[[Res], None]) -> Transform:
    def t(inp: Inputs) -> Inputs | None:
        reps = [r for r in resources(inp.bundle, "DiagnosticReport") if r.get("conclusionCode")]
        for rep in reps:
            change(rep)
        return inp if reps else None

    return t


def _conclusion_only(rep: Res) -> None:
    del rep["conclusionCode"]


def _radiologist_wording(rep: Res) -> None:
    rep["conclusion"] = _report_wording(rep)
    del rep["conclusionCode"]


def _presented_form(rep: Res) -> None:
    impression = _report_wording(rep)
    text = (
        f"EXAMINATION: {rep['code'].get('text') or 'Imaging study'}\n"
        "CLINICAL HISTORY: Known malignancy, restaging.\n"
        "COMPARISON: Prior imaging.\n"
        f"IMPRESSION: {impression}\n"
    )
    rep["presentedForm"] = [
        {"contentType": "text/plain", "data": base64.b64encode(text.encode()).decode(), "title": "Report"}
    ]
    del rep["conclusionCode"]
    rep.pop("conclusion", None)


REPORTS: dict[str, Transform] = {
    "conclusion-text-without-codes": _reports(_conclusion_only),
    "radiologist-wording-in-conclusion": _reports(_radiologist_wording),
    "presented-form-text-plain-only": _reports(_presented_form),
}


# --- stage, grade, T and M category ------------------------------------------------------------------


def staging_observations(bundle: Bundle, *codes_: str) -> list[Res]:
    return with_code(bundle, "Observation", [(SCT, c) for c in codes_])


STAGING_CODES = (C.STAGE_GROUP_SCT, "399504009", "399387003")


def _staging(change: Callable[[Res, str], bool], *codes_: str) -> Transform:
    def t(inp: Inputs) -> Inputs | None:
        changed = False
        for obs in staging_observations(inp.bundle, *codes_):
            value = next(iter(keys_of(obs.get("valueCodeableConcept"))), (None, None))[1]
            if value is not None and change(obs, value):
                changed = True
        return inp if changed else None

    return t


def _loinc_code(also_snomed: bool) -> Callable[[Res, str], bool]:
    def change(obs: Res, value: str) -> bool:
        sct = next(c for c in codings_of(obs["code"]) if c.get("system") == SCT)
        loinc = C.STAGING_LOINC[str(sct["code"])]
        obs["code"] = {"coding": [coding(loinc)] + ([sct] if also_snomed else [])}
        return True

    return change


def _ajcc_value(obs: Res, value: str) -> bool:
    if value not in C.STAGE_VALUES:
        return False
    obs["valueCodeableConcept"] = concept((C.AJCC, C.STAGE_VALUES[value][0], C.STAGE_VALUES[value][1]))
    return True


def _value_string(obs: Res, value: str) -> bool:
    text = C.STAGE_VALUES.get(value, (None, None))[1] or C.GRADE_TEXT.get(value, (None, None))[0]
    if not text:
        return False
    del obs["valueCodeableConcept"]
    obs["valueString"] = text
    return True


def _value_text_only(obs: Res, value: str) -> bool:
    text = C.STAGE_VALUES.get(value, (None, None))[1] or C.GRADE_TEXT.get(value, (None, None))[0]
    if not text:
        return False
    obs["valueCodeableConcept"] = {"text": text}
    return True


def _gleason_loinc(obs: Res, value: str) -> bool:
    if value not in C.GRADE_TEXT:
        return False
    obs["code"] = concept(C.GLEASON_LOINC)
    del obs["valueCodeableConcept"]
    obs["valueString"] = f"Gleason {C.GRADE_TEXT[value][1]}"
    return True


def _stage_on_condition(text_only: bool) -> Transform:
    """The stage group on the cancer Condition (`Condition.stage.summary`) instead of an Observation."""

    def t(inp: Inputs) -> Inputs | None:
        groups = staging_observations(inp.bundle, C.STAGE_GROUP_SCT)
        conds = primary_conditions(inp.bundle)
        if len(groups) != 1 or not conds:
            return None
        obs = groups[0]
        summary = copy.deepcopy(obs["valueCodeableConcept"])
        value = next(iter(keys_of(summary)))[1]
        if text_only:
            summary = {"text": C.STAGE_VALUES[value][1]}
        conds[0]["stage"] = [{"summary": summary, "type": concept((SCT, "260998006", "Clinical staging"))}]
        inp.bundle["entry"] = [e for e in inp.bundle["entry"] if e.get("resource") is not obs]
        return inp

    return t


STAGING: dict[str, Transform] = {
    "loinc-and-snomed-observation-code": _staging(_loinc_code(True), *STAGING_CODES),
    "loinc-observation-code-only": _staging(_loinc_code(False), *STAGING_CODES),
    "ajcc-cancerstaging-org-value": _staging(_ajcc_value, *STAGING_CODES),
    "value-string": _staging(_value_string, *STAGING_CODES),
    "value-codeable-concept-text-only": _staging(_value_text_only, *STAGING_CODES),
    "stage-group-on-condition-stage-summary": _stage_on_condition(False),
    "stage-group-on-condition-as-text": _stage_on_condition(True),
    "grade-group-value-string": _staging(_value_string, C.GRADE_GROUP_SCT),
    "grade-group-value-text-only": _staging(_value_text_only, C.GRADE_GROUP_SCT),
    "gleason-score-loinc-value-string": _staging(_gleason_loinc, C.GRADE_GROUP_SCT),
}


# --- labs: PSA ------------------------------------------------------------------------------------------

PSA_CODES = {*C.PSA_MASS_LOINC, C.PSA_MOLAR_LOINC[0]}


def psa_observations(bundle: Bundle) -> list[Res]:
    return with_code(bundle, "Observation", [(LOINC, c) for c in PSA_CODES])


def _ng_per_ml(obs: Res) -> float:
    q = obs["valueQuantity"]
    molar = (LOINC, C.PSA_MOLAR_LOINC[0]) in keys_of(obs["code"])
    return float(q["value"]) * (C.PSA_NG_PER_NMOL if molar else 1.0)


def _psa_values(bundle: Bundle) -> list[tuple[str, float]]:
    return [
        (str(o.get("effectiveDateTime")), _ng_per_ml(o))
        for o in psa_observations(bundle)
        if "valueQuantity" in o
    ]


def _psa(change: Callable[[Res, float], None]) -> Transform:
    def t(inp: Inputs) -> Inputs | None:
        obs = [o for o in psa_observations(inp.bundle) if "valueQuantity" in o]
        for o in obs:
            change(o, _ng_per_ml(o))
        return inp if obs else None

    return t


def _mass(loinc: str, unit: str = "ng/mL", code: str | None = "ng/mL", system: str | None = UCUM):
    def change(obs: Res, value: float) -> None:
        obs["code"] = concept((LOINC, loinc, C.PSA_MASS_LOINC[loinc]))
        q = {k: v for k, v in obs["valueQuantity"].items() if k in ("comparator",)}
        q.update(value=value, unit=unit)
        if code:
            q.update(system=system, code=code)
        obs["valueQuantity"] = q

    return change


def _keep_code_mass(unit: str, code: str | None) -> Callable[[Res, float], None]:
    def change(obs: Res, value: float) -> None:
        current = next(
            c
            for c in codings_of(obs["code"])
            if (LOINC, str(c.get("code"))) in {(LOINC, x) for x in PSA_CODES}
        )
        loinc = str(current["code"]) if current["code"] in C.PSA_MASS_LOINC else "2857-1"
        _mass(loinc, unit, code)(obs, value)

    return change


def _molar(obs: Res, value: float) -> None:
    obs["code"] = concept((LOINC, *C.PSA_MOLAR_LOINC))
    q = {k: v for k, v in obs["valueQuantity"].items() if k in ("comparator",)}
    q.update(value=value / C.PSA_NG_PER_NMOL, unit="nmol/L", system=UCUM, code="nmol/L")
    obs["valueQuantity"] = q


LABS: dict[str, Transform] = {
    **{f"psa-as-loinc-{code}": _psa(_mass(code)) for code in C.PSA_MASS_LOINC},
    "psa-as-molar-loinc-19197-3-nmol-per-l": _psa(_molar),
    "psa-unit-ng/ml-lower-case": _psa(_keep_code_mass("ng/ml", "ng/mL")),
    "psa-unit-NG/ML-upper-case-no-ucum-code": _psa(_keep_code_mass("NG/ML", None)),
    "psa-unit-ug/L-ucum": _psa(_keep_code_mass("ug/L", "ug/L")),
    "psa-unit-micro-g/L-printed-only": _psa(_keep_code_mass("µg/L", None)),
}


# --- identity: another patient's resources in every reference form --------------------------------------

OTHER_ID = "other-patient-1"
OTHER_URN = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, OTHER_ID)}"
OTHER_MRN = {"system": "https://ehr.example.org/mrn", "value": "MRN-OTHER-1"}
FOREIGN_PREFIX = "foreign-"


def _other_subjects(inp: Inputs) -> dict[str, Callable[[Res], Any]]:
    own = inp.patient_id
    return {
        "relative-reference": lambda r: {"reference": f"Patient/{OTHER_ID}"},
        "absolute-url": lambda r: {"reference": f"https://ehr.example.org/fhir/Patient/{OTHER_ID}"},
        "urn-uuid": lambda r: {"reference": OTHER_URN},
        "identifier-only-other-mrn": lambda r: {"identifier": dict(OTHER_MRN)},
        "typed-bare-id": lambda r: {"reference": OTHER_ID, "type": "Patient"},
        "contained-patient": lambda r: _contained_subject(r),
        "display-only": lambda r: {"display": "Another Patient"},
        "lower-case-patient-own-id": lambda r: {"reference": f"patient/{own}"},
    }


def _contained_subject(resource: Res) -> dict[str, str]:
    resource["contained"] = [{"resourceType": "Patient", "id": "p", "name": [{"family": "Another"}]}]
    return {"reference": "#p"}


def foreign_resources() -> list[Res]:
    """What would change the outcome most if used: a cord-compression diagnosis (red flag), a high
    recent PSA, a bone scan with new metastases, and ADT started three weeks ago (flare window)."""
    return [
        {
            "resourceType": "Condition",
            "id": f"{FOREIGN_PREFIX}cond-cord-compression",
            "clinicalStatus": concept((C.CONDITION_CLINICAL, "active", "Active")),
            "verificationStatus": concept((C.CONDITION_VERIFICATION, "confirmed", "Confirmed")),
            "code": concept((ICD, "G95.20", "Unspecified cord compression")),
            "onsetDateTime": "2026-11-13",
        },
        {
            "resourceType": "Observation",
            "id": f"{FOREIGN_PREFIX}obs-psa",
            "status": "final",
            "category": [concept((C.OBSERVATION_CATEGORY, "laboratory", "Laboratory"))],
            "code": concept((LOINC, "2857-1", C.PSA_MASS_LOINC["2857-1"])),
            "effectiveDateTime": "2026-11-10",
            "valueQuantity": {"value": 45.0, "unit": "ng/mL", "system": UCUM, "code": "ng/mL"},
        },
        {
            "resourceType": "DiagnosticReport",
            "id": f"{FOREIGN_PREFIX}dxr-bone-scan",
            "status": "final",
            "code": concept(
                ("http://www.ama-assn.org/go/cpt", "78306", "Bone and/or joint imaging; whole body"),
                (LOINC, "25031-6", "Bone Scan"),
            ),
            "effectiveDateTime": "2026-11-05",
            "conclusion": "New osseous metastases in the spine.",
            "conclusionCode": [
                concept((SCT, "94222008", "Secondary malignant neoplasm of bone")),
                concept((SCT, "271299001", "Patient's condition worsened")),
            ],
        },
        {
            "resourceType": "MedicationRequest",
            "id": f"{FOREIGN_PREFIX}medrx-leuprolide",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": concept(
                (RXNORM, "752899", "0.25 ML Leuprolide Acetate 30 MG/ML Prefilled Syringe")
            ),
            "authoredOn": "2026-10-25",
        },
    ]


def other_patient(form: str) -> Transform:
    def t(inp: Inputs) -> Inputs | None:
        make = _other_subjects(inp)[form]
        if form == "urn-uuid":
            other = {
                "resourceType": "Patient",
                "id": OTHER_ID,
                "identifier": [dict(OTHER_MRN)],
                "gender": inp.patient.get("gender"),
                "birthDate": "1950-01-01",
            }
            add_resource(inp.bundle, other, full_url=OTHER_URN)
        for res in foreign_resources():
            res["subject"] = make(res)
            add_resource(inp.bundle, res)
        return inp

    return t


OTHER_FORMS = tuple(
    _other_subjects(Inputs({"entry": [{"resource": {"resourceType": "Patient", "id": "x"}}]}, []))
)
OTHER_PATIENT: dict[str, Transform] = {form: other_patient(form) for form in OTHER_FORMS}


# --- identity: the patient's own resources, every reference form that names them ------------------------


def own_reference(form: str) -> Transform:
    def t(inp: Inputs) -> Inputs | None:
        patient = inp.patient
        pid = inp.patient_id
        own = [r for r in resources(inp.bundle) if r.get("resourceType") != "Patient" and "subject" in r]
        if not own:
            return None
        urn = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, pid)}"
        if form == "urn-uuid-of-patient-entry":
            for entry in inp.bundle["entry"]:
                if entry.get("resource") is patient:
                    entry["fullUrl"] = urn
        ident = (patient.get("identifier") or [None])[0]
        if form == "identifier-of-patient" and not ident:
            return None
        subject = {
            "absolute-url": {"reference": f"https://ehr.example.org/fhir/Patient/{pid}"},
            "urn-uuid-of-patient-entry": {"reference": urn},
            "identifier-of-patient": {"identifier": ident},
            "typed-relative-reference": {"reference": f"Patient/{pid}", "type": "Patient"},
            "typed-bare-id": {"reference": pid, "type": "Patient"},
            "versioned-reference": {"reference": f"Patient/{pid}/_history/3"},
        }[form]
        for res in own:
            res["subject"] = copy.deepcopy(subject)
        return inp

    return t


OWN_FORMS = (
    "absolute-url",
    "urn-uuid-of-patient-entry",
    "identifier-of-patient",
    "typed-relative-reference",
    "typed-bare-id",
    "versioned-reference",
)
OWN_REFERENCES: dict[str, Transform] = {form: own_reference(form) for form in OWN_FORMS}


# --- status: the patient's own facts refuted, entered in error, resolved ----------------------------------

RED_FLAG_SYMPTOMS = ("back-pain", "weakness", "headache", "seizure", "cord-compression")


def red_flag_conditions(bundle: Bundle) -> list[Res]:
    found = symptom_conditions(bundle)
    return [c for name in RED_FLAG_SYMPTOMS for c in found.get(name, [])]


def bone_mets_conditions(bundle: Bundle) -> list[Res]:
    return with_code(bundle, "Condition", [(ICD, "C79.51"), (SCT, "94222008")])


def latest_psa(bundle: Bundle) -> list[Res]:
    obs = psa_observations(bundle)
    return [max(obs, key=lambda o: str(o.get("effectiveDateTime")))] if obs else []


def reports_with_findings(bundle: Bundle) -> list[Res]:
    return [r for r in resources(bundle, "DiagnosticReport") if r.get("conclusionCode")]


Selector = Callable[[Bundle], list[Res]]

TARGETS: Mapping[str, Selector] = {
    "red-flag-symptoms": red_flag_conditions,
    "bone-metastases": bone_mets_conditions,
    "latest-psa": latest_psa,
    "imaging-reports": reports_with_findings,
    "medications": med_requests,
}


def _mark(state: str, res: Res) -> bool:
    rtype = res["resourceType"]
    if rtype == "Condition":
        if state == "refuted":
            res["verificationStatus"] = concept((C.CONDITION_VERIFICATION, "refuted", "Refuted"))
        elif state == "entered-in-error":
            res["verificationStatus"] = concept(
                (C.CONDITION_VERIFICATION, "entered-in-error", "Entered in Error")
            )
        elif state == "resolved":
            res["clinicalStatus"] = concept((C.CONDITION_CLINICAL, "resolved", "Resolved"))
            res["abatementDateTime"] = (TODAY - timedelta(days=1)).isoformat()
        return True
    if state != "entered-in-error":
        return False  # Observation / DiagnosticReport / MedicationRequest have no "refuted" or "resolved"
    res["status"] = "entered-in-error"
    return True


def marked(target: str, state: str) -> Transform:
    def t(inp: Inputs) -> Inputs | None:
        found = TARGETS[target](inp.bundle)
        if not found or not all(_mark(state, r) for r in found):
            return None
        return inp

    return t


def removed(target: str) -> Transform:
    """The same chart without the target resources: what a refuted / erroneous record must equal."""

    def t(inp: Inputs) -> Inputs | None:
        found = {id(r) for r in TARGETS[target](inp.bundle)}
        inp.bundle["entry"] = [e for e in inp.bundle["entry"] if id(e.get("resource")) not in found]
        return inp

    return t


def target_refs(target: str, bundle: Bundle) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for r in TARGETS[target](bundle)}


STATES = {
    "red-flag-symptoms": ("refuted", "entered-in-error", "resolved"),
    "bone-metastases": ("refuted", "entered-in-error"),
    "latest-psa": ("entered-in-error",),
    "imaging-reports": ("entered-in-error",),
    "medications": ("entered-in-error",),
}


# --- the order's indication ----------------------------------------------------------------------------

INDICATION_SYMPTOMS = (*RED_FLAG_SYMPTOMS, "bone-pain")
INDICATION_TEXT = {
    "back-pain": "new low back pain",
    "weakness": "weakness of both legs",
    "headache": "new headache",
    "seizure": "new onset seizure",
    "cord-compression": "spinal cord compression",
    "bone-pain": "bone pain",
}


def _indication(form: str) -> Transform:
    """The chart's symptoms moved into the draft order's indication (ServiceRequest.reasonCode /
    reasonReference): they must count like the same facts in the chart."""

    def t(inp: Inputs) -> Inputs | None:
        found = symptom_conditions(inp.bundle)
        names = [n for n in INDICATION_SYMPTOMS if n in found]
        if not names or not inp.orders:
            return None
        conds = [c for n in names for c in found[n]]
        order = inp.orders[0]
        if form == "reference-to-chart-condition":
            order["reasonReference"] = [{"reference": f"Condition/{c['id']}"} for c in conds]
            return inp
        moved = {id(c) for c in conds}
        inp.bundle["entry"] = [e for e in inp.bundle["entry"] if id(e.get("resource")) not in moved]
        reasons = list(order.get("reasonCode") or [])
        if form == "coded-reason":
            order["reasonCode"] = reasons + [copy.deepcopy(c["code"]) for c in conds]
        elif form == "text-only-reason":
            order["reasonCode"] = reasons + [{"text": " and ".join(INDICATION_TEXT[n] for n in names)}]
        elif form == "sandbox-single-object-reason":
            # the sandbox's shape: one CodeableConcept, not a list, with an empty coding in it
            codings = [cd for c in [*reasons, *(c["code"] for c in conds)] for cd in codings_of(c)]
            order["reasonCode"] = {"coding": [*codings, {}]}
        elif form == "reference-to-contained-condition":
            order["contained"] = []
            order["reasonReference"] = []
            for n, c in enumerate(conds, start=1):
                contained = {k: v for k, v in c.items() if k != "subject"}
                contained["id"] = f"reason-{n}"
                contained["subject"] = {"reference": f"Patient/{inp.patient_id}"}
                order["contained"].append(contained)
                order["reasonReference"].append({"reference": f"#reason-{n}"})
        return inp

    return t


INDICATION_FORMS = (
    "coded-reason",
    "text-only-reason",
    "sandbox-single-object-reason",
    "reference-to-contained-condition",
    "reference-to-chart-condition",
)
INDICATION: dict[str, Transform] = {form: _indication(form) for form in INDICATION_FORMS}


FAMILIES: Mapping[str, Mapping[str, Transform]] = {
    "conditions": CONDITIONS,
    "symptoms": symptom_transforms(),
    "medications": MEDICATIONS,
    "reports": REPORTS,
    "staging": STAGING,
    "labs": LABS,
    "other-patient": OTHER_PATIENT,
    "own-references": OWN_REFERENCES,
    "indication": INDICATION,
}

_NON_ID = re.compile(r"[^A-Za-z0-9._-]+")


def slug(text: str) -> str:
    return _NON_ID.sub("-", text).strip("-")


def cancer_history_alone(inp: Inputs) -> Inputs | None:
    """Only a history code (Z85.x) for the cancer, with no metastases, therapy or reports left: for the
    red flags this is still a known cancer (issue 8: "a history code alone is history of cancer for
    red flags")."""
    if not primary_conditions(inp.bundle):
        return None
    cancer_history = _recode_primary(lambda cond, site: concept(C.SITES[site].history))
    cancer_history(inp)
    evidence = {
        id(r)
        for r in [
            *bone_mets_conditions(inp.bundle),
            *med_requests(inp.bundle),
            *reports_with_findings(inp.bundle),
        ]
    }
    evidence |= {id(r) for r in with_code(inp.bundle, "Condition", [(SCT, "314994000"), (ICD, "R97.21")])}
    evidence |= {id(r) for r in staging_observations(inp.bundle, "399387003")}
    inp.bundle["entry"] = [e for e in inp.bundle["entry"] if id(e.get("resource")) not in evidence]
    return inp


def strip_red_flag_reasons(inp: Inputs) -> Inputs:
    """Drop the red-flag symptoms from the orders' reasonCode (the order's own indication counts as a
    fact of today, so a chart-only check must take them out)."""
    symptom_keys = {k for k, (name, alts) in C.SYMPTOMS.items() if name in RED_FLAG_SYMPTOMS}
    symptom_keys |= {
        (a[0], a[1]) for k, (name, alts) in C.SYMPTOMS.items() if name in RED_FLAG_SYMPTOMS for a in alts
    }
    for order in inp.orders:
        reasons = order.get("reasonCode") or []
        order["reasonCode"] = [r for r in reasons if not keys_of(r) & symptom_keys]
        if not order["reasonCode"]:
            del order["reasonCode"]
    return inp

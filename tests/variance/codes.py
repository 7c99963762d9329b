"""The codes the variants re-encode facts with, each an equivalent of a code the fixtures already use.

Sources: ICD-10-CM codes are from the FY2026 Tabular List; SNOMED CT and LOINC codes are those of the
shared reference (clinical-knowledge.md, with its verification marks) or those issue 8 names as the
ones real EHRs send (histology 399490008 / 408643008, paresis 102568007, retention of urine 267064002,
cord compression 71286001, orchidectomy 14043008). No code here is made up for the test: a variant
that needs a code the knowledge base cannot know is a real gap, not a reason to pick another code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
ICD_WHO = "http://hl7.org/fhir/sid/icd-10"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
AJCC = "http://cancerstaging.org"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

Coding = tuple[str, str, str]  # (system, code, display)


def coding(c: Coding) -> dict[str, str]:
    return {"system": c[0], "code": c[1], "display": c[2]}


# --- primary cancer -------------------------------------------------------------------------------

# Site of a primary-cancer Condition, from the codes the fixtures use for it. Inflammatory carcinoma
# (254840009) and metastatic prostate cancer (314994000) say more than "cancer of this site" and are
# left as they are.
PRIMARY_CODES: Mapping[tuple[str, str], str] = {
    (ICD, "C61"): "prostate",
    (SCT, "399068003"): "prostate",
    (SCT, "254837009"): "breast",
    (SCT, "353431000119107"): "breast",
    (SCT, "706970001"): "breast",
}
PRIMARY_ICD_PREFIXES: Mapping[str, str] = {"C50": "breast"}


@dataclass(frozen=True)
class Site:
    icd: Coding
    snomed: Coding
    histology: Coding
    history: Coding
    text: str


SITES: Mapping[str, Site] = {
    "prostate": Site(
        icd=(ICD, "C61", "Malignant neoplasm of prostate"),
        snomed=(SCT, "399068003", "Malignant tumor of prostate"),
        histology=(SCT, "399490008", "Adenocarcinoma of prostate"),
        history=(ICD, "Z85.46", "Personal history of malignant neoplasm of prostate"),
        text="Adenocarcinoma of the prostate",
    ),
    "breast": Site(
        icd=(ICD, "C50.919", "Malignant neoplasm of unspecified site of unspecified female breast"),
        snomed=(SCT, "254837009", "Malignant neoplasm of breast"),
        histology=(SCT, "408643008", "Infiltrating duct carcinoma of breast"),
        history=(ICD, "Z85.3", "Personal history of malignant neoplasm of breast"),
        text="Invasive ductal carcinoma of the breast",
    ),
}
# The ICD-10-CM code that says the same as a breast SNOMED code (side and sex kept).
BREAST_ICD_FOR_SNOMED: Mapping[str, Coding] = {
    "353431000119107": (ICD, "C50.912", "Malignant neoplasm of unspecified site of left female breast"),
}

# --- metastases -----------------------------------------------------------------------------------

BONE_METS_ICD: Coding = (ICD, "C79.51", "Secondary malignant neoplasm of bone")
BONE_METS_SCT: Coding = (SCT, "94222008", "Secondary malignant neoplasm of bone")

# --- symptoms and red-flag diagnoses: canonical code -> (name, equivalent codings) -----------------

SYMPTOMS: Mapping[tuple[str, str], tuple[str, tuple[Coding, ...]]] = {
    (SCT, "161891005"): (
        "back-pain",
        (
            (ICD, "M54.5", "Low back pain (pre-FY2022 code, still sent by older feeds)"),
            (ICD, "M54.50", "Low back pain, unspecified"),
            (ICD, "M54.41", "Lumbago with sciatica, right side"),
            (SCT, "279039007", "Low back pain"),
        ),
    ),
    (SCT, "26544005"): (
        "weakness",
        (
            (ICD, "M62.81", "Muscle weakness (generalized)"),
            (ICD, "R53.1", "Weakness"),
            (ICD, "R29.898", "Other symptoms and signs involving the musculoskeletal system"),
            (SCT, "102568007", "Paresis of lower extremity"),
        ),
    ),
    (SCT, "25064002"): ("headache", ((ICD, "R51.9", "Headache, unspecified"),)),
    (SCT, "91175000"): ("seizure", ((ICD, "R56.9", "Unspecified convulsions"),)),
    (SCT, "89362005"): ("weight-loss", ((ICD, "R63.4", "Abnormal weight loss"),)),
    (SCT, "12584003"): ("bone-pain", ()),
    (ICD, "G95.20"): ("cord-compression", ((SCT, "71286001", "Compression of spinal cord"),)),
}
# Sphincter dysfunction is, with back pain in a patient with bone metastases, a cord-compression
# red flag just as leg weakness is (ACR Myelopathy; NICE NG234).
SPHINCTER: tuple[Coding, ...] = (
    (ICD, "R33.9", "Retention of urine, unspecified"),
    (SCT, "267064002", "Retention of urine"),
)
SYMPTOM_LOINC: Coding = (LOINC, "75325-1", "Symptom")

# --- staging: SNOMED value -> (AJCC cancerstaging.org code, text as charted) -----------------------

STAGE_VALUES: Mapping[str, tuple[str, str]] = {
    "1222724007": ("1A", "Stage IA"),
    "1222766008": ("2A", "Stage IIA"),
    "1222769001": ("2B", "Stage IIB"),
    "1222806003": ("3C", "Stage IIIC"),
    "1229903009": ("cM1", "cM1"),
    "433351000124101": ("cT1c", "cT1c"),
    "433361000124104": ("cT2a", "cT2a"),
    # cT2 without sub-category (AJCC cT2, cards/valuesets/tnm-values.yaml): the partial-facts patient
    "1228929004": ("cT2", "cT2"),
}
GRADE_TEXT: Mapping[str, tuple[str, str]] = {  # ISUP value -> (valueString, Gleason pattern)
    "1279715000": ("Grade group 1 (Gleason 3+3=6)", "3+3=6"),
    "1279716004": ("Grade group 3 (Gleason 4+3=7)", "4+3=7"),
    "1279718003": ("Grade group 4 (Gleason 3+5=8)", "3+5=8"),
}
# SNOMED observation code -> LOINC code of the same observable (reference section 2.4)
STAGING_LOINC: Mapping[str, Coding] = {
    "399537006": (LOINC, "21908-9", "Stage group.clinical Cancer"),
    "399504009": (LOINC, "21905-5", "Primary tumor.clinical [Class] Cancer"),
    "399387003": (LOINC, "21907-1", "Distant metastases.clinical [Class] Cancer"),
}
GRADE_GROUP_SCT = "385377005"
GLEASON_LOINC: Coding = (LOINC, "35266-6", "Gleason score in Specimen Qualitative")
STAGE_GROUP_SCT = "399537006"

# --- labs -----------------------------------------------------------------------------------------

PSA_MASS_LOINC: Mapping[str, str] = {
    "2857-1": "Prostate specific Ag [Mass/volume] in Serum or Plasma",
    "83112-3": "Prostate specific Ag [Mass/volume] in Serum or Plasma by Immunoassay",
    "35741-8": "Prostate specific Ag [Mass/volume] in Serum or Plasma by Detection limit <= 0.01 ng/mL",
}
PSA_MOLAR_LOINC = ("19197-3", "Prostate specific Ag [Moles/volume] in Serum or Plasma")
# ng/mL per nmol/L: PSA ~33 kDa, the factor the knowledge base documents (cards/valuesets/psa.yaml)
PSA_NG_PER_NMOL = 33.0

# --- procedures ----------------------------------------------------------------------------------

ORCHIECTOMY: Coding = (SCT, "14043008", "Bilateral orchidectomy")

"""The closed vocabulary shared by facts, rule files and the engine (ids from the common brief).

Rule files may only name ids listed here; the loader rejects anything else, so a typo in a YAML
file stops the service at start instead of silently never matching.
"""

from __future__ import annotations

CONCEPTS = frozenset(
    {
        "prostate-cancer",
        "breast-cancer",
        "other-cancer",
        # A cancer recorded as history (ICD-10-CM Z85.x): a known cancer for the red flags only, and
        # active cancer only with evidence of active disease (cds_service/facts/derived.py).
        "history-of-prostate-cancer",
        "history-of-breast-cancer",
        "history-of-cancer",
        "metastatic-disease",
        "metastasis-bone",
        "metastasis-liver",
        "metastasis-lung",
        "metastasis-brain",
        "metastasis-lymph-node",
        "bone-pain",
        "back-pain",
        "weight-loss",
        "headache",
        "seizure",
        "focal-neuro-deficit",
        "weakness",  # generalised / not localised: cord rule yes, brain rule no
        "sphincter-dysfunction",
        "cord-compression",
        "pulmonary-symptoms",
        "triple-negative",
        "inflammatory-breast-cancer",
        "castration-resistant",
        "hormone-sensitive",
        "rising-psa-after-treatment",
        "ckd-severe",
        "dialysis",
    }
)
LABS = frozenset({"alp", "ast", "alt", "bilirubin", "egfr", "creatinine", "testosterone"})
MED_CLASSES = frozenset(
    {
        "adt",
        "arpi",
        "antiandrogen",
        "chemotherapy",
        "her2-targeted",
        "immunotherapy",
        "endocrine",
        "radioligand",
        "parp-inhibitor",
    }
)
PROCEDURE_CONCEPTS = frozenset({"radical-prostatectomy", "radiotherapy", "breast-surgery", "dialysis"})
MODALITIES = frozenset(
    {
        "bone-scan",
        "ct",
        "mri",
        "psma-pet",
        "fdg-pet",
        "other-pet",
        "spect",
        "radiograph",
        "ultrasound",
        "mammography",
    }
)
FINDINGS = frozenset(
    {
        "bone-metastases",
        "no-bone-metastases",
        "visceral-metastases",
        "stable",
        "progression",
        "new-lesions",
        # An equivocal / indeterminate study (seed 000 "If the scan is indeterminate", seed 001 "If
        # the bone scan is indeterminate or equivocal"): problem-solving CT or MRI of the site.
        "equivocal",
    }
)
RISK_GROUPS = ("low", "favorable-intermediate", "unfavorable-intermediate", "high", "very-high")
RECEPTORS = frozenset({"er", "pr", "her2"})
RECEPTOR_VALUES = frozenset({"positive", "negative"})
# AJCC 8th edition anatomic / prognostic stage groups of the cancers the rules cover and their
# neighbours (prostate has IIC, IVA and IVB). Sub-groups with a trailing digit (IA1, IIIC2) and
# 0is / 0a fold into these when the facts stage reads them (cds_service/facts/stage_notation.py).
STAGE_GROUPS = frozenset(
    {
        "0",
        "I",
        "IA",
        "IB",
        "IC",
        "II",
        "IIA",
        "IIB",
        "IIC",
        "III",
        "IIIA",
        "IIIB",
        "IIIC",
        "IIID",
        "IV",
        "IVA",
        "IVB",
        "IVC",
    }
)
CATEGORIES = ("usually-appropriate", "may-be-appropriate", "usually-not-appropriate")
PITFALL_IDS = frozenset(
    {
        "flare-phenomenon",
        "discordant-psa-progression",
        "visceral-suspicion-bone-scan-insufficient",
        "aggressive-subtype-prefer-fdg",
        "lytic-lesions-missed-on-bone-scan",
        "low-psa-conventional-imaging-low-yield",
        "contrast-kidney-risk",
        "psma-radioligand-eligibility",
        # issue 9 point 3: seed situations that had no rule
        "early-rising-psa-psma-pet",
        "undetectable-psa-imaging-low-yield",
        "psma-pet-for-lu177-selection",
        "short-interval-repeat-bone-scan",
        "focal-pain-after-negative-or-equivocal-bone-scan",
    }
)

# MedicationRequest statuses that mean "the patient is on it now". A completed or unknown request
# counts only if it started recently (see predicates.CURRENT_MED_WINDOW_DAYS): depot ADT and chemo
# cycles are often recorded as completed requests while treatment continues.
# `in-progress` is a MedicationAdministration being given now (an infusion).
ONGOING_MED_STATUSES = frozenset({"active", "on-hold", "in-progress"})
RECENT_MED_STATUSES = frozenset({"completed", "unknown"})
# "Currently undergoing or have been treated with": any record that says the drug was given,
# stopped included. The facts stage never lets entered-in-error, cancelled, draft, not-taken or
# not-done records through; this set is checked again here so a rule never depends on that alone.
TREATED_MED_STATUSES = ONGOING_MED_STATUSES | RECENT_MED_STATUSES | {"stopped"}

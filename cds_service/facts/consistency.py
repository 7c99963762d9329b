"""Cross-checks between sub-stages: contradictions lower confidence (data_issues), never guessed."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from cds_service.model import Evidence

METASTASIS_CONCEPTS = (
    "metastatic-disease",
    "metastasis-bone",
    "metastasis-liver",
    "metastasis-lung",
    "metastasis-brain",
    "metastasis-lymph-node",
)


def _on(evidence: Evidence) -> str:
    return f" on {evidence.date.isoformat()}" if evidence.date else ""


def contradictions(
    concepts: Mapping[str, tuple[Evidence, ...]],
    negations: Mapping[str, tuple[Evidence, ...]],
    receptors: Mapping[str, str],
) -> list[str]:
    issues = []
    for denial in negations.get("metastatic-disease", ()):
        denied_on = denial.date or date.max  # an undated denial contradicts everything
        for concept in METASTASIS_CONCEPTS:
            for evidence in concepts.get(concept, ()):
                if evidence.text.startswith("History of metastatic cancer"):
                    continue
                if (evidence.date or date.min) <= denied_on:
                    issues.append(
                        f"{denial.text}{_on(denial)} ({denial.source}) contradicts "
                        f"{evidence.text}{_on(evidence)} ({evidence.source})"
                    )
    if "prostate-neoplasm-unspecified" in concepts and "prostate-cancer" not in concepts:
        ev = concepts["prostate-neoplasm-unspecified"][0]
        issues.append(f"{ev.text}{_on(ev)} does not say malignant; prostate cancer not assumed")
    if "triple-negative" in concepts and any(v == "positive" for v in receptors.values()):
        positive = ", ".join(k.upper() for k, v in receptors.items() if v == "positive")
        issues.append(f"triple-negative is coded but the latest {positive} result is positive")
    return sorted(set(issues))

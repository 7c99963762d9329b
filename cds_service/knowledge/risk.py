"""Prostate cancer risk group (NCCN-style) from grade group, PSA and T category.

Definitions (clinical-knowledge.md 1.C; high-risk thresholds verified, the rest [I]):
low = T1-T2a and GG1 and PSA < 10; intermediate = T2b-T2c or GG2-3 or PSA 10-20 (unfavourable when
GG3 or two or more intermediate factors); high = T3a or GG4-5 or PSA > 20; very high = T3b-T4 or two
or more high-risk features. Percent positive cores and primary pattern 5 are not in FHIR data we
read, so the favourable/unfavourable split uses grade group and factor count only.

A group is returned only when the missing inputs could not change it: a high-risk feature decides
alone; otherwise all three inputs are needed. Never guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cds_service.model import Facts

_T = re.compile(r"T([0-4])([abc]?)", re.IGNORECASE)


@dataclass(frozen=True)
class RiskAssessment:
    group: str | None
    missing: tuple[str, ...]  # inputs that were absent ("grade group", "PSA", "T category")
    reasons: tuple[str, ...]  # human-readable inputs used


def t_category(facts: Facts) -> tuple[int, str] | None:
    """Parse the T category ("cT2a", "pT3b", "T1c") into (number, letter); None when absent.

    >>> t_category(Facts(as_of=__import__("datetime").date(2026, 1, 1), tnm={"T": "cT3b"}))
    (3, 'b')
    """
    raw = facts.tnm.get("T") if facts.tnm else None
    match = _T.search(raw or "")
    if not match:
        return None
    return int(match.group(1)), match.group(2).lower()


def assess_risk(facts: Facts) -> RiskAssessment:
    t = t_category(facts)
    gg = facts.grade_group
    psa = facts.psa[-1].value if facts.psa else None
    missing = tuple(
        name for name, value in (("grade group", gg), ("PSA", psa), ("T category", t)) if value is None
    )
    reasons = []
    if gg is not None:
        reasons.append(f"grade group {gg}")
    if psa is not None:
        reasons.append(f"PSA {psa:g} ng/mL")
    if t is not None:
        reasons.append(f"T{t[0]}{t[1]}")

    high = []
    if t is not None and t[0] == 3 and t[1] in ("", "a"):
        high.append("T3a")
    very_high_t = t is not None and (t[0] == 4 or (t[0] == 3 and t[1] in ("b", "c")))
    if gg is not None and gg >= 4:
        high.append("GG4-5")
    if psa is not None and psa > 20:
        high.append("PSA > 20")
    if very_high_t or len(high) >= 2:
        return RiskAssessment("very-high", missing, tuple(reasons))
    if high:
        return RiskAssessment("high", missing, tuple(reasons))
    if missing or t is None or gg is None or psa is None:  # the second half narrows types only
        return RiskAssessment(None, missing, tuple(reasons))

    if t == (2, ""):  # T2 without sub-category: only usable if T2a and T2b give the same group
        as_2a, as_2b = _localised((2, "a"), gg, psa), _localised((2, "b"), gg, psa)
        if as_2a != as_2b:
            return RiskAssessment(None, ("T sub-category (T2a, T2b or T2c)",), tuple(reasons))
    return RiskAssessment(_localised(t, gg, psa), (), tuple(reasons))


def _localised(t: tuple[int, str], gg: int, psa: float) -> str:
    """Risk group when no high-risk feature is present and every input is known."""
    intermediate = []
    if t[0] == 2 and t[1] in ("b", "c"):
        intermediate.append("T2b-c")
    if gg in (2, 3):
        intermediate.append("GG2-3")
    if 10 <= psa <= 20:
        intermediate.append("PSA 10-20")
    if not intermediate:
        return "low"
    if gg == 3 or len(intermediate) >= 2:
        return "unfavorable-intermediate"
    return "favorable-intermediate"

"""Stage group, TNM categories and Gleason grade written as notation: AJCC codes and short text.

These are structured notations with a small grammar, not prose ("Stage IIA", "stage 2A", AJCC
code "3C", "cT2b", "T2bN0M0", "pT3a pN0 cM0", "Grade group 1 (Gleason 3+3=6)", "Gleason 3+4=7",
"GG 2", "ISUP grade 3"), so a parser reads them; clinical prose is left to the text stage.

Everything is normalised to the knowledge base's forms: stage groups to the roman AJCC labels of
`vocabulary.STAGE_GROUPS` (arabic numbers and AJCC API codes such as "2A" become "IIA"; sub-groups
with a trailing digit fold into their group, IIIC1 -> IIIC; 0is / 0a -> 0), TNM categories to the
bare category without the c/p/yp prefix or the (i+) / (sn) / (0) sub-qualifiers ("cT2b" -> "T2b",
"pN0(i+)" -> "N0", "M1a(1)" -> "M1a"), and Gleason results to the ISUP 2014 grade group 1-5.
A reading that does not fit the grammar, or whose parts disagree ("Grade group 1 (Gleason 3+4=7)"),
gives no value: never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cds_service.knowledge.valuesets import LOINC, SNOMED, canonical_system, coding_list
from cds_service.knowledge.vocabulary import STAGE_GROUPS

# Pseudo value-set id that selection gives an Observation whose code is text only (no LOINC or
# SNOMED CT code) and names stage, TNM or Gleason grade: the staging stage reads its text.
STAGING_TEXT = "staging-text"

# mCODE's AJCC code system (alias AJCC in the mCODE IG); seen with and without https / a slash
AJCC_SYSTEMS = frozenset(
    {
        "http://cancerstaging.org",
        "https://cancerstaging.org",
        "http://cancerstaging.org/",
        "https://cancerstaging.org/",
    }
)

_ROMAN = {"0": "0", "1": "I", "2": "II", "3": "III", "4": "IV"} | {r: r for r in ("I", "II", "III", "IV")}
_GROUP = r"(?P<num>IV|III|II|I|[0-4])(?P<letter>[A-Da-d])?(?P<sub>[1-3])?(?P<zero>is|a)?"
_END = r"(?![A-Za-z0-9+])"
# "Stage IIA", "stage group 2A", "AJCC stage IIIC", "clinical stage: IA", "Stage IIA (AJCC 8th)"
_STAGE_WORD = re.compile(r"\bstage(?:\s+group(?:ing)?)?\s*[:=\-]?\s*" + _GROUP + _END, re.IGNORECASE)
# "Stage IIA or IIB", "stage II-III", "IIA/IIB": an alternative after the stage makes it unreadable
_ALTERNATIVE = re.compile(r"\s*(?:or|/|to|vs\.?|versus|-)\s*(?:stage\s*)?" + _GROUP + _END, re.IGNORECASE)
# a bare value ("IIA", "2A", AJCC code "3C", "IIA (AJCC)"): only when the whole text is the value
_STAGE_BARE = re.compile(r"^\s*" + _GROUP + r"\s*(?:\([^)]*\))?\s*$", re.IGNORECASE)

# T/N/M: optional c/p/yc/yp/r/a prefix, category letter, value, optional sub-qualifiers.
# Categories are upper case in every notation we know; a lower-case letter before T/N/M is a prefix.
_TNM = re.compile(
    # starts the text, follows a non-letter, or follows the end of another category ("T2bN0M0")
    r"(?:^|(?<=[^A-Za-z])|(?<=[0-9a-eX)]))"
    r"(?P<prefix>yc|yp|rc|rp|c|p|y|r|a)?"
    r"(?P<cat>[TNM])"
    r"(?P<val>is|[Xx]|[0-4](?:mi|[a-eA-E])?[0-3]?|a)"
    r"(?P<qual>(?:\s?\((?:i\+|i-|mol\+|mol-|sn|f|m|\d|DCIS|LAMN|Paget)\))*)"
    r"(?=[^a-z]|$)"
)
_TNM_BARE = re.compile(r"^\s*(?P<prefix>yc|yp|c|p)?(?P<val>is|[Xx]|[0-4](?:mi|[a-eA-E])?[0-3]?)\s*$")

_GLEASON_PATTERN = re.compile(
    r"(?:gleason(?:\s+score)?\s*[:=]?\s*(?:\d{1,2}\s*)?\(?\s*)?"
    r"(?<![\d.])(?P<p>[1-5])\s*\+\s*(?P<s>[1-5])(?:\s*=\s*(?P<t>\d{1,2}))?(?![\d.])",
    re.IGNORECASE,
)
_GLEASON_TOTAL = re.compile(r"\bgleason(?:\s+score)?\s*[:=]?\s*(?P<t>\d{1,2})(?!\s*[+\d])", re.IGNORECASE)
_GRADE_GROUP = re.compile(
    r"(?:\bgrade\s+group|\bGG|\bISUP(?:\s+grade)?(?:\s+group)?)\s*[:=]?\s*(?P<g>[1-5])(?![\d.])",
    re.IGNORECASE,
)
_STAGING_WORDS = re.compile(
    r"\b(?:stag(?:e|ing)|tnm|gleason|grade\s+group|isup|GG\s*[1-5]|(?:c|p|yp)?[TNM]\s+category)\b",
    re.IGNORECASE,
)


def vocabulary_stage(label: str) -> str | None:
    """AJCC stage label -> the knowledge base's stage group (None when it has no such group)."""
    label = label.strip()
    if label.lower() in ("0is", "0a"):
        return "0"
    folded = re.sub(r"(?<=[A-D])[1-3]$", "", label)
    return folded if folded in STAGE_GROUPS else None


def _group(m: re.Match[str]) -> str | None:
    num, letter, sub, zero = m.group("num"), m.group("letter"), m.group("sub"), m.group("zero")
    roman = _ROMAN[num.upper()]
    if roman == "0":
        if letter or sub:
            return None
        return vocabulary_stage("0" + (zero or "").lower())
    if zero:
        return None
    return vocabulary_stage(roman + (letter or "").upper() + (sub or ""))


def parse_stage(text: Any) -> str | None:
    """ "Stage IIA" / "stage 2A" / "IIA" / "3C" -> "IIA" / "IIA" / "IIA" / "IIIC"; None otherwise."""
    if not isinstance(text, str) or not text.strip():
        return None
    found: set[str | None] = set()
    for m in _STAGE_WORD.finditer(text):
        found.add(_group(m))
        alternative = _ALTERNATIVE.match(text, m.end())
        if alternative:
            found.add(_group(alternative))
    if None in found and len(found) > 1:
        return None  # "stage IIA or IIE": one of the readings is not a stage group we know
    found.discard(None)
    if not found:
        bare = _STAGE_BARE.match(text)
        found = {g for g in (_group(bare),) if g} if bare else set()
    return found.pop() if len(found) == 1 else None  # two different stages in one text: unreadable


def ajcc_stage(code: Any) -> str | None:
    """An AJCC (cancerstaging.org) stage-group code, e.g. "3C" or "IIIC", -> "IIIC"."""
    if not isinstance(code, str):
        return None
    bare = _STAGE_BARE.match(code)
    return _group(bare) if bare else None


def _category(cat: str, val: str) -> str:
    if val.lower() == "is":
        return f"{cat}is"
    if val.lower() == "x":
        return f"{cat}X"
    return f"{cat}{val.lower()}"


def parse_tnm(text: Any) -> dict[str, str]:
    """ "cT2b N0 M0" / "T2bN0M0" / "pT3a" -> {"T": "T2b", "N": "N0", "M": "M0"} / {"T": "T3a"}.

    A category given twice with different values in one text is left out (unreadable)."""
    if not isinstance(text, str):
        return {}
    seen: dict[str, set[str]] = {}
    for m in _TNM.finditer(text):
        if m.group("val") == "a" and m.group("cat") != "T":
            continue  # "Ta" is a T category (non-invasive papillary); "Na" / "Ma" are not categories
        seen.setdefault(m.group("cat"), set()).add(_category(m.group("cat"), m.group("val")))
    return {cat: values.pop() for cat, values in seen.items() if len(values) == 1}


def ajcc_category(code: Any, category: str | None = None) -> str | None:
    """An AJCC category code ("cT3", "pN0", "cM1b", or bare "T2b") -> "T3" / "N0" / "M1b".
    With `category` given, a bare value ("2b") is read as that category."""
    if not isinstance(code, str):
        return None
    found = parse_tnm(code)
    if len(found) == 1 and _TNM.fullmatch(code.strip()):
        ((cat, label),) = found.items()
        return label if category in (None, cat) else None
    if category:
        bare = _TNM_BARE.match(code)
        if bare:
            return _category(category, bare.group("val"))
    return None


def grade_from_total(total: int) -> int | None:
    # ISUP 2014: <=6 -> 1, 8 -> 4, 9-10 -> 5; 7 depends on the primary pattern (3+4 = 2, 4+3 = 3)
    if 2 <= total <= 6:
        return 1
    return {8: 4, 9: 5, 10: 5}.get(total)


def grade_from_patterns(primary: int, secondary: int) -> int | None:
    total = primary + secondary
    if total == 7:
        return 2 if primary == 3 else 3
    return grade_from_total(total)


@dataclass(frozen=True)
class GradeReading:
    group: int | None
    problem: str | None = None  # why no group, when the text did speak of a grade


def parse_grade(text: Any, gleason_context: bool = False) -> GradeReading:
    """Grade group from "Grade group 1 (Gleason 3+3=6)", "Gleason 3+4=7", "GG 2", "ISUP grade 3".

    `gleason_context`: the text is the value of a Gleason observation, so a bare "3+4" or "7"
    counts. Every group the text gives must agree; a bare Gleason 7 is ambiguous (3+4 or 4+3)."""
    if not isinstance(text, str) or not text.strip():
        return GradeReading(None)
    groups: set[int] = set()
    problem = None
    for m in _GRADE_GROUP.finditer(text):
        groups.add(int(m.group("g")))
    patterns = list(_GLEASON_PATTERN.finditer(text))
    for m in patterns:
        if not gleason_context and "gleason" not in m.group(0).lower() and not groups:
            continue  # "3+4" alone outside a Gleason record is not read
        primary, secondary = int(m.group("p")), int(m.group("s"))
        if m.group("t") and int(m.group("t")) != primary + secondary:
            problem = f"Gleason {primary}+{secondary} does not add up to {m.group('t')}"
            continue
        group = grade_from_patterns(primary, secondary)
        if group:
            groups.add(group)
    if not patterns:
        totals = [int(m.group("t")) for m in _GLEASON_TOTAL.finditer(text)]
        if gleason_context and not totals:
            bare = re.fullmatch(r"\s*(\d{1,2})\s*", text)
            totals = [int(bare.group(1))] if bare else []
        for total in totals:
            group = grade_from_total(total)
            if group:
                groups.add(group)
            elif total == 7 and not groups:
                problem = "Gleason score 7 without its patterns (3+4 or 4+3) is ambiguous"
    if len(groups) > 1:
        return GradeReading(None, f"the grade group and the Gleason score disagree ({sorted(groups)})")
    if groups:
        return GradeReading(groups.pop())
    return GradeReading(None, problem)


# A text-coded record is read as cancer staging only with a cancer-staging cue, and never when it
# names another staging system ("CKD stage 4", "pressure ulcer stage 2", "NYHA class", "GOLD 3").
_CANCER_CUE = re.compile(
    r"\b(?:ajcc|tnm|uicc|clinical\s+stag|patholog\w*\s+stag|stage\s+group|cancer|carcinoma|malignan|"
    r"neoplasm|tumou?r|oncolog|breast|prostat|gleason|isup|grade\s+group|GG\s*[1-5]|"
    r"(?:c|p|yp)?[TNM]\s+category)",
    re.IGNORECASE,
)
_OTHER_STAGING = re.compile(
    r"\b(?:ckd|kidney|renal|nephro|egfr|ulcer|pressure|decubitus|hypertensi|heart\s+failure|nyha|copd|gold|"
    r"fibrosis|cirrhosis|sleep|labou?r|hiv|lyme|syphilis|parkinson|hoehn|dementia|alzheimer|retinopathy)",
    re.IGNORECASE,
)


def is_cancer_staging_text(text: str) -> bool:
    """Whether a record known only by its text speaks of cancer stage, TNM or Gleason grade."""
    return not _OTHER_STAGING.search(text) and bool(_CANCER_CUE.search(text) or parse_tnm(text))


def is_text_staging_code(concept: Any) -> bool:
    """Selection probe: an Observation.code with no LOINC / SNOMED CT code whose text names stage,
    TNM or Gleason grade ("Clinical stage", "Gleason score", "cT2b N0 M0")."""
    if not isinstance(concept, Mapping):
        return False
    for coding in coding_list(concept):
        if (
            isinstance(coding, Mapping)
            and canonical_system(coding.get("system")) in (LOINC, SNOMED)
            and coding.get("code")
        ):
            return False  # a standard code says what it is; its text is only a display
    text = concept_text(concept)
    return text is not None and bool(_STAGING_WORDS.search(text) or parse_tnm(text))


def concept_text(concept: Any) -> str | None:
    if isinstance(concept, Mapping) and isinstance(concept.get("text"), str) and concept["text"].strip():
        return str(concept["text"])
    return None

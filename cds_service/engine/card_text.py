"""Wording helpers for concise cards (CDS Hooks: the summary stands alone, the detail is brief).

A card says the verdict, the better study, the deciding facts with their dates and one line of
evidence; the alternatives table, the sources and the full reasoning live on the rule page behind
the card's link. Figures that the clinical reference marks unverified carry the mark `[I]` in a rule
text: a sentence holding it is never shown on a card as a fact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cds_service.knowledge.model import UNVERIFIED_MARK, Procedure, Rating

SUMMARY_MAX = 139
DETAIL_MAX_LINES = 12
MAX_FACTS = 4

# A sentence ends at . ! or ? followed by a space and a capital or an opening bracket; "vs." and
# "et al." are not followed by a capital in the rule texts, and decimals have no space.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"])")
_TAIL_PARENS = re.compile(r"\s*\([^()]*\)$")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def verified(text: str, limit: int | None = None) -> str:
    """The sentences of a rule text that hold no unverified figure, at most `limit` of them."""
    kept = [s for s in sentences(text) if UNVERIFIED_MARK not in s]
    return " ".join(kept[:limit] if limit else kept)


_SHORTER = (
    (" skull base to mid-thigh", ""),
    (", abdomen and pelvis", "/abdomen/pelvis"),
    ("abdomen and pelvis", "abdomen/pelvis"),
    (" without and with IV contrast", " with and without contrast"),
    (" without IV contrast", " without contrast"),
    (" with IV contrast", " with contrast"),
)


def short_name(proc: Procedure) -> str:
    """"CT chest, abdomen and pelvis with IV contrast" -> "CT chest/abdomen/pelvis with contrast", for a
    summary that must fit; the detail and the suggestions keep the full name."""
    name = _TAIL_PARENS.sub("", proc.display)
    for long, short in _SHORTER:
        name = name.replace(long, short)
    return name


def shorten(text: str, procedures: Iterable[Procedure]) -> str:
    """Every study name in `text` in its short form (for a summary written elsewhere that must fit)."""
    for proc in sorted(procedures, key=lambda p: -len(p.display)):
        if proc.display in text:
            text = text.replace(proc.display, short_name(proc))
    return text


def grammar(text: str) -> str:
    """ "X is may be appropriate" -> "X may be appropriate" (a category label used after "is")."""
    return text.replace(" is may be appropriate", " may be appropriate")


def tracer_name(proc: Procedure) -> str:
    """"PSMA PET/CT skull base to mid-thigh" -> "PSMA"; "FDG-PET/CT ..." -> "FDG"."""
    head = proc.display.split("PET")[0].rstrip(" -")
    return _TAIL_PARENS.sub("", head) or proc.display


def fit(*candidates: str) -> str:
    """The first candidate summary that fits; the last one cut at a word when none does."""
    for text in candidates:
        if text and len(text) <= SUMMARY_MAX:
            return text
    last = next((c for c in reversed(candidates) if c), "")
    cut = last[: SUMMARY_MAX - 1].rsplit(" ", 1)[0].rstrip(" ,;:")
    return cut + "…"


def provenance(rating: Rating) -> str:
    """What kind of rating this is, as a clinician would look it up."""
    if rating.source_kind == "translated":
        return f"{rating.source} (translated by this service from {rating.guideline}; not an ACR rating)"
    return rating.provenance


def or_list(names: Iterable[str]) -> str:
    items = list(dict.fromkeys(names))
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def line_count(detail: str) -> int:
    return sum(1 for line in detail.splitlines() if line.strip())

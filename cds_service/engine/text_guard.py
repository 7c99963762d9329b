"""Facts read from free text may raise a flag, never by themselves lower a rating.

A report conclusion or a problem read by NLP carries lower confidence than a code (issue 8): it may
raise a red flag, fire a pitfall or prompt a better study, but it must not turn an order into
"usually not appropriate" on its own. So when an order is rated usually-not-appropriate with all
facts, it is rated again with the coded facts only (`Facts.without_text`); if that rating is not
usually-not-appropriate, the order keeps the coded rating. Red flags, pitfalls and the suggested
studies still come from all facts, and the card says what the text suggested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TypeVar

from cds_service.engine.rating import StudyRating, rate_study
from cds_service.engine.scenario import select_scenario
from cds_service.knowledge import Knowledge
from cds_service.model import Facts

NOT_APPROPRIATE = "usually-not-appropriate"
T = TypeVar("T")


def _merged(first: Iterable[T], second: Iterable[T], key: Callable[[T], object]) -> tuple[T, ...]:
    out: dict[object, T] = {}
    for item in (*first, *second):
        out.setdefault(key(item), item)
    return tuple(out.values())


def _note(rated: StudyRating) -> str:
    assert rated.match is not None and rated.procedure is not None
    return (
        f"Facts read from report or problem text place the patient in "
        f"'{rated.match.scenario.title}' ({rated.match.variant.title}), where "
        f"{rated.procedure.display} is usually not appropriate. Text alone never lowers a rating: "
        "this rating uses the coded record only; confirm the text finding before changing the order."
    )


def _coded(with_text: StudyRating, coded: StudyRating) -> StudyRating:
    note = _note(with_text)
    if coded.match is not None:
        return replace(
            coded,
            pitfalls=_merged(coded.pitfalls, with_text.pitfalls, key=lambda p: p.pitfall.id),
            replacements=_merged(coded.replacements, with_text.replacements, key=lambda a: a.procedure.id),
            text_note=note,
        )
    # no coded scenario rates the study: keep the text scenario for the card, without its rating
    return replace(with_text, rating=None, pama=coded.pama, text_note=note)


def guard_text_downgrades(
    ratings: Sequence[StudyRating], facts: Facts, knowledge: Knowledge, unretrieved: tuple[str, ...] = ()
) -> list[StudyRating]:
    """Replace each text-driven "usually not appropriate" by the coded-only rating (see module doc)."""
    if not facts.has_text or all(r.category != NOT_APPROPRIATE for r in ratings):
        return list(ratings)
    coded_facts = facts.without_text()
    selection = select_scenario(coded_facts, knowledge, unretrieved)
    out = []
    for rated in ratings:
        if rated.category == NOT_APPROPRIATE and rated.match is not None:
            coded = rate_study(rated.study, selection, coded_facts, knowledge)
            if coded.category != NOT_APPROPRIATE:
                rated = _coded(rated, coded)
        out.append(rated)
    return out

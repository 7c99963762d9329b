"""Every card of every fixture case, rendered by the real service, is concise and speaks to clinicians.

Issue 9 point 6 (CDS Hooks: the summary stands alone, the detail is brief): summary <= 140
characters, detail <= 12 non-empty lines, no internal file names, no rule expressions, no
"clinical-knowledge" section references and no repeated line. The cases are read from
fixtures/cases/, so a case added later is checked too. Each case runs with the default quiet mode and
with `quiet_appropriate` off, so the cards that quiet mode hides (usually appropriate) are checked as
well.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from cds_service import replay
from cds_service.knowledge.predicates import PREDICATE_NAMES
from tests.e2e.e2e_support import all_cases, case_id

CASES = all_cases()
SUMMARY_MAX = 140
DETAIL_MAX_LINES = 12
FILE_NAME = re.compile(r"\d{3}_[0-9a-f]{16}\.txt|\.ya?ml\b|\.py\b|\.json\b")
# predicate keywords with an underscore cannot be English words on a card (any_concept, psa_below, ...)
RULE_WORDS = sorted(p for p in PREDICATE_NAMES if "_" in p)
RULE_EXPRESSION = re.compile(r"[{}]|\b(?:" + "|".join(map(re.escape, RULE_WORDS)) + r")\b")
SECTION_REF = re.compile(r"clinical-knowledge|clinical knowledge \d", re.IGNORECASE)


@pytest.fixture(scope="module")
def apps(_e2e_session) -> dict[Any, replay.InProcess]:
    return {}


def _app(apps: dict, runner: Any, as_of: Any, quiet: bool) -> replay.InProcess:
    key = (as_of, quiet)
    if key not in apps:
        if quiet:
            apps[key] = runner.app(as_of)
        else:
            settings = dataclasses.replace(runner.settings, quiet_appropriate=False)
            apps[key] = replay.InProcess(as_of, settings=settings)
    return apps[key]


def card_problems(card: dict[str, Any]) -> list[str]:
    """What makes a card too long or unreadable for a clinician (empty when it is fine)."""
    out = []
    summary, detail = card.get("summary", ""), card.get("detail", "")
    if len(summary) > SUMMARY_MAX:
        out.append(f"summary has {len(summary)} characters: {summary}")
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    if len(lines) > DETAIL_MAX_LINES:
        out.append(f"detail has {len(lines)} non-empty lines")
    repeated = sorted({line for line in lines if lines.count(line) > 1})
    if repeated:
        out.append(f"repeated detail lines: {repeated}")
    texts = [summary, detail, *(s.get("label", "") for s in card.get("suggestions") or [])]
    texts += [link.get("label", "") for link in card.get("links") or []]
    for text in texts:
        for pattern, what in ((FILE_NAME, "file name"), (RULE_EXPRESSION, "rule expression"),
                              (SECTION_REF, "reference-section id")):
            found = pattern.search(text)
            if found:
                out.append(f"{what} {found.group(0)!r} in: {text[:200]}")
    return out


def test_the_checker_catches_each_kind_of_problem():
    good = {"summary": "Bone scan whole body is usually appropriate", "detail": "**Facts**\n\n- PSA 4 ng/mL"}
    assert card_problems(good) == []
    bad = [
        {"summary": "x" * 141, "detail": ""},
        {"summary": "s", "detail": "\n".join(f"line {i}" for i in range(13))},
        {"summary": "s", "detail": "- a\n- b\n- a"},
        {"summary": "s", "detail": "Source article 001_b0aab85b4ad18bf0.txt"},
        {"summary": "s", "detail": "see cards/pitfalls.yaml"},
        {"summary": "s", "detail": "Applies when {'risk_group_in': ['low']}"},
        {"summary": "s", "detail": "when any_concept: bone-pain"},
        {"summary": "s", "detail": "verified in clinical-knowledge 1.B"},
    ]
    assert all(card_problems(card) for card in bad)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_card_of_the_case_is_concise_and_readable(case, e2e, apps):
    rendered = 0
    for hook in case["hooks"]:
        for quiet in (True, False):
            rp, _ = e2e.load(case, hook)
            status, body, _ = replay.run(rp, _app(apps, e2e, rp.as_of, quiet))
            assert status == 200, f"{case['name']} [{hook}] -> {status}"
            for card in body.get("cards", []):
                rendered += 1
                problems = card_problems(card)
                assert not problems, f"{case['name']} [{hook}, quiet={quiet}]: {problems}"
    expected_cards = [o.get("card") for o in case["expected"]["orders"].values()]
    if any(c not in (None, "none", ["none"]) and "none" not in (c if isinstance(c, list) else [c])
           for c in expected_cards):
        assert rendered, f"{case['name']}: a card is expected but none was rendered"

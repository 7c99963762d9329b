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


def rating_problems(body: dict[str, Any], rule_kinds: dict[tuple[str, str], set[str]]) -> list[str]:
    """An ACR category only for a rating whose rule says source kind `acr` (issue 9 point 5)."""
    out = []
    actions = body.get("systemActions") or []
    resources = [a.get("resource") or {} for a in actions]
    resources += [o for c in body.get("cards", []) for s in c.get("suggestions") or []
                  for a in s.get("actions") or [] for o in [a.get("resource") or {}]]
    for res in resources:
        for ext in res.get("extension") or []:
            if not str(ext.get("url", "")).endswith("/StructureDefinition/imaging-appropriateness"):
                continue
            sub = {e["url"]: e.get("valueCode") for e in ext.get("extension") or []}
            # a part of a rated combination carries the combination's rating: its kind is not listed
            kinds = rule_kinds.get((sub.get("rule", ""), sub.get("procedure", "")), {"acr", "translated"})
            sent = sub.get("sourceKind")
            if "category" in sub and (sent != "acr" or "acr" not in kinds):
                out.append(f"ACR category sent for a rating of kind {sent}: {sub}")
            if "translatedCategory" in sub and (sent != "translated" or "translated" not in kinds):
                out.append(f"translatedCategory sent for a rating of kind {sent}: {sub}")
    return out


@pytest.fixture(scope="module")
def rule_kinds() -> dict[tuple[str, str], set[str]]:
    """(rule, procedure) -> the source kinds its variants give that study."""
    from cds_service.knowledge import load_knowledge

    kinds: dict[tuple[str, str], set[str]] = {}
    for s in load_knowledge().scenarios:
        for v in s.variants:
            for pid, r in v.ratings.items():
                kinds.setdefault((s.id, pid), set()).add(r.source_kind)
    return kinds


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_card_of_the_case_is_concise_and_readable(case, e2e, apps, rule_kinds):
    rendered = 0
    for hook in case["hooks"]:
        for quiet in (True, False):
            rp, _ = e2e.load(case, hook)
            status, body, _ = replay.run(rp, _app(apps, e2e, rp.as_of, quiet))
            assert status == 200, f"{case['name']} [{hook}] -> {status}"
            assert not rating_problems(body, rule_kinds), rating_problems(body, rule_kinds)
            for card in body.get("cards", []):
                rendered += 1
                problems = card_problems(card)
                assert not problems, f"{case['name']} [{hook}, quiet={quiet}]: {problems}"
    expected_cards = [o.get("card") for o in case["expected"]["orders"].values()]
    if any(c not in (None, "none", ["none"]) and "none" not in (c if isinstance(c, list) else [c])
           for c in expected_cards):
        assert rendered, f"{case['name']}: a card is expected but none was rendered"


def test_the_rating_checker_catches_a_translated_rating_sent_as_an_acr_category():
    def body(**sub: str) -> dict[str, Any]:
        ext = [{"url": k, "valueCode": v} for k, v in sub.items()]
        ours = {"url": "https://x.org/fhir/StructureDefinition/imaging-appropriateness", "extension": ext}
        return {"systemActions": [{"resource": {"extension": [ours]}}]}

    kinds = {("prostate-initial-staging", "psma-pet-ct"): {"translated"}}
    where = {"rule": "prostate-initial-staging", "procedure": "psma-pet-ct"}
    assert rating_problems(body(category="usually-not-appropriate", sourceKind="acr", **where), kinds)
    assert rating_problems(body(category="usually-not-appropriate", sourceKind="translated", **where), kinds)
    ok = body(translatedCategory="usually-not-appropriate", sourceKind="translated", **where)
    assert rating_problems(ok, kinds) == []

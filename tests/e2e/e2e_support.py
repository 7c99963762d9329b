"""Shared machinery of the end-to-end tests: run a case through the service and check its expectations.

A case (fixtures/cases/*.json, schema in fixtures/schema/case.schema.json) is replayed three ways:
  - "http":     replay.run through the Flask test client, prefetch filled from discovery;
  - "cli":      `cds-service replay <case> --hook H --json` in-process (what a user runs);
  - "fallback": no prefetch; the FHIR server is the same bundle served by `responses`.
What the response says is read in one place (`Outcome`), so a change in how the engine encodes
rule ids touches only this file:
  - ratings: update systemActions on each ServiceRequest (Argonaut pama-rating + our extension);
  - rule ids: `/rules/<id>` links on cards, card source.topic codes, and extension values;
  - suggested procedures: codings of the resources each suggestion creates, mapped through the
    procedure catalog in cards/procedures.yaml (tracer codes and components included).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service import replay

REPO = Path(__file__).resolve().parents[2]
CASES_DIR = REPO / "fixtures" / "cases"
FHIR_BASE = "https://fhir.replay.test/r4"
RED_FLAGS = {"red-flag-cord-compression", "red-flag-new-neuro-symptoms"}
SCENARIOS = {
    "prostate-metastatic-systemic-therapy", "breast-neoadjuvant-suspected-metastases",
    "breast-early-stage-asymptomatic", "prostate-biochemical-recurrence", "prostate-initial-staging",
    "breast-metastatic-discordant-bone-imaging", "insufficient-data", "no-criteria-apply", *RED_FLAGS,
    # issue 9 point 3 (seed situations that had no rule)
    "prostate-post-prostatectomy-early-rising-psa", "prostate-post-prostatectomy-undetectable-psa",
    "breast-aggressive-subtype-staging",
    "prostate-nonmetastatic-systemic-therapy",
}
WAYS = ("http", "cli", "fallback")
_RULE_LINK = re.compile(r"/rules/([A-Za-z0-9._-]+)")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def all_cases() -> list[dict[str, Any]]:
    cases = []
    for path in sorted(CASES_DIR.glob("*.json")):
        case = json.loads(path.read_text())
        case["_path"] = path
        cases.append(case)
    return cases


def primary_scenario(case: Mapping[str, Any]) -> str:
    scen = case["expected"]["scenario"]
    return scen[0] if isinstance(scen, list) else scen


def case_hooks(scenario: str) -> list[tuple[dict[str, Any], str]]:
    """(case, hook) pairs of the cases whose (first) expected scenario is `scenario`."""
    return [(c, h) for c in all_cases() if primary_scenario(c) == scenario for h in c["hooks"]]


def named_case_runs(names: Iterable[str]) -> list[tuple[dict[str, Any], str, str]]:
    """(case, hook, way) for every hook of the named cases, replayed each of the three ways."""
    wanted = set(names)
    return [
        (c, h, way) for c in all_cases() if c["name"] in wanted for h in c["hooks"] for way in WAYS
    ]


def case_id(value: Any) -> str:
    return value["name"] if isinstance(value, dict) else str(value)


# --- reading a response ----------------------------------------------------------------------------

_CPT = "http://www.ama-assn.org/go/cpt"
_HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
# Used only until cards/procedures.yaml (knowledge-engine issue) is in the checkout.
_MINIMAL_CATALOG = {
    "procedures": [
        {"id": "bone-scan-whole-body", "codes": [{"system": _CPT, "code": "78306"}]},
        {"id": "pet-ct-unspecified-tracer", "codes": [{"system": _CPT, "code": "78815"}]},
        {"id": "ct-chest-contrast", "codes": [{"system": _CPT, "code": "71260"}]},
        {"id": "ct-ap-contrast", "codes": [{"system": _CPT, "code": "74177"}]},
        {"id": "ct-cap-contrast", "components": ["ct-chest-contrast", "ct-ap-contrast"],
         "codes": [{"system": "http://loinc.org", "code": "72254-6"}]},
        {"id": "mri-brain-wwo", "codes": [{"system": _CPT, "code": "70553"}]},
    ],
    "pet_tracers": [{"system": _HCPCS, "code": "A9595", "procedure": "psma-pet-ct"},
                    {"system": _HCPCS, "code": "A9552", "procedure": "fdg-pet-ct"}],
}


@cache
def catalog() -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], str], dict[str, tuple[str, ...]]]:
    """(code -> procedure id, tracer code -> procedure id, composite id -> component ids)."""
    codes: dict[tuple[str, str], str] = {}
    tracers: dict[tuple[str, str], str] = {}
    components: dict[str, tuple[str, ...]] = {}
    path = REPO / "cards" / "procedures.yaml"
    data = yaml.safe_load(path.read_text()) if path.is_file() else _MINIMAL_CATALOG
    aliases = (data or {}).get("system_aliases") or {}
    for proc in (data or {}).get("procedures") or []:
        for c in proc.get("codes") or []:
            codes[(aliases.get(c["system"], c["system"]), str(c["code"]))] = proc["id"]
        if proc.get("components"):
            components[proc["id"]] = tuple(proc["components"])
    for t in (data or {}).get("pet_tracers") or []:
        tracers[(aliases.get(t["system"], t["system"]), str(t["code"]))] = t["procedure"]
    return codes, tracers, components


def procedures_of(resources: Iterable[Mapping[str, Any]]) -> set[str]:
    codes, tracers, components = catalog()
    found: set[str] = set()
    tracer_ids: set[str] = set()
    for res in resources:
        for coding in ((res.get("code") or {}).get("coding") or []):
            key = (coding.get("system"), str(coding.get("code")))
            if key in codes:
                found.add(codes[key])
            if key in tracers:
                tracer_ids.add(tracers[key])
        for value in _extension_values(res.get("extension") or []):
            if value in codes.values() or value in components:
                found.add(value)
    if tracer_ids:
        found.discard("pet-ct-unspecified-tracer")
        found |= tracer_ids
    for composite, parts in components.items():
        if set(parts) <= found:
            found.add(composite)
    return found


def _extension_values(exts: Iterable[Any]) -> Iterable[str]:
    for ext in exts:
        if not isinstance(ext, Mapping):
            continue
        value = replay._ext_value(ext)
        if value is not None:
            yield value
        yield from _extension_values(ext.get("extension") or [])


@cache
def pitfall_titles() -> dict[str, str]:
    """Pitfall title -> id, from cards/pitfalls.yaml (empty before the knowledge base lands)."""
    path = REPO / "cards" / "pitfalls.yaml"
    data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return {p["title"]: p["id"] for p in (data or {}).get("pitfalls") or [] if p.get("title")}


def _card_rules(card: Mapping[str, Any]) -> set[str]:
    rules = set()
    # Until cards link each pitfall's own rule page, a pitfall is recognised by its title in the detail.
    detail = str(card.get("detail") or "")
    rules.update(pid for title, pid in pitfall_titles().items() if title in detail)
    for link in card.get("links") or []:
        rules.update(_RULE_LINK.findall(str(link.get("url", ""))))
    topic = (card.get("source") or {}).get("topic") or {}
    if topic.get("code"):
        rules.add(str(topic["code"]))
    rules.update(_extension_values(card.get("extension") or []))
    return rules


@dataclass
class Outcome:
    ratings: dict[str, dict[str, str]]  # ServiceRequest id -> {"pama": ..., extension values}
    cards: list[tuple[str, frozenset[str], frozenset[str]]]  # (indicator, rule ids, suggested procedures)
    rules: set[str] = field(default_factory=set)  # every rule id the response mentions
    # per card (same order as `cards`): the facts it asks to record (card extension missingFacts)
    asks: list[frozenset[str]] = field(default_factory=list)

    @classmethod
    def read(cls, body: Mapping[str, Any]) -> Outcome:
        ratings = replay.ratings(body)
        rules: set[str] = set()
        for info in ratings.values():
            rules.update(v for k, v in info.items() if k != "pama")
        for action in body.get("systemActions") or []:
            rules.update(_extension_values(((action.get("resource") or {}).get("extension")) or []))
        cards = []
        asks = []
        for card in body.get("cards") or []:
            ext = card.get("extension")
            asks.append(frozenset(ext.get("missingFacts") or ()) if isinstance(ext, Mapping) else frozenset())
            card_rules = _card_rules(card)
            rules |= card_rules
            suggested: set[str] = set()
            for s in card.get("suggestions") or []:
                created = [a.get("resource") for a in s.get("actions") or []
                           if a.get("type") == "create" and isinstance(a.get("resource"), Mapping)]
                suggested |= procedures_of(created)
            cards.append((str(card.get("indicator")), frozenset(card_rules), frozenset(suggested)))
        return cls(ratings, cards, rules, asks)

    def comparable(self) -> dict[str, Any]:
        """What must not depend on how the data arrived (prefetch vs FHIR server); consult ids differ."""
        ratings = {oid: {k: v for k, v in info.items() if not _UUID.search(v)}
                   for oid, info in self.ratings.items()}
        return {"ratings": ratings, "cards": sorted((i, sorted(r), sorted(s)) for i, r, s in self.cards)}


# --- checking expectations ---------------------------------------------------------------------------

def _as_set(value: Any) -> set[str]:
    return set(value) if isinstance(value, list) else {value}


def check(case: Mapping[str, Any], order_ids: Mapping[str, str], status: int, body: Any,
          hook: str = "order-sign") -> Outcome:
    """Assert the response matches the case's expected outcome; order_ids maps order file -> id.

    Under order-select only the selected orders are rated; the others must carry no rating.
    """
    name = case["name"]
    assert status == 200, f"{name}: HTTP {status}: {body}"
    assert isinstance(body, Mapping) and isinstance(body.get("cards"), list), f"{name}: not a CDS response"
    out = Outcome.read(body)
    exp = case["expected"]

    flag_cards = [c for c in out.cards if c[1] & RED_FLAGS]
    for flag in exp["red_flags"]:
        cards = [c for c in flag_cards if flag in c[1]]
        assert cards, f"{name}: no {flag} card (rules seen: {sorted(out.rules)})"
        assert all(c[0] == "critical" for c in cards), f"{name}: {flag} card is not critical"
    for flag in exp["red_flags_absent"]:
        assert flag not in out.rules, f"{name}: {flag} must not fire"
    for proc in exp.get("red_flag_suggestions_include", []):
        assert any(proc in c[2] for c in flag_cards), f"{name}: red-flag card does not suggest {proc}"

    scenarios = _as_set(exp["scenario"])
    seen_scenarios = out.rules & SCENARIOS
    maybe_unrated = all("none" in _as_set(o["pama"]) for o in exp["orders"].values())
    if maybe_unrated and not scenarios & {"insufficient-data", *RED_FLAGS}:
        pass  # nothing need be rated (e.g. PET tracer not coded): the scenario need not show
    elif scenarios == {"no-criteria-apply"} or "no-criteria-apply" in scenarios and not seen_scenarios:
        # no-criteria-apply may leave no trace but the rating code itself
        assert not (seen_scenarios - scenarios), f"{name}: unexpected scenario {sorted(seen_scenarios)}"
    else:
        assert seen_scenarios & scenarios, \
            f"{name}: expected scenario {sorted(scenarios)}, saw {sorted(out.rules)}"
    for absent in exp.get("scenario_absent", []):
        assert absent not in out.rules, f"{name}: scenario {absent} must not apply"

    selected = set(case.get("selections") or case["orders"])
    expected_anywhere = {p for o in exp["orders"].values() for p in o.get("pitfalls", [])}
    order_cards = [c for c in out.cards if not c[1] & RED_FLAGS]
    checked_cards: list[tuple[str, set[str]]] = []
    for order_name, oexp in exp["orders"].items():
        oid = order_ids[order_name]
        info = out.ratings.get(oid, {})
        pama = info.get("pama", "none")
        allowed = _as_set(oexp["pama"])
        if hook == "order-select" and order_name not in selected:
            assert pama == "none", f"{name}: {order_name} is not selected but was rated {pama!r}"
            continue
        assert pama in allowed, f"{name}: {order_name} rated {pama!r}, expected {sorted(allowed)}"
        if "acr_category" in oexp and pama != "none":
            assert oexp["acr_category"] in info.values(), f"{name}: {order_name} category {info}"
        for pitfall in oexp.get("pitfalls", []):
            assert pitfall in out.rules, \
                f"{name}: pitfall {pitfall} missing (rules seen: {sorted(out.rules)})"
        for pitfall in oexp.get("pitfalls_absent", []):
            if pitfall not in expected_anywhere:
                assert pitfall not in out.rules, f"{name}: pitfall {pitfall} must not fire"
        suggested = set().union(*(c[2] for c in order_cards)) if order_cards else set()
        for proc in oexp.get("suggestions_include", []):
            assert proc in suggested, f"{name}: {proc} not suggested (suggested: {sorted(suggested)})"
        if oexp.get("suggestions_any"):
            assert suggested & set(oexp["suggestions_any"]), \
                f"{name}: none of {oexp['suggestions_any']} suggested (suggested: {sorted(suggested)})"
        for proc in oexp.get("suggestions_exclude", []):
            assert proc not in suggested, f"{name}: {proc} must not be suggested"
        for fact in oexp.get("unknown_facts", []):  # rating extension sub-extension unknownFact
            assert pama != "none" and fact in out.rules, f"{name}: {order_name} not rated with {fact} unknown"
        if "missing_facts" in oexp:
            wanted = frozenset(oexp["missing_facts"])
            asked = [a for a, c in zip(out.asks, out.cards, strict=True) if not c[1] & RED_FLAGS]
            assert wanted in asked if wanted else not any(asked), \
                f"{name}: {order_name} card asks for {[sorted(a) for a in asked]}, expected {sorted(wanted)}"
        if "card" in oexp:
            checked_cards.append((oexp["procedure"] or order_name, _as_set(oexp["card"])))

    # Cards are per order (or per multi-order study): compare per procedure group.
    groups: dict[str, set[str]] = {}
    for key, allowed in checked_cards:
        groups[key] = groups.get(key, set()) | allowed if key in groups else allowed
    unchecked = len(checked_cards) < len(exp["orders"])
    if groups and all(v == {"none"} for v in groups.values()) and not unchecked:
        assert not order_cards, f"{name}: expected no card, got {[c[:2] for c in order_cards]}"
    for key, allowed in groups.items():
        if "none" not in allowed:
            assert any(c[0] in allowed for c in order_cards), \
                f"{name}: {key} expected a {sorted(allowed)} card, got {[c[:2] for c in order_cards]}"
    assert len(order_cards) <= len(exp["orders"]), f"{name}: more cards than orders"
    return out


def scenario_tests(scenario: str) -> tuple[Any, Any, Any]:
    """The three tests every scenario module runs: it has cases; each case over HTTP; each through replay."""
    cases = case_hooks(scenario)

    def test_scenario_has_cases() -> None:
        assert cases, f"no fixture case exercises {scenario}"

    @pytest.mark.parametrize("case, hook", cases, ids=case_id)
    def test_over_http(case, hook, e2e) -> None:
        status, body, ids = e2e.http(case, hook)
        check(case, ids, status, body, hook=hook)

    @pytest.mark.parametrize("case, hook", cases, ids=case_id)
    def test_through_replay_cli(case, hook, e2e) -> None:
        status, body, ids = e2e.cli(case, hook)
        check(case, ids, status, body, hook=hook)

    return test_scenario_has_cases, test_over_http, test_through_replay_cli

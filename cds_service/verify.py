"""`cds-service verify [CASES...]`: run fixture case files and check the service's answers against them.

    cds-service verify                       # every fixtures/cases/*.json
    cds-service verify fixtures/cases/x.json other/cases/   # files and directories of case files

Each case file (fixtures/schema/case.schema.json) names a patient bundle, draft orders, the hooks to
call and the `expected` outcome. Every (case, hook) is sent through `replay.run` to an in-process app
built once per evaluation date (the bundle's timestamp date, as replay does), and the answer is
checked by `check_response` -- the one implementation of the expectation check, which the end-to-end
tests (tests/e2e/e2e_support.py) assert on too. The output shows, per case and hook, expected vs
actual (scenario, red flags, per order: PAMA rating, ACR category, card indicator, pitfalls), PASS or
FAIL with the reasons, and the rules the answer cites.
Exit codes: 0 every check passed, 1 at least one FAIL, 2 bad input (missing or malformed case file).

Reading an answer (`Outcome.read`):
  - ratings: update systemActions on each ServiceRequest (Argonaut pama-rating + our extension);
  - rule ids: `/rules/<id>` links on cards, card source.topic codes, and extension values;
  - suggested procedures: codings of the resources each suggestion creates, mapped through the
    procedure catalog (tracer codes and components included).
The scenario, red-flag, pitfall and procedure ids come from the loaded knowledge base, never a list here.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from cds_service import replay
from cds_service.engine.scenario import INSUFFICIENT_DATA, NO_CRITERIA_APPLY
from cds_service.knowledge import Knowledge, load_knowledge
from cds_service.knowledge.cases import DEFAULT_CASES_DIR

_RULE_LINK = re.compile(r"/rules/([A-Za-z0-9._-]+)")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# --- what the knowledge base names -----------------------------------------------------------------

@dataclass(frozen=True)
class Vocabulary:
    """The ids an answer can cite, read from one loaded knowledge base."""

    scenarios: frozenset[str]  # scenario and red-flag rule ids, plus insufficient-data / no-criteria-apply
    red_flags: frozenset[str]
    pitfalls: frozenset[str]
    codes: Mapping[tuple[str, str], str]  # (system, code) -> procedure id
    tracers: Mapping[tuple[str, str], str]  # PET tracer (system, code) -> procedure id
    components: Mapping[str, tuple[str, ...]]  # composite procedure id -> component ids
    pitfall_titles: Mapping[str, str]  # title -> pitfall id

    @classmethod
    def of(cls, knowledge: Knowledge) -> Vocabulary:
        catalog = knowledge.catalog
        return cls(
            scenarios=frozenset({s.id for s in knowledge.scenarios} | {INSUFFICIENT_DATA, NO_CRITERIA_APPLY}),
            red_flags=frozenset(s.id for s in knowledge.scenarios if s.kind == "red-flag"),
            pitfalls=frozenset(knowledge.pitfalls),
            codes=dict(catalog.by_code),
            tracers={key: t.procedure for key, t in catalog.tracers.items()},
            components={p.id: p.components for p in catalog.procedures.values() if p.components},
            pitfall_titles={p.title: p.id for p in knowledge.pitfalls.values() if p.title},
        )


_VOCABULARIES: dict[int, tuple[Knowledge, Vocabulary]] = {}


def vocabulary(knowledge: Knowledge | None = None) -> Vocabulary:
    """The vocabulary of `knowledge` (default: the knowledge base the service loads, CDS_CARDS_DIR's)."""
    if knowledge is None:
        knowledge = load_knowledge(replay._cards_dir())  # cached in-process by the loader
    hit = _VOCABULARIES.get(id(knowledge))
    if hit is None or hit[0] is not knowledge:
        hit = _VOCABULARIES[id(knowledge)] = (knowledge, Vocabulary.of(knowledge))
    return hit[1]


def procedures_of(resources: Iterable[Mapping[str, Any]], vocab: Vocabulary | None = None) -> set[str]:
    """Catalog procedure ids of resources (codes, PET tracer codes, extension values, components)."""
    v = vocab or vocabulary()
    found: set[str] = set()
    tracer_ids: set[str] = set()
    known = set(v.codes.values())
    for res in resources:
        for coding in ((res.get("code") or {}).get("coding") or []):
            key = (coding.get("system"), str(coding.get("code")))
            if key in v.codes:
                found.add(v.codes[key])
            if key in v.tracers:
                tracer_ids.add(v.tracers[key])
        for value in _extension_values(res.get("extension") or []):
            if value in known or value in v.components:
                found.add(value)
    if tracer_ids:
        found.discard("pet-ct-unspecified-tracer")
        found |= tracer_ids
    for composite, parts in v.components.items():
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


def _card_rules(card: Mapping[str, Any], vocab: Vocabulary) -> set[str]:
    rules: set[str] = set()
    # Until cards link each pitfall's own rule page, a pitfall is recognised by its title in the detail.
    detail = str(card.get("detail") or "")
    rules.update(pid for title, pid in vocab.pitfall_titles.items() if title in detail)
    for link in card.get("links") or []:
        rules.update(_RULE_LINK.findall(str(link.get("url", ""))))
    topic = (card.get("source") or {}).get("topic") or {}
    if topic.get("code"):
        rules.add(str(topic["code"]))
    rules.update(_extension_values(card.get("extension") or []))
    return rules


@dataclass
class Outcome:
    """What a CDS Hooks answer says, in rule and procedure ids."""

    ratings: dict[str, dict[str, str]]  # ServiceRequest id -> {"pama": ..., extension values}
    cards: list[tuple[str, frozenset[str], frozenset[str]]]  # (indicator, rule ids, suggested procedures)
    rules: set[str] = field(default_factory=set)  # every rule id the response mentions
    # per card (same order as `cards`): the facts it asks to record (card extension missingFacts)
    asks: list[frozenset[str]] = field(default_factory=list)

    @classmethod
    def read(cls, body: Mapping[str, Any], vocab: Vocabulary | None = None) -> Outcome:
        v = vocab or vocabulary()
        ratings = replay.ratings(body)
        rules: set[str] = set()
        for info in ratings.values():
            rules.update(val for k, val in info.items() if k != "pama")
        for action in body.get("systemActions") or []:
            rules.update(_extension_values(((action.get("resource") or {}).get("extension")) or []))
        cards = []
        asks = []
        for card in body.get("cards") or []:
            ext = card.get("extension")
            asks.append(frozenset(ext.get("missingFacts") or ()) if isinstance(ext, Mapping) else frozenset())
            card_rules = _card_rules(card, v)
            rules |= card_rules
            suggested: set[str] = set()
            for s in card.get("suggestions") or []:
                created = [a.get("resource") for a in s.get("actions") or []
                           if a.get("type") == "create" and isinstance(a.get("resource"), Mapping)]
                suggested |= procedures_of(created, v)
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


def check_response(
    case: Mapping[str, Any], order_ids: Mapping[str, str], status: int, body: Any,
    hook: str = "order-sign", vocab: Vocabulary | None = None,
) -> tuple[list[str], Outcome | None]:
    """(failure messages, the answer read) for one hook call of a case; no failure = the case passes.

    order_ids maps order file name -> ServiceRequest id. Under order-select only the selected orders
    are rated; the others must carry no rating. The Outcome is None when the answer is not a CDS response.
    """
    v = vocab or vocabulary()
    name = case["name"]
    if status != 200:
        return [f"{name}: HTTP {status}: {body}"], None
    if not (isinstance(body, Mapping) and isinstance(body.get("cards"), list)):
        return [f"{name}: not a CDS response"], None
    out = Outcome.read(body, v)
    exp = case["expected"]
    fails: list[str] = []

    def expect(ok: Any, message: str) -> None:
        if not ok:
            fails.append(message)

    red_flags = v.red_flags
    flag_cards = [c for c in out.cards if c[1] & red_flags]
    for flag in exp["red_flags"]:
        cards = [c for c in flag_cards if flag in c[1]]
        expect(cards, f"{name}: no {flag} card (rules seen: {sorted(out.rules)})")
        expect(all(c[0] == "critical" for c in cards), f"{name}: {flag} card is not critical")
    for flag in exp["red_flags_absent"]:
        expect(flag not in out.rules, f"{name}: {flag} must not fire")
    for proc in exp.get("red_flag_suggestions_include", []):
        expect(any(proc in c[2] for c in flag_cards), f"{name}: red-flag card does not suggest {proc}")

    scenarios = _as_set(exp["scenario"])
    seen_scenarios = out.rules & v.scenarios
    maybe_unrated = all("none" in _as_set(o["pama"]) for o in exp["orders"].values())
    if maybe_unrated and not scenarios & {INSUFFICIENT_DATA, *red_flags}:
        pass  # nothing need be rated (e.g. PET tracer not coded): the scenario need not show
    elif scenarios == {NO_CRITERIA_APPLY} or NO_CRITERIA_APPLY in scenarios and not seen_scenarios:
        # no-criteria-apply may leave no trace but the rating code itself
        expect(not (seen_scenarios - scenarios), f"{name}: unexpected scenario {sorted(seen_scenarios)}")
    else:
        expect(seen_scenarios & scenarios,
               f"{name}: expected scenario {sorted(scenarios)}, saw {sorted(out.rules)}")
    for absent in exp.get("scenario_absent", []):
        expect(absent not in out.rules, f"{name}: scenario {absent} must not apply")

    selected = set(case.get("selections") or case["orders"])
    expected_anywhere = {p for o in exp["orders"].values() for p in o.get("pitfalls", [])}
    order_cards = [c for c in out.cards if not c[1] & red_flags]
    checked_cards: list[tuple[str, set[str]]] = []
    for order_name, oexp in exp["orders"].items():
        oid = order_ids[order_name]
        info = out.ratings.get(oid, {})
        pama = info.get("pama", "none")
        allowed = _as_set(oexp["pama"])
        if hook == "order-select" and order_name not in selected:
            expect(pama == "none", f"{name}: {order_name} is not selected but was rated {pama!r}")
            continue
        expect(pama in allowed, f"{name}: {order_name} rated {pama!r}, expected {sorted(allowed)}")
        if "acr_category" in oexp and pama != "none":
            expect(oexp["acr_category"] in info.values(), f"{name}: {order_name} category {info}")
        for pitfall in oexp.get("pitfalls", []):
            expect(pitfall in out.rules,
                   f"{name}: pitfall {pitfall} missing (rules seen: {sorted(out.rules)})")
        for pitfall in oexp.get("pitfalls_absent", []):
            if pitfall not in expected_anywhere:
                expect(pitfall not in out.rules, f"{name}: pitfall {pitfall} must not fire")
        suggested = set().union(*(c[2] for c in order_cards)) if order_cards else set()
        for proc in oexp.get("suggestions_include", []):
            expect(proc in suggested, f"{name}: {proc} not suggested (suggested: {sorted(suggested)})")
        if oexp.get("suggestions_any"):
            expect(suggested & set(oexp["suggestions_any"]),
                   f"{name}: none of {oexp['suggestions_any']} suggested (suggested: {sorted(suggested)})")
        for proc in oexp.get("suggestions_exclude", []):
            expect(proc not in suggested, f"{name}: {proc} must not be suggested")
        for fact in oexp.get("unknown_facts", []):  # rating extension sub-extension unknownFact
            expect(pama != "none" and fact in out.rules,
                   f"{name}: {order_name} not rated with {fact} unknown")
        if "missing_facts" in oexp:
            wanted = frozenset(oexp["missing_facts"])
            asked = [a for a, c in zip(out.asks, out.cards, strict=True) if not c[1] & red_flags]
            expect(wanted in asked if wanted else not any(asked),
                   f"{name}: {order_name} card asks for {[sorted(a) for a in asked]}, "
                   f"expected {sorted(wanted)}")
        if "card" in oexp:
            checked_cards.append((oexp["procedure"] or order_name, _as_set(oexp["card"])))

    # Cards are per order (or per multi-order study): compare per procedure group.
    groups: dict[str, set[str]] = {}
    for key, allowed in checked_cards:
        groups[key] = groups.get(key, set()) | allowed if key in groups else allowed
    unchecked = len(checked_cards) < len(exp["orders"])
    if groups and all(g == {"none"} for g in groups.values()) and not unchecked:
        expect(not order_cards, f"{name}: expected no card, got {[c[:2] for c in order_cards]}")
    for key, allowed in groups.items():
        if "none" not in allowed:
            expect(any(c[0] in allowed for c in order_cards),
                   f"{name}: {key} expected a {sorted(allowed)} card, got {[c[:2] for c in order_cards]}")
    expect(len(order_cards) <= len(exp["orders"]), f"{name}: more cards than orders")
    return fails, out


# --- reading case files ------------------------------------------------------------------------------

@dataclass
class Case:
    path: Path
    data: dict[str, Any]
    replay: replay.Replay
    order_ids: dict[str, str]  # order file name -> ServiceRequest id


def case_paths(inputs: Sequence[str]) -> list[Path]:
    """The case files named: files as given, directories as their *.json (sorted)."""
    if not inputs and not DEFAULT_CASES_DIR.is_dir():  # an installed package carries no fixtures
        raise replay.ReplayError("no CASES given and no fixtures/cases beside this installation")
    paths: list[Path] = []
    for raw in inputs or [str(DEFAULT_CASES_DIR)]:
        path = Path(raw)
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                raise replay.ReplayError(f"no case files (*.json) in {path}")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise replay.ReplayError(f"case file not found: {path}")
    return paths


def load_case(path: Path) -> Case:
    """A case file with its patient and orders (patients/ and orders/ beside its directory)."""
    data = replay._read_json(path, "case file")
    exp = data.get("expected") if isinstance(data, dict) else None
    if not isinstance(exp, dict) or not isinstance(data.get("name"), str):
        raise replay.ReplayError(f"not a case file (needs name, patient, orders, expected): {path}")
    missing = [k for k in ("scenario", "orders", "red_flags", "red_flags_absent") if k not in exp]
    if missing:
        raise replay.ReplayError(f"case file {path}: expected lacks {', '.join(missing)}")
    rp = replay.load_case(path)
    unknown = sorted(set(exp["orders"]) - set(data["orders"]))
    if unknown:
        raise replay.ReplayError(f"case file {path}: expected names orders it does not send: {unknown}")
    for hook in data.get("hooks") or ["order-select"]:
        if hook not in replay.SERVICE_IDS:
            raise replay.ReplayError(f"case file {path}: unknown hook {hook!r}")
    ids = {n: str(o.get("id")) for n, o in zip(data["orders"], rp.orders, strict=True)}
    return Case(path, data, rp, ids)


# --- running and reporting ---------------------------------------------------------------------------

@dataclass
class Result:
    case: Case
    hook: str
    failures: list[str]
    outcome: Outcome | None


def run_case(case: Case, hook: str, transport: Any, vocab: Vocabulary) -> Result:
    rp = dataclasses.replace(case.replay, hook=hook)
    status, body, _ = replay.run(rp, transport)
    failures, out = check_response(case.data, case.order_ids, status, body, hook=hook, vocab=vocab)
    return Result(case, hook, failures, out)


def _ids(values: Iterable[str]) -> str:
    return ", ".join(sorted(values)) or "-"


def _choice(value: Any) -> str:
    return " | ".join(sorted(_as_set(value))) if value is not None else "-"


def _category(info: Mapping[str, str]) -> str:
    return next((val for k, val in info.items() if k in {"category", "acr-category"}), "-")


def render(result: Result, vocab: Vocabulary) -> list[str]:
    """Expected vs actual for one case and hook, the verdict, the failures and the rules fired."""
    case, out = result.case, result.outcome
    exp = case.data["expected"]
    rules = out.rules if out else set()
    lines = [f"{'PASS' if not result.failures else 'FAIL'}  {case.data['name']} [{result.hook}]"]
    row = "    {:<11} expected {:<40} actual {}"
    lines.append(row.format("scenario", _choice(exp["scenario"]), _ids(rules & vocab.scenarios)))
    lines.append(row.format("red flags", _ids(exp["red_flags"]), _ids(rules & vocab.red_flags)))
    order_cards = [c[0] for c in (out.cards if out else []) if not c[1] & vocab.red_flags]
    fired_pitfalls = rules & vocab.pitfalls
    selected = set(case.data.get("selections") or case.data["orders"])
    for order_name, oexp in exp["orders"].items():
        info = out.ratings.get(case.order_ids[order_name], {}) if out else {}
        note = " (not selected)" if result.hook == "order-select" and order_name not in selected else ""
        lines.append(f"  order {order_name}{note}")
        lines.append(row.format("PAMA", _choice(oexp["pama"]), info.get("pama", "none")))
        lines.append(row.format("ACR", _choice(oexp.get("acr_category")), _category(info)))
        lines.append(row.format("card", _choice(oexp.get("card")), ", ".join(order_cards) or "none"))
        lines.append(row.format("pitfalls", _ids(oexp.get("pitfalls", [])), _ids(fired_pitfalls)))
        if oexp.get("pitfalls_absent"):
            wrong = fired_pitfalls & set(oexp["pitfalls_absent"])
            actual = f"FIRED {_ids(wrong)}" if wrong else "none fired"
            lines.append(row.format("not fired", _ids(oexp["pitfalls_absent"]), actual))
    lines.extend(f"  ! {message}" for message in result.failures)
    lines.append(f"  rules fired: {_ids(rules & (vocab.scenarios | vocab.pitfalls))}")
    return lines


class _Apps:
    """One in-process app per evaluation date (the bundle's timestamp date), built on first use."""

    def __init__(self, settings: Any):
        self.settings = settings
        self._apps: dict[date, replay.InProcess] = {}

    def __call__(self, as_of: date) -> replay.InProcess:
        if as_of not in self._apps:
            self._apps[as_of] = replay.InProcess(as_of, settings=self.settings, quiet=True)
        return self._apps[as_of]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cds-service verify", description=__doc__.split("\n\n")[0])
    p.add_argument("cases", nargs="*", metavar="CASES",
                   help=f"case files or directories of them (default: {DEFAULT_CASES_DIR})")
    p.add_argument("--failures-only", action="store_true", help="print only the failing cases")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(argv) if argv is not None else None)
    try:
        cases = [load_case(path) for path in case_paths(args.cases)]
    except replay.ReplayError as exc:
        print(f"verify: {exc}", file=sys.stderr)
        return 2
    from cds_service.config import Settings

    if sys.stderr.isatty():  # building the app takes seconds: say why it waits
        print("verify: loading the knowledge base...", file=sys.stderr, flush=True)
    passed = failed = 0
    failing: list[str] = []
    # The feedback store of a throw-away directory: verifying writes nothing and no earlier
    # dismissal in a real store can silence a card.
    with tempfile.TemporaryDirectory() as scratch:
        settings = dataclasses.replace(Settings.from_env(), feedback_db=Path(scratch) / "verify.sqlite3",
                                       database_url=None)
        apps = _Apps(settings)
        for case in cases:
            transport = apps(case.replay.as_of)
            vocab = vocabulary(transport.client.application.extensions["cds"].knowledge)
            for hook in case.data.get("hooks") or ["order-select"]:
                result = run_case(case, hook, transport, vocab)
                if result.failures:
                    failed += 1
                    failing.append(f"{case.data['name']} [{hook}]")
                else:
                    passed += 1
                if result.failures or not args.failures_only:
                    print("\n".join(render(result, vocab)), flush=True)
    print(f"verify: {passed} passed, {failed} failed ({len(cases)} case files, {passed + failed} hook calls)")
    if failing:
        print("failed: " + "; ".join(failing))
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

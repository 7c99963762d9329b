"""Data-variance harness: run a fixture chart, re-encoded, through the real service and compare outcomes.

A *chart* is a fixture patient bundle (fixtures/patients/*.json) with the draft orders of one of its
cases (fixtures/cases/*.json); "today" is the bundle's timestamp date (2026-11-15). A *variant* is
the same chart after a transformation (a pure function Bundle -> Bundle on a deep copy, see
transforms.py) that re-encodes facts the chart already holds, or adds noise the service must ignore.

Each run goes through the real pipeline in-process: the service's own discovery templates are
answered from the bundle the way an EHR fills prefetch, the hook call is posted to the Flask app
(test client, no network), and the Facts the engine rated on are captured on the way. The
comparison is on an `Outcome`: red-flag rule ids, scenario ids, PAMA rating per order, pitfall ids
and the (indicator, rule) of every card.

The EHR stand-in (`ehr_prefetch`) applies each template's code / status filters, but not its patient
filter: whose resource it is, is left for the service to judge. That is the point of the identity
variants: a prefetch can carry a resource whose subject is another patient in a form a naive
`Patient/` check lets through, and the service must drop it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from cds_service import engine, replay
from cds_service.bundle_search import BundleStore
from cds_service.model import EngineResult, Facts

REPO = Path(__file__).resolve().parents[2]
PATIENTS = REPO / "fixtures" / "patients"
CASES = REPO / "fixtures" / "cases"
TODAY = date(2026, 11, 15)
SUBJECT_FIELDS = ("subject", "patient")

Bundle = dict[str, Any]

# The case each patient is probed with. Where a patient has several cases the one whose outcome
# depends on the most facts is chosen (a rating that can move, rather than "no criteria apply").
PROBE_CASE: Mapping[str, str] = {
    "breast-mets-ct-positive-bone-scan-negative": "breast-ct-positive-bone-scan-negative-ct-cap",
    "breast-early-stage-asymptomatic": "breast-early-stage-bone-scan",
    "breast-neoadjuvant-bone-pain-high-alp": "breast-neoadjuvant-bone-pain-bone-scan",
    "breast-neoadjuvant-egfr-24": "breast-neoadjuvant-egfr-24-ct-cap-contrast",
    "breast-neoadjuvant-abnormal-liver-tests": "breast-neoadjuvant-liver-tests-bone-scan",
    "breast-neoadjuvant-triple-negative": "breast-triple-negative-bone-scan",
    "prostate-bcr-post-prostatectomy-psa-0-4": "prostate-bcr-post-prostatectomy-psma-pet",
    "prostate-bcr-post-radiotherapy-nadir-plus-2": "prostate-bcr-post-radiotherapy-psma-pet",
    "prostate-low-risk-new-diagnosis": "prostate-low-risk-psma-pet",
    "prostate-mcrpc-after-docetaxel": "prostate-mcrpc-bone-scan",
    "prostate-mets-adt-rising-psa": "prostate-mets-adt-rising-psa-bone-scan",
    "prostate-mets-back-pain-leg-weakness": "prostate-mets-cord-compression-bone-scan",
    "prostate-mets-rising-psa-stable-bone-scan": "prostate-mets-discordant-bone-scan",
    "prostate-mets-therapy-changed-6-weeks-flare": "prostate-mets-flare-bone-scan",
}

# A second probe where the order itself matters: the example of a lumbar-spine MRI ordered
# for back pain and leg paresis (its red-flag suggestion must not duplicate the order).
SECOND_PROBES: Mapping[str, frozenset[str]] = {
    "prostate-mets-cord-compression-mri-lumbar": frozenset({"symptoms", "indication", "status"}),
}

# --- charts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    patient: str  # fixture patient file stem (= Patient.id)
    case: str  # the case whose orders probe it
    bundle: Bundle  # canonical bundle: never mutated (transformations deep-copy it)
    orders: tuple[Mapping[str, Any], ...]  # draft ServiceRequests of the case
    order_names: tuple[str, ...]
    hook: str = "order-sign"
    red_flags: tuple[str, ...] = ()  # the case's expected red flags
    key: str = ""  # unique name: the patient id, or patient@case for a second probe
    families: frozenset[str] | None = None  # transformation families run on it (None: all)

    @property
    def patient_resource(self) -> Mapping[str, Any]:
        return replay.patient_of(self.bundle)


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _chart(case: Mapping[str, Any], key: str, families: frozenset[str] | None = None) -> Chart:
    orders = tuple(
        replay.order_from_arg(str(REPO / "fixtures" / "orders" / f"{name}.json")) for name in case["orders"]
    )
    return Chart(
        case["patient"],
        case["name"],
        _load_json(PATIENTS / f"{case['patient']}.json"),
        orders,
        tuple(case["orders"]),
        "order-sign" if "order-sign" in case["hooks"] else case["hooks"][0],
        tuple(case["expected"].get("red_flags") or ()),
        key,
        families,
    )


@cache
def charts() -> dict[str, Chart]:
    """Every fixture patient that a case probes, by key (the patient id; patient@case for a second probe)."""
    cases: dict[str, list[dict[str, Any]]] = {}
    by_name: dict[str, dict[str, Any]] = {}
    for path in sorted(CASES.glob("*.json")):
        case = _load_json(path)
        cases.setdefault(case["patient"], []).append(case)
        by_name[case["name"]] = case
    out = {}
    for path in sorted(PATIENTS.glob("*.json")):
        patient = path.stem
        if patient not in cases:
            continue
        wanted = PROBE_CASE.get(patient)
        out[patient] = _chart(
            next((c for c in cases[patient] if c["name"] == wanted), cases[patient][0]), patient
        )
    for name, families in SECOND_PROBES.items():
        case = by_name[name]
        key = f"{case['patient']}@{case['orders'][0]}"
        out[key] = _chart(case, key, families)
    return out


# --- bundle helpers used by transformations and tests -----------------------------------------------


def resources(bundle: Mapping[str, Any], rtype: str | None = None) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in bundle.get("entry") or []
        if isinstance(e.get("resource"), dict)
        and (rtype is None or e["resource"].get("resourceType") == rtype)
    ]


def add_resource(bundle: Bundle, resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource}
    entry["fullUrl"] = full_url or f"https://ehr.example.org/fhir/{resource['resourceType']}/{resource['id']}"
    bundle.setdefault("entry", []).append(entry)
    return resource


def remove_resource(bundle: Bundle, resource: Mapping[str, Any]) -> None:
    bundle["entry"] = [e for e in bundle["entry"] if e.get("resource") is not resource]


# --- the EHR stand-in: prefetch from the bundle ------------------------------------------------------


def _normalised(bundle: Mapping[str, Any], patient_id: str) -> tuple[Bundle, dict[tuple[str, str], Any]]:
    """A copy whose every subject is `Patient/<id>` (for the template's other filters), and the
    original entries by (type, id), which are what is actually sent."""
    copy_ = {k: v for k, v in bundle.items() if k != "entry"}
    entries = []
    originals: dict[tuple[str, str], Any] = {}
    for n, entry in enumerate(bundle.get("entry") or []):
        res = entry.get("resource")
        if not isinstance(res, dict):
            continue
        rid = res.get("id") or f"_anon-{n}"
        full_url = entry.get("fullUrl") or f"https://ehr.example.org/fhir/{res['resourceType']}/{rid}"
        originals[(res["resourceType"], rid)] = {"fullUrl": full_url, "resource": res}
        shadow = dict(res, id=rid)
        for name in SUBJECT_FIELDS:
            if name in shadow and res["resourceType"] != "Patient":
                shadow[name] = {"reference": f"Patient/{patient_id}"}
        entries.append({"fullUrl": full_url, "resource": shadow})
    copy_["entry"] = entries
    return copy_, originals


def ehr_prefetch(bundle: Mapping[str, Any], request: Mapping[str, Any], templates: Mapping[str, str]) -> dict:
    """What an EHR sends for each discovery template: the template's search answered from the bundle
    (codes, status, dates, _include, paging) with the original entries, whatever their subject says."""
    patient = replay.patient_of(bundle)
    shadow, originals = _normalised(bundle, str(patient["id"]))
    store = BundleStore(shadow)
    patient_entries = [
        e
        for e in bundle.get("entry") or []
        if e.get("resource") is patient and str(e.get("fullUrl", "")).startswith("urn:")
    ]
    prefetch: dict[str, Any] = {}
    for key, template in templates.items():
        url = replay.fill_template(template, request)
        if url is None:
            continue
        result = store.get(url)
        if result.status != 200:
            prefetch[key] = None
            continue
        body = result.body
        if body.get("resourceType") != "Bundle":
            prefetch[key] = originals.get((body["resourceType"], body.get("id")), {"resource": body})[
                "resource"
            ]
            continue
        out = {k: v for k, v in body.items() if k != "entry"}
        out["entry"] = []
        for entry in body.get("entry") or []:
            res = entry["resource"]
            original = originals.get((res["resourceType"], res.get("id")), {"resource": res})
            out["entry"].append({**entry, **original})
        if patient_entries and out["entry"]:
            # The chart names its patient by a Bundle-local urn:uuid: send the Patient along
            # (`_include`), as a server answering `?patient=...&_include=...:patient` does.
            out["entry"] += [{**e, "search": {"mode": "include"}} for e in patient_entries]
        prefetch[key] = out
    return prefetch


# --- running ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What must not depend on how the facts were encoded."""

    red_flags: tuple[str, ...]
    scenarios: tuple[str, ...]
    ratings: tuple[tuple[str, str], ...]  # (order file name, PAMA rating code or "none")
    pitfalls: tuple[str, ...]
    cards: tuple[tuple[str, str], ...]  # (indicator, rule id) of every card, sorted

    def describe(self) -> str:
        return (
            f"red flags {list(self.red_flags)}, scenarios {list(self.scenarios)}, "
            f"ratings {dict(self.ratings)}, pitfalls {list(self.pitfalls)}, cards {list(self.cards)}"
        )


@dataclass
class Run:
    chart: Chart
    bundle: Bundle
    status: int
    body: Any
    outcome: Outcome
    facts: Facts | None = None
    result: EngineResult | None = None

    def fact_sources(self) -> set[str]:
        """Every resource reference a fact of this run was taken from."""
        return fact_sources(self.facts) if self.facts else set()


def fact_sources(facts: Facts) -> set[str]:
    out: set[str] = set()
    for evidence in facts.concepts.values():
        out.update(e.source for e in evidence if e.source)
    for series in (facts.psa, *facts.labs.values()):
        out.update(m.source for m in series if m.source)
    for group in (facts.medications, facts.procedures, facts.imaging):
        out.update(x.source for x in group if x.source)
    return out


class _Spy:
    """Captures the Facts (and result) of the engine call the service makes for each hook call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Facts, EngineResult]] = []
        self._real = engine.evaluate_facts

    def __call__(self, request: Any, record: Any, facts: Facts, *args: Any, **kw: Any) -> EngineResult:
        result = self._real(request, record, facts, *args, **kw)
        self.calls.append((facts, result))
        return result

    @contextmanager
    def installed(self) -> Iterator[_Spy]:
        engine.evaluate_facts = self  # type: ignore[assignment]
        try:
            yield self
        finally:
            engine.evaluate_facts = self._real  # type: ignore[assignment]


class _NoFeedback:
    def index_cards(self, *args: Any, **kwargs: Any) -> None:
        pass

    def audit(self, *args: Any, **kwargs: Any) -> None:
        pass


class Harness:
    """One in-process service (knowledge loaded once) and its discovery templates."""

    def __init__(self, settings: Any):
        self.app = replay.InProcess(TODAY, settings=settings)
        self.templates = {
            hook: dict(replay.discovery_templates(self.app, service))
            for hook, service in replay.SERVICE_IDS.items()
        }
        extensions = self.app.client.application.extensions
        # Card feedback links are not what this suite checks; skipping the per-call SQLite write
        # halves the run time. Everything else is the service's own request path.
        extensions["cds"] = dataclasses.replace(extensions["cds"], feedback=_NoFeedback())
        knowledge = extensions["cds"].knowledge
        self.red_flag_ids = frozenset(s.id for s in knowledge.scenarios if s.kind == "red-flag")
        self.scenario_ids = frozenset(s.id for s in knowledge.scenarios) | {
            o for o in knowledge.texts.outcomes
        }
        self.pitfall_ids = frozenset(knowledge.pitfalls)

    def request(
        self, chart: Chart, bundle: Bundle | None = None, orders: tuple[Mapping[str, Any], ...] | None = None
    ) -> dict[str, Any]:
        """The hook call an EHR would send for `chart` (re-encoded as `bundle` / `orders`)."""
        bundle = chart.bundle if bundle is None else bundle
        rp = replay.Replay(bundle, [dict(o) for o in (orders or chart.orders)], chart.hook)
        request = replay.build_request(rp)
        request["prefetch"] = ehr_prefetch(bundle, request, self.templates[chart.hook])
        return request

    def run(
        self,
        chart: Chart,
        bundle: Bundle | None = None,
        orders: tuple[Mapping[str, Any], ...] | None = None,
        withhold: frozenset[str] = frozenset(),
    ) -> Run:
        """One hook call; `withhold` names prefetch keys the EHR leaves out (no FHIR server either)."""
        bundle = chart.bundle if bundle is None else bundle
        request = self.request(chart, bundle, orders)
        for key in withhold:
            request["prefetch"].pop(key, None)
        spy = _Spy()
        with spy.installed():
            status, body = self.app.post(f"/cds-services/{replay.SERVICE_IDS[chart.hook]}", request)
        facts, result = spy.calls[-1] if spy.calls else (None, None)
        ids = [e["resource"]["id"] for e in request["context"]["draftOrders"]["entry"]]
        names = dict(zip(ids, chart.order_names, strict=False))
        return Run(chart, bundle, status, body, self.outcome(body, result, names), facts, result)

    def outcome(self, body: Any, result: EngineResult | None, names: Mapping[str, str]) -> Outcome:
        ratings = replay.ratings(body) if isinstance(body, Mapping) else {}
        rules: set[str] = set(result.rule_ids) if result else set()
        for info in ratings.values():
            rules.update(v for k, v in info.items() if k != "pama")
        cards = []
        for card in (body or {}).get("cards") or []:
            topic = ((card.get("source") or {}).get("topic") or {}).get("code") or ""
            cards.append((str(card.get("indicator")), str(topic)))
            rules.add(str(topic))
        if result:
            rules.update(v["scenario_id"] for v in result.card_index.values())
        return Outcome(
            red_flags=tuple(sorted({rule for _, rule in cards if rule in self.red_flag_ids})),
            scenarios=tuple(sorted((rules & self.scenario_ids) - self.red_flag_ids)),
            ratings=tuple(
                sorted((name, ratings.get(oid, {}).get("pama", "none")) for oid, name in names.items())
            ),
            pitfalls=tuple(sorted(rules & self.pitfall_ids)),
            cards=tuple(sorted(cards)),
        )


def deep(bundle: Mapping[str, Any]) -> Bundle:
    return copy.deepcopy(dict(bundle))


Transform = Callable[[Bundle, Chart], Bundle | None]


@dataclass(frozen=True)
class Variant:
    family: str
    name: str
    patient: str
    transform: Transform
    # None: the outcome must equal the canonical one. Otherwise a named, justified difference.
    expect: Any = None
    xfail: str | None = None
    tags: frozenset[str] = field(default_factory=frozenset)

    @property
    def id(self) -> str:
        return f"{self.family}/{self.name}/{self.patient}"


def facts_signature(facts: Facts | None, with_sources: bool = True) -> dict[str, Any]:
    """What the rules read from the chart, comparable across runs (data_issues left out: a dropped
    resource may be noted there)."""
    if facts is None:
        return {}

    def src(x: Any) -> Any:
        return x if with_sources else None

    return {
        "concepts": {k: sorted((str(e.date), src(e.source)) for e in v) for k, v in facts.concepts.items()},
        "psa": [(round(m.value, 6), str(m.date), src(m.source)) for m in facts.psa],
        "labs": {
            k: [(round(m.value, 6), str(m.date), src(m.source)) for m in v] for k, v in facts.labs.items()
        },
        "receptors": dict(facts.receptors),
        "stage": (facts.stage_group, dict(facts.tnm), facts.grade_group),
        "medications": sorted(
            (m.ingredient, str(m.start), m.status, str(src(m.source))) for m in facts.medications
        ),
        "procedures": sorted((p.concept, str(p.date), str(src(p.source))) for p in facts.procedures),
        "imaging": sorted(
            (i.procedure, str(i.date), sorted(i.findings), str(src(i.source))) for i in facts.imaging
        ),
    }

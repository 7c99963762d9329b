"""The browser test's harness: a real `cds-service serve`, fixture cases replayed over HTTP, feedback
posted on some of the cards, and the dashboard's figures computed here, independently.

The expected figures are never read back from the dashboard's own code. They are built twice:
  - from what the test saw: the CDS Hooks responses it received and the feedback items it sent
    (`Observed.from_responses`), reading each card and rating the way an EHR sees them;
  - from the state database, through SQLAlchemy Core on `cds_service/state/tables.py`
    (`Observed.from_database`): the rows the service wrote;
and the two must agree record by record before either is compared with the page.
`figures()` then counts them per the dashboard's HTML contract (the `rules`, `studies`,
`override-reasons`, `rated-share`, `alert-burden`, `missing-facts` and `weekly` tables).

Patients are replayed under opaque ids, names and MRNs made up here (the fixture ids are clinical
slugs that read like rule ids), so "no patient identifier on the page" can be checked literally.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import requests

from cds_service import replay
from cds_service.knowledge import load_knowledge
from cds_service.verify import Vocabulary, procedures_of, vocabulary

REPO = Path(__file__).resolve().parents[2]
CASES_DIR = REPO / "fixtures" / "cases"
SITE_FILE = REPO / "fixtures" / "site" / "example-site.yaml"
# The fixtures are dated 2026-11-15; the service rates as of that day (the cards' and audit rows'
# times are still the real clock: the dashboard's date filters work on those).
FIXTURE_TODAY = "2026-11-15"
CPT = "http://www.ama-assn.org/go/cpt"
SERVICES = tuple(replay.SERVICE_IDS.values())  # imaging-appropriateness, imaging-appropriateness-sign
RATED_SHARE = {"appropriate": "appropriate", "not-appropriate": "not-appropriate",
               "no-criteria-apply": "no-criteria"}
SHARE_KEYS = ("appropriate", "not-appropriate", "no-criteria", "not-rated")


# --- the service ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Service:
    base: str
    token: str
    db_path: Path
    log_path: Path
    site_file: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextlib.contextmanager
def running_service(workdir: Path) -> Iterator[Service]:
    """`cds-service serve` on a free loopback port with a fresh state database and an admin token.

    The environment's own CDS_* settings are dropped: the test decides every one of them.
    """
    port = free_port()
    token = secrets.token_hex(24)
    db_path = workdir / "state.sqlite3"
    log_path = workdir / "service.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PROMETHEUS"))}
    env.update(
        CDS_FEEDBACK_DB=str(db_path),
        CDS_CACHE_DIR=str(workdir / "cache"),
        CDS_TODAY=FIXTURE_TODAY,
        CDS_ADMIN_TOKEN=token,
        CDS_STATE_SECRET=secrets.token_hex(32),
    )
    site_file = SITE_FILE
    env["CDS_SITE_CONFIG"] = str(site_file)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cds_service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "2"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
        )
    service = Service(f"http://127.0.0.1:{port}", token, db_path, log_path, site_file, process)
    try:
        _wait_ready(service)
        yield service
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_ready(service: Service, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise AssertionError(f"cds-service serve exited with {service.process.returncode}:\n"
                                 f"{service.log_tail()}")
        try:
            if requests.get(f"{service.base}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"cds-service serve not ready after {seconds} s:\n{service.log_tail()}")


# --- replaying the cases under made-up patient identities ---------------------------------------

@dataclass(frozen=True)
class Identity:
    """What identifies a replayed patient: none of it may ever reach the dashboard."""

    patient_id: str
    given: str
    family: str
    mrn: str
    birth_date: str | None

    def values(self) -> tuple[str, ...]:
        return tuple(v for v in (self.patient_id, self.given, self.family, self.mrn, self.birth_date) if v)


def disguise(bundle: dict[str, Any], identities: dict[str, Identity]) -> tuple[dict[str, Any], Identity]:
    """The bundle with its Patient under an opaque id, name and MRN (one identity per fixture patient).

    Every `Patient/<id>` reference follows the new id, as it would in a real EHR's chart.
    """
    patient = replay.patient_of(bundle)
    old = str(patient["id"])
    ident = identities.get(old)
    if ident is None:
        tag = secrets.token_hex(5)
        ident = identities[old] = Identity(
            f"pt{tag}", f"Zorvyn{tag[:4]}", f"Quillbrack{tag[4:]}", f"MRN{secrets.token_hex(6)}",
            patient.get("birthDate"),
        )
    text = json.dumps(bundle).replace(f'"Patient/{old}"', f'"Patient/{ident.patient_id}"')
    out = json.loads(text)
    for entry in out.get("entry") or []:
        res = entry.get("resource") or {}
        if res.get("resourceType") == "Patient" and res.get("id") == old:
            res["id"] = ident.patient_id
            res["name"] = [{"family": ident.family, "given": [ident.given]}]
            res["identifier"] = [{"system": "https://ehr.example.org/mrn", "value": ident.mrn}]
            if "fullUrl" in entry:
                entry["fullUrl"] = str(entry["fullUrl"]).replace(old, ident.patient_id)
    return out, ident


@dataclass
class Call:
    """One hook call the test made, with what it sent and got back."""

    case: str
    hook: str
    service: str
    request: dict[str, Any]
    body: dict[str, Any]


# Imaging orders whose codes the catalog does not know (CPT "unlisted" radiology codes): the
# dashboard's data-quality table lists such codes; the fixture cases have none.
UNKNOWN_CODE_ORDERS = (f"{CPT}|76499", f"{CPT}|78999")


def replay_cases(base: str, case_paths: Iterable[Path],
                 unknown_codes: Iterable[str] = UNKNOWN_CODE_ORDERS) -> tuple[list[Call], list[Identity]]:
    """Every case, sent to the running service as an EHR would (prefetch filled);
    then, for the first case's patient, each of `unknown_codes` as a draft order under order-sign."""
    transport = replay.Remote(base)
    identities: dict[str, Identity] = {}
    paths = list(case_paths)
    todo: list[tuple[str, replay.Replay]] = []
    for i, path in enumerate(paths):
        # each case once, its hooks taken in turn: both services, half the calls of every hook of every case
        hooks = json.loads(path.read_text())["hooks"]
        rep = replay.load_case(path)
        rep.hook = hooks[i % len(hooks)]
        todo.append((path.stem, rep))
    for i, code in enumerate(unknown_codes, start=1):
        rep = replay.load_case(paths[0])
        rep.orders, rep.hook, rep.selections = [replay.order_from_arg(code, i)], "order-sign", None
        todo.append((f"unknown-code-{code}", rep))
    for _, rep in todo:
        rep.bundle, _ = disguise(rep.bundle, identities)

    def send(item: tuple[str, replay.Replay]) -> Call:
        name, rep = item
        status, body, request = replay.run(rep, transport)
        assert status == 200, f"{name} {rep.hook}: HTTP {status} {body}"
        return Call(name, rep.hook, replay.SERVICE_IDS[rep.hook], request, body)

    # two at a time, one per gunicorn worker; no feedback is sent before all calls are answered,
    # so no card is snoozed and the order of the calls does not matter (the results keep it)
    with ThreadPoolExecutor(2) as pool:
        calls = list(pool.map(send, todo))
    return calls, list(identities.values())


# --- feedback -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sent:
    """One feedback item the test sent, as the outcome class the dashboard counts."""

    service: str
    card: str
    outcome: str  # accepted | overridden | dismissed (overridden without a coded reason)
    reason: tuple[str, str] | None = None  # (system, code) of an override reason
    item: Mapping[str, Any] = field(default_factory=dict, compare=False)


def plan_feedback(calls: list[Call]) -> list[Sent]:
    """A fixed pattern over the cards in replay order: accept a suggestion, override with one of
    the card's own reasons, dismiss (overridden, no reason; sometimes with a comment only), or
    leave the card unanswered. Deterministic, so a failure replays the same way."""
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    sent: list[Sent] = []
    n = 0
    for call in calls:
        for card in call.body.get("cards") or []:
            n += 1
            base = {"card": card["uuid"], "outcomeTimestamp": now}
            suggestions = card.get("suggestions") or []
            reasons = card.get("overrideReasons") or []
            turn = n % 5
            if turn == 0 and suggestions:
                item = {**base, "outcome": "accepted",
                        "acceptedSuggestions": [{"id": suggestions[0]["uuid"]}]}
                sent.append(Sent(call.service, card["uuid"], "accepted", None, item))
            elif turn in (1, 3) and reasons:
                reason = reasons[n % len(reasons)]
                item = {**base, "outcome": "overridden",
                        "overrideReason": {"reason": {k: reason[k] for k in ("system", "code", "display")}}}
                coded = (reason["system"], reason["code"])
                sent.append(Sent(call.service, card["uuid"], "overridden", coded, item))
            elif turn == 2:
                item = {**base, "outcome": "overridden"}
                if n % 3 == 0:  # a comment alone is no coded reason: still a dismissal
                    item["overrideReason"] = {"userComment": "not now"}
                sent.append(Sent(call.service, card["uuid"], "dismissed", None, item))
    return sent


def post_feedback(base: str, sent: list[Sent]) -> list[dict[str, Any]]:
    """Send the planned items, grouped per service, a few per request; returns the answers."""
    answers = []
    for service in SERVICES:
        items = [s.item for s in sent if s.service == service]
        for i in range(0, len(items), 7):
            resp = requests.post(f"{base}/cds-services/{service}/feedback",
                                 json={"feedback": items[i:i + 7]}, timeout=30)
            assert resp.status_code == 200, resp.text
            answers.append(resp.json())
    return answers


# --- what was observed, as records --------------------------------------------------------------

@dataclass(frozen=True)
class CallRecord:
    service: str
    fired: frozenset[str]  # rule ids the call fired
    ratings: tuple[str, ...]  # PAMA code per rated order, sorted
    orders: int  # imaging orders in the call's focus
    unknown_codes: frozenset[str]  # "system|code" of those outside the procedure catalog
    day: str  # UTC day of the call


@dataclass(frozen=True)
class QualityRecord:
    """What a call says about the chart's data: only the audit row has it (a response shows the
    missing facts of some cards only, and unreadable data as text)."""

    service: str
    day: str
    missing: frozenset[str]  # facts the cards asked for
    unreadable: frozenset[str]  # kinds of chart data that could not be read or retrieved


@dataclass(frozen=True)
class CardRecord:
    uuid: str
    service: str
    rule: str
    procedure: str
    indicator: str
    day: str


@dataclass
class Observed:
    calls: list[CallRecord]
    cards: dict[str, CardRecord]  # by uuid
    feedback: list[Sent]
    quality: list[QualityRecord] | None = None  # from the database only

    @classmethod
    def from_responses(cls, calls: list[Call], sent: list[Sent], day: str) -> Observed:
        knowledge = load_knowledge(replay._cards_dir())
        pitfalls = set(knowledge.pitfalls)
        urgent = {s.id: s.urgent_procedure for s in knowledge.scenarios if s.kind == "red-flag"}
        vocab = vocabulary(knowledge)
        records, cards = [], {}
        for call in calls:
            ratings = replay.ratings(call.body)
            focus = _focus_orders(call.request)
            fired: set[str] = set()
            for card in call.body.get("cards") or []:
                rule = str(card["source"]["topic"]["code"])
                fired.add(rule)
                # a pitfall that shaped a card links its own rule page
                fired.update(_rule_link_ids(card) & pitfalls)
                cards[card["uuid"]] = CardRecord(
                    card["uuid"], call.service, rule,
                    _card_procedure(call, card, rule, ratings, focus, urgent, vocab),
                    str(card["indicator"]), day,
                )
            # every rated order names the rule that rated it (no-criteria-apply included)
            fired.update(info["rule"] for info in ratings.values() if info.get("rule"))
            records.append(CallRecord(
                call.service, frozenset(fired),
                tuple(sorted(info["pama"] for info in ratings.values() if "pama" in info)),
                sum(_is_imaging(o, vocab) for o in focus),
                frozenset(f"{system}|{code}" for o in focus if _is_imaging(o, vocab)
                          for system, code in _codes(o) if not any(k in vocab.codes for k in _codes(o))),
                day,
            ))
        return cls(records, cards, _stored(sent, cards))

    @classmethod
    def from_database(cls, db_path: Path) -> Observed:
        from sqlalchemy import create_engine, select

        from cds_service.state.tables import audit, card_index, feedback

        engine = create_engine(f"sqlite:///{db_path}")
        try:
            with engine.connect() as db:
                calls = [
                    CallRecord(
                        row.service_id, frozenset(json.loads(row.rule_ids)),
                        tuple(sorted(str(r["pama"]) for r in json.loads(row.ratings) if "pama" in r)),
                        int(row.orders), frozenset(json.loads(row.unknown_codes)), row.at[:10],
                    )
                    for row in db.execute(select(audit))
                ]
                quality = [
                    QualityRecord(row.service_id, row.at[:10], frozenset(json.loads(row.missing_facts)),
                                  frozenset(json.loads(row.unreadable)))
                    for row in db.execute(select(audit))
                ]
                cards = {
                    row.card_uuid: CardRecord(
                        row.card_uuid, row.service_id, row.rule_id or "", row.procedure_id or "",
                        row.indicator or "", row.created_at[:10],
                    )
                    for row in db.execute(select(card_index))
                }
                items = []
                for row in db.execute(select(feedback)):
                    if row.outcome == "accepted":
                        items.append(Sent(row.service_id, row.card_uuid, "accepted"))
                    elif row.override_code is not None:
                        items.append(Sent(row.service_id, row.card_uuid, "overridden",
                                          (row.override_system, row.override_code)))
                    else:
                        items.append(Sent(row.service_id, row.card_uuid, "dismissed"))
        finally:
            engine.dispose()
        return cls(calls, cards, items, quality)

    def comparable(self) -> tuple[Counter[CallRecord], dict[str, CardRecord], Counter[Sent]]:
        return Counter(self.calls), self.cards, Counter(self.feedback)


def _stored(sent: list[Sent], cards: Mapping[str, CardRecord]) -> list[Sent]:
    """The items the service keeps: on cards it issued to that service, each distinct item once."""
    seen, out = set(), []
    for s in sent:
        key = json.dumps(s.item, sort_keys=True)
        card = cards.get(s.card)
        if card is None or card.service != s.service or key in seen:
            continue
        seen.add(key)
        out.append(s)
    return out


def _focus_orders(request: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The ServiceRequests the call asks about: the selected ones (order-select), else all drafts."""
    drafts = [e["resource"] for e in request["context"]["draftOrders"]["entry"]
              if e["resource"].get("resourceType") == "ServiceRequest"]
    if request["hook"] == "order-select":
        chosen = {ref.split("/", 1)[1] for ref in request["context"].get("selections") or ()}
        return [o for o in drafts if o.get("id") in chosen]
    return drafts


# Imaging, whatever the code: SNOMED CT "Imaging" and LOINC "Radiology" order categories, and CPT's
# radiology and nuclear-medicine section (70010-79999).
IMAGING_CATEGORIES = {("http://snomed.info/sct", "363679005"), ("http://loinc.org", "LP29684-5")}


def _codes(order: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(str(c.get("system")), str(c.get("code"))) for c in (order.get("code") or {}).get("coding") or ()]


def _is_imaging(order: Mapping[str, Any], vocab: Vocabulary) -> bool:
    """An imaging order: a catalog code, an imaging category or a CPT radiology code (not a PSA lab)."""
    code = _codes(order)
    category = [(c.get("system"), str(c.get("code")))
                for cat in order.get("category") or () for c in cat.get("coding") or ()]
    radiology = any(system == CPT and len(c) == 5 and c.isdigit() and "70010" <= c <= "79999"
                    for system, c in code)
    return (radiology or any(key in vocab.codes for key in code)
            or any(key in IMAGING_CATEGORIES for key in category))


def _rule_link_ids(card: Mapping[str, Any]) -> set[str]:
    return {str(link["url"]).rsplit("/rules/", 1)[1] for link in card.get("links") or ()
            if "/rules/" in str(link.get("url", ""))}


def _card_procedure(
    call: Call, card: Mapping[str, Any], rule: str, ratings: Mapping[str, Mapping[str, str]],
    focus: list[Mapping[str, Any]], urgent: Mapping[str, str | None], vocab: Vocabulary,
) -> str:
    """The catalog study a card is about, as the clinician reads it:
    a red-flag card: the urgent study its rule file names;
    a card of the rule that rated orders: the study those orders were rated as;
    otherwise (not rated: missing data, unknown tracer) the study ordered."""
    if card.get("indicator") == "critical" and urgent.get(rule):
        return str(urgent[rule])
    rated = {info["procedure"] for info in ratings.values()
             if info.get("rule") == rule and info.get("procedure")}
    if not rated:
        # the catalog's reading of the order codes (tracer codes included); a composite study
        # (CT chest + CT abdomen/pelvis) stands for its parts
        rated = procedures_of(focus, vocab)
        rated -= {part for proc in rated for part in vocab.components.get(proc, ())}
    assert len(rated) == 1, (
        f"{call.case} {call.hook}: cannot tell which study card {rule!r} is about ({sorted(rated)}); "
        "replay a case with one study per rule"
    )
    return rated.pop()


# --- the figures, per the dashboard's HTML contract ---------------------------------------------

Figures = dict[str, dict[str, dict[str, float | int | None]]]  # table -> row key -> column -> value


def _percent(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def _outcomes(items: Iterable[Sent]) -> dict[str, float | int | None]:
    c = Counter(s.outcome for s in items)
    a, o, d = c["accepted"], c["overridden"], c["dismissed"]
    return {"accepted": a, "overridden": o, "dismissed": d, "acceptance": _percent(a, a + o + d)}


def iso_week(day: str) -> str:
    year, week, _ = date.fromisoformat(day).isocalendar()
    return f"{year}-W{week:02d}"


def figures(obs: Observed, service: str | None = None, start: str | None = None,
            end: str | None = None) -> Figures:
    """Every table's rows for the filters (service None = both; days inclusive, YYYY-MM-DD)."""

    def kept(svc: str, day: str) -> bool:
        return (service is None or svc == service) and (start is None or day >= start) and (
            end is None or day <= end)

    calls = [c for c in obs.calls if kept(c.service, c.day)]
    cards = {u: c for u, c in obs.cards.items() if kept(c.service, c.day)}
    answered = [s for s in obs.feedback if s.card in cards]  # feedback follows its card's filters
    out: Figures = {}

    fired = Counter(r for c in calls for r in c.fired)
    rules = sorted(set(fired) | {c.rule for c in cards.values()})
    out["rules"] = {
        r: {"fired": fired[r], "cards": sum(c.rule == r for c in cards.values()),
            **_outcomes(s for s in answered if cards[s.card].rule == r)}
        for r in rules
    }
    out["studies"] = {
        p: {"cards": sum(c.procedure == p for c in cards.values()),
            **_outcomes(s for s in answered if cards[s.card].procedure == p)}
        for p in sorted({c.procedure for c in cards.values() if c.procedure})
    }
    reasons = Counter(f"{cards[s.card].rule}|{s.reason[0]}|{s.reason[1]}" for s in answered if s.reason)
    out["override-reasons"] = {k: {"count": n} for k, n in reasons.items()}

    rated = Counter(RATED_SHARE[p] for c in calls for p in c.ratings if p in RATED_SHARE)
    shares = {k: rated[k] for k in SHARE_KEYS[:3]}
    shares["not-rated"] = sum(c.orders for c in calls) - sum(rated.values())
    total = sum(shares.values())
    out["rated-share"] = {k: {"orders": n, "share": _percent(n, total)} for k, n in shares.items()}

    orders = Counter()
    for c in calls:
        orders[c.service] += c.orders
    burden = Counter(f"{c.service}|{c.indicator}" for c in cards.values())
    out["alert-burden"] = {
        k: {"cards": n, "per100": _percent(n, orders[k.split("|", 1)[0]])} for k, n in burden.items()
    }
    issues = Counter(f"code|{x}" for c in calls for x in c.unknown_codes)
    if obs.quality is not None:
        quality = [q for q in obs.quality if kept(q.service, q.day)]
        missing = Counter(f for q in quality for f in q.missing)
        out["missing-facts"] = {k: {"count": n} for k, n in missing.items()}
        issues.update(f"unreadable|{x}" for q in quality for x in q.unreadable)
    out["data-quality"] = {k: {"count": n} for k, n in issues.items()}

    weekly: dict[str, Counter[str]] = {}
    for c in cards.values():
        weekly.setdefault(iso_week(c.day), Counter())["cards"] += 1
    for s in answered:
        weekly.setdefault(iso_week(cards[s.card].day), Counter())[s.outcome] += 1
    out["weekly"] = {w: {k: n[k] for k in ("cards", "accepted", "overridden", "dismissed")}
                     for w, n in weekly.items()}
    return out


Row = dict[str, float | int | None]


def nonzero(table: Mapping[str, Mapping[str, float | int | None]]) -> dict[str, Row]:
    """Rows with any figure other than 0 / no data: a page may list empty rows or leave them out."""
    return {k: dict(v) for k, v in table.items() if any(x not in (0, None) for x in v.values())}

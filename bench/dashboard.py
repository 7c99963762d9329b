"""Time the governance dashboard (`GET /admin/`, every table) on a large state database.

Fills a fresh database through the store's write path (`FeedbackStore.index_cards`, `.audit`,
`.record`, many cards per call so that a 100,000-card history takes seconds, not minutes), spread
over `--days` days with the store's clock set per batch, then renders the page in-process (Flask
test client, the admin token in the header) `--rounds` times and reports the median and the worst,
for the whole history and for the last 30 days. Budget (issue 14): under 1 s.

`python -m bench.dashboard [--cards 100000] [--feedback 20000] [--rounds 7] [--db PATH]`
(`--db` keeps the filled database for a second run: it is filled only when new).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.run import machine

TOKEN = "bench-dashboard-token-0123456789"
SERVICES = ("imaging-appropriateness", "imaging-appropriateness-sign")
RULES = [f"rule-{i:02d}" for i in range(40)] + ["insufficient-data", "unreadable-data",
                                                "red-flag-cord-compression"]
PROCEDURES = [f"procedure-{i:02d}" for i in range(45)]
INDICATORS = ("info", "warning", "critical")
PAMA = ("appropriate", "not-appropriate", "no-criteria-apply")
FACTS = ("psa", "t-category", "risk-group", "stage-group", "diagnosis-date", "psa-trend")
UNREADABLE = ("labs", "staging", "receptors", "records", "not-retrieved:observations")
REASONS = [("https://example.org/override-reason", f"reason-{i}", f"Reason {i}") for i in range(6)]


def fill(db: Path, cards: int, feedback: int, days: int, seed: int = 14) -> dict[str, int]:
    """Write the history; returns what was written (cards, feedback items, audit rows)."""
    from cds_service.protocol import feedback as store_module
    from cds_service.protocol.feedback import AuditEntry, FeedbackItem, FeedbackStore

    rnd = random.Random(seed)
    store = FeedbackStore(db)
    start = datetime.now(UTC) - timedelta(days=days)
    # one hook call in five gets no card (quiet appropriate ratings): audit rows outnumber card calls
    per_day = max(1, cards // days)
    written = {"cards": 0, "feedback": 0, "audit": 0}
    issued: list[tuple[str, str]] = []
    clock = {"at": start}
    original_now = store_module._now
    store_module._now = lambda: clock["at"].isoformat(timespec="milliseconds")  # the store's one clock
    try:
        n = 0
        for day in range(days):
            clock["at"] = start + timedelta(days=day, hours=9)
            batch = per_day if day < days - 1 else cards - written["cards"]
            by_service: dict[str, dict[str, dict[str, str]]] = {s: {} for s in SERVICES}
            audits: list[AuditEntry] = []
            made = 0
            while made < batch:
                service = rnd.choice(SERVICES)
                k = min(rnd.choice((1, 1, 1, 2, 2, 3)), batch - made)
                orders = rnd.randint(1, 3)
                uuids = []
                rules = rnd.sample(RULES, k)
                for rule in rules:
                    n += 1
                    uuid = f"{n:08x}-bench-card"
                    by_service[service][uuid] = {
                        "rule_id": rule, "procedure_id": rnd.choice(PROCEDURES),
                        "indicator": rnd.choice(INDICATORS), "scenario_id": "bench",
                        "knowledge_version": "bench",
                    }
                    uuids.append(uuid)
                    issued.append((service, uuid))
                made += k
                for _ in range(1 + (rnd.random() < 0.25)):  # and the calls without a card
                    audits.append(AuditEntry(
                        service_id=service, hook_instance=f"bench-{len(audits)}", hook="order-select",
                        knowledge_version="bench", rule_ids=tuple(rules),
                        ratings=tuple({"pama": rnd.choice(PAMA), "rule": rules[0]}
                                      for _ in range(rnd.randint(0, orders))),
                        card_uuids=tuple(uuids), fhir_calls=0, client_iss=None, orders=orders,
                        missing_facts=tuple(rnd.sample(FACTS, 1)) if rnd.random() < 0.2 else (),
                        unreadable=tuple(rnd.sample(UNREADABLE, 1)) if rnd.random() < 0.1 else (),
                        unknown_codes=(f"http://www.ama-assn.org/go/cpt|7{rnd.randint(0, 99):04d}",)
                        if rnd.random() < 0.03 else (),
                    ))
                    # the card-less call: a quiet rating by one rule
                    uuids, rules = [], [rnd.choice(RULES)]
            for service, index in by_service.items():
                store.index_cards(service, f"bench-day-{day}", index)
            for entry in audits:
                store.audit(entry)
            written["cards"] += made
            written["audit"] += len(audits)
        clock["at"] = start + timedelta(days=days)
        for i, (service, uuid) in enumerate(rnd.sample(issued, min(feedback, len(issued)))):
            r = rnd.random()
            reason = rnd.choice(REASONS) if 0.4 <= r < 0.8 else None
            item = FeedbackItem(
                uuid, "accepted" if r < 0.4 else "overridden", f"2026-11-30T10:00:{i % 60:02d}Z",
                accepted_suggestions=("bench-suggestion",) if r < 0.4 else (),
                override_system=reason[0] if reason else None, override_code=reason[1] if reason else None,
                override_display=reason[2] if reason else None,
            )
            written["feedback"] += store.record(service, [item]).stored
    finally:
        store_module._now = original_now
    return written


def time_page(db: Path, rounds: int, query: str) -> tuple[list[float], list[float]]:
    from cds_service.app import create_app
    from cds_service.config import Settings

    app = create_app(Settings(feedback_db=db, admin_token=TOKEN, cache_dir=None))
    client = app.test_client()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    first = client.get(f"/admin/{query}", headers=headers)  # warm-up: templates compiled, engine built
    if first.status_code != 200:
        sys.exit(f"GET /admin/{query}: {first.status_code} {first.get_data(as_text=True)[:300]}")
    times, cpu = [], []
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        response = client.get(f"/admin/{query}", headers=headers)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)  # the request runs on this one thread: load-independent
        assert response.status_code == 200
    return times, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=100_000)
    parser.add_argument("--feedback", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--db", type=Path, help="database file to fill (once) and keep")
    args = parser.parse_args(argv)
    quiet = logging.getLogger("cds_service")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the start-up warnings of a development configuration, per app
    try:
        return _run(args)
    finally:
        quiet.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="cds-dashboard-bench-") as tmp:
        db = args.db or Path(tmp) / "state.sqlite3"
        load_before = os.getloadavg()[0]
        if not db.exists():
            t0 = time.perf_counter()
            written = fill(db, args.cards, args.feedback, args.days)
            print(f"filled {db.name}: {written['cards']} cards, {written['feedback']} feedback items, "
                  f"{written['audit']} audit rows in {time.perf_counter() - t0:.1f} s")
        last30 = (datetime.now(UTC).date() - timedelta(days=30)).isoformat()
        rows = []
        for label, query in (("whole history", ""), ("last 30 days", f"?from={last30}"),
                             ("one service", f"?service={SERVICES[1]}")):
            times, cpu = time_page(db, args.rounds, query)
            rows.append(f"| {label} | {statistics.median(times) * 1000:.0f} ms | {max(times) * 1000:.0f} ms "
                        f"| {statistics.median(cpu) * 1000:.0f} ms |")
        print(f"\n`GET /admin/` (all tables), {args.rounds} rounds after a warm-up, in-process:\n")
        print("| range | median | worst | CPU (median) |\n|---|---|---|---|")
        print("\n".join(rows))
        load_after = os.getloadavg()[0]
        print(f"\n{machine()}; load average (1 min) {load_before:.2f} before, {load_after:.2f} after.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Write latency of the state store: what a card-producing hook call writes (card index + audit row)
and what an authenticated call writes (one jti), per call, on SQLite or PostgreSQL.

    python -m bench.state_writes                      # SQLite in a temporary directory
    python -m bench.state_writes --database-url postgresql://postgres@127.0.0.1:5432/postgres
    python -m bench.state_writes --postgres           # a throwaway PostgreSQL (tests/pg_cluster.py)

Prints p50 / p95 in microseconds. Figures, not assertions: compare arms as ratios on one machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cds_service.protocol.feedback import AuditEntry, FeedbackStore


def _store(path: Path, url: str | None) -> tuple[FeedbackStore, Any]:
    if url is None:
        from cds_service.protocol.auth import DatabaseReplayCache

        return FeedbackStore(path), DatabaseReplayCache(path)
    from cds_service.protocol.auth import DatabaseReplayCache
    from cds_service.state.db import Database
    from cds_service.state.migrate import upgrade

    db = Database(url)
    upgrade(db)
    return FeedbackStore(db), DatabaseReplayCache(db)


def _timed(n: int, call: Callable[[int], None]) -> list[float]:
    for i in range(min(50, n)):  # warm up: connections, statement caches
        call(-1 - i)
    out = []
    for i in range(n):
        start = time.perf_counter()
        call(i)
        out.append((time.perf_counter() - start) * 1e6)
    return out


def run(url: str | None, n: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        store, replay = _store(Path(tmp) / "state.sqlite3", url)
        run_id = uuid.uuid4().hex[:8]

        def hook_call(i: int) -> None:
            meta = {"rule_id": "rule-a", "scenario_id": "s", "knowledge_version": "v",
                    "procedure_id": "ct-cap", "indicator": "warning"}
            cards = {f"{run_id}-{i}-{k}": meta for k in range(2)}
            store.index_cards("imaging-appropriateness", f"h-{run_id}-{i}", cards)
            store.audit(AuditEntry("imaging-appropriateness", f"h-{run_id}-{i}", "order-select", "v",
                                   ("rule-a",), ({"pama": "appropriate"},), tuple(cards), 0, None))

        def hook_call_together(i: int) -> None:  # what a hook call does now (protocol/views.py)
            meta = {"rule_id": "rule-a", "scenario_id": "s", "knowledge_version": "v",
                    "procedure_id": "ct-cap", "indicator": "warning"}
            cards = {f"{run_id}-t{i}-{k}": meta for k in range(2)}
            store.audit(AuditEntry("imaging-appropriateness", f"h-{run_id}-t{i}", "order-select", "v",
                                   ("rule-a",), ({"pama": "appropriate"},), tuple(cards), 0, None), cards)

        def jti(i: int) -> None:
            assert replay.first_use("https://ehr.example.org", f"{run_id}-{i}", time.time() + 300)

        return {"index_cards+audit": _timed(n, hook_call),
                "audit(cards) 1 call": _timed(n, hook_call_together), "jti first_use": _timed(n, jti)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--postgres", action="store_true", help="start a throwaway PostgreSQL")
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args(argv)
    if args.postgres:
        from tests.pg_cluster import PgCluster

        with PgCluster(fsync=True) as cluster:
            results = run(cluster.create_database("bench"), args.n)
        arm = "postgresql (throwaway, fsync on)"
    else:
        results = run(args.database_url, args.n)
        arm = "postgresql" if args.database_url else "sqlite"
    for name, samples in results.items():
        samples.sort()
        p95 = samples[int(len(samples) * 0.95)]
        print(f"{arm:34} {name:20} p50 {statistics.median(samples):8.0f} us   p95 {p95:8.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The PostgreSQL arms of `make bench` (issue 13).

- `pg-cases`: p50 of card-producing hook calls (the fixture cases whose call gets a card: each call
  writes its card-index rows and its audit row) with the state in PostgreSQL, against the same
  calls with the state in SQLite, in the same run: one sync worker each, one client each, short
  rounds alternating between the two. Budget: PostgreSQL p50 ≤ 1.2 × SQLite p50.
- `replicas`: the same calls on two replicas (one worker each) sharing one PostgreSQL, against one
  replica, closed loop with one client per worker, rounds alternating: the throughput ratio, and
  the database's CPU per call (what does not scale out: every replica's writes land on it).

The database is a throwaway cluster (`tests/pg_cluster.py`, PostgreSQL's own binaries) with fsync
on, migrated by `cds-service migrate` as a deployment does; the service is the same gunicorn
configuration as every other arm. Where PostgreSQL binaries are missing the arms say so and are
skipped.

Run alone: `python -m bench.pgstate [--requests 1500] [--duration 6]`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import run, stats
from bench.workloads import case_requests

BUDGET_RATIO = 1.2


def _postmaster_pids(cluster: Any) -> list[int]:
    """The cluster's processes (postmaster and its backends): their CPU is the database's cost."""
    for pidfile in Path(cluster.dir).rglob("postmaster.pid"):
        try:
            master = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        return [master, *run._children(master)]
    return []


def _migrate(url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(CDS_DATABASE_URL=url, PYTHONPATH=str(run.ROOT))
    done = subprocess.run([sys.executable, "-m", "cds_service.cli", "migrate"], cwd=run.ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode:
        raise RuntimeError(f"cds-service migrate failed: {done.stderr.strip()[-1500:]}")


def _env(tmp: Path, url: str | None, name: str) -> dict[str, str]:
    env = run.service_env(None, tmp / f"{name}.sqlite3", {"CDS_DATABASE_URL": url} if url else None)
    if not url:
        env.pop("CDS_DATABASE_URL", None)
    return env


def _throughput(servers: list[run.Server], path: str, body_file: Path, args: argparse.Namespace,
                seconds: float) -> tuple[float, int, int]:
    """Total 2xx per second of all `servers` driven at once (one client per worker each)."""
    results: list[dict[str, Any]] = [{} for _ in servers]

    def one(i: int) -> None:
        results[i] = run.drive(servers[i], path, body_file, args.requests, seconds, 1, cycle=True)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(servers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = sum(int(v) for r in results for k, v in r["statuses"].items() if k.startswith("2"))
    errors = sum(int(r["errors"]) for r in results)
    wall = max(float(r["wall_s"]) for r in results)
    return (ok / wall if wall else 0.0), ok, errors


def run_arms(args: argparse.Namespace | None = None) -> tuple[str, list[stats.Verdict]]:
    args = args or parse_args([])
    try:
        sys.path.insert(0, str(run.ROOT))
        from tests.pg_cluster import PgCluster, available
    except ImportError as exc:
        return f"PostgreSQL arms: skipped ({exc})", []
    reason = available()
    if reason:
        return f"PostgreSQL arms: skipped ({reason})", []
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as scratch, PgCluster(fsync=True) as cluster:
        tmp = Path(scratch)
        url = cluster.create_database("bench")
        _migrate(url)
        section, verdicts = _measure(args, tmp, url, cluster)
    return section, verdicts


def _measure(args: argparse.Namespace, tmp: Path, url: str, cluster: Any) -> tuple[str, list[stats.Verdict]]:
    lines: list[str] = []
    with run.gunicorn(run.SERVICE_APP, 1, _env(tmp, None, "sqlite"), tmp) as sqlite_srv, \
            run.gunicorn(run.SERVICE_APP, 1, _env(tmp, url, "pg-a"), tmp) as pg_srv:
        service = run.discover(sqlite_srv)
        path = f"/cds-services/{service['id']}"
        cases = run.cards_from_cases(sqlite_srv, path, case_requests(service))
        bodies = [json.dumps(r).encode() for r in cases.values()]
        measured = run.measure({"sqlite": sqlite_srv, "postgresql": pg_srv}, path, bodies, args, tmp,
                               args.duration, cycle=True)
        sq, pg = measured["sqlite"].summary, measured["postgresql"].summary
        ratio = stats.ratio(pg.p50_ms, sq.p50_ms)
        lines += [
            f"PostgreSQL arms (issue 13): {len(bodies)} fixture-case calls that get a card, round-robin; "
            f"1 sync worker per server, one client each, {args.rounds} rounds alternating; PostgreSQL "
            f"{cluster_version(cluster)} on loopback, fsync on, migrated by `cds-service migrate`.",
            "",
            "| arm | state | p50 / p95 / p99 ms | req/s | worker CPU ms/req | errors |",
            "|---|---|---|---:|---:|---:|",
        ]
        for label, m in measured.items():
            s = m.summary
            latency = f"{s.p50_ms:.2f} / {s.p95_ms:.2f} / {s.p99_ms:.2f} (n={s.n})"
            lines.append(f"| pg-cases | {label} | {latency} | {s.throughput:.1f} | {run._f(m.cpu_ms, 2)} | "
                         f"{s.errors} |")
        lines += ["", f"p50 PostgreSQL / SQLite: **{ratio:.2f} ×** (budget ≤ {BUDGET_RATIO} ×).", ""]

    body_file = tmp / "cases.jsonl"
    body_file.write_bytes(b"\n".join(bodies) + b"\n")
    lines += _replicas(args, tmp, url, cluster, path, body_file)
    verdicts = [stats.Verdict("card-producing p50, PostgreSQL / SQLite", f"≤ {BUDGET_RATIO} ×",
                              f"{ratio:.2f} ×", ratio <= BUDGET_RATIO)]
    return "\n".join(lines), verdicts


def _replicas(args: argparse.Namespace, tmp: Path, url: str, cluster: Any, path: str,
              body_file: Path) -> list[str]:
    """Two replicas (1 worker each) vs one replica with 1 and with 2 workers, all on one PostgreSQL,
    one client per worker, rounds alternating; CPU of the service workers and of the database."""
    shapes = ("1 replica × 1 worker", "1 replica × 2 workers", "2 replicas × 1 worker")
    rates: dict[str, list[float]] = {shape: [] for shape in shapes}
    db_ms: list[float] = []
    svc_ms: list[float] = []
    notes: list[str] = []
    with run.gunicorn(run.SERVICE_APP, 1, _env(tmp, url, "replica-a"), tmp) as a, \
            run.gunicorn(run.SERVICE_APP, 1, _env(tmp, url, "replica-b"), tmp) as b, \
            run.gunicorn(run.SERVICE_APP, 2, _env(tmp, url, "replica-w2"), tmp) as w2:
        for server in (a, b, w2):  # warm-up: the first calls load what a worker loads at first use
            run.drive(server, path, body_file, 0, 1.0, args.warmup, cycle=True)
        rounds = max(1, args.rounds) + 2  # short rounds, more of them: drift spreads over all shapes
        seconds = args.duration / rounds
        for _ in range(rounds):
            for shape, servers in zip(shapes, ([a], [w2], [a, b]), strict=True):
                workers = [pid for server in servers for pid in server.worker_pids()]
                db_before = run.cpu_seconds(_postmaster_pids(cluster))
                svc_before = run.cpu_seconds(workers)
                rate, ok, errors = _throughput(servers, path, body_file, args, seconds)
                rates[shape].append(rate)
                if ok:  # backends come and go: the cluster's processes are listed again after
                    db_ms.append((run.cpu_seconds(_postmaster_pids(cluster)) - db_before) * 1000 / ok)
                    svc_ms.append((run.cpu_seconds(workers) - svc_before) * 1000 / ok)
                if errors:
                    notes.append(f"Note: {errors} errors with {shape}.")
    # median of rounds: one round slowed by another process on the machine does not move it
    mean = {shape: statistics.median(values) for shape, values in rates.items()}
    return [
        *notes,
        "Replicas on one PostgreSQL (closed loop, one client per worker, rounds alternating):",
        "",
        "| shape | req/s (median of rounds) | rounds |",
        "|---|---:|---|",
        *(f"| {shape} | {mean[shape]:.1f} | {', '.join(f'{r:.0f}' for r in rates[shape])} |"
          for shape in shapes),
        "",
        f"Throughput 2 replicas / 1 replica: **{stats.ratio(mean[shapes[2]], mean[shapes[0]]):.2f} ×**; "
        f"2 replicas / 1 replica with 2 workers: **{stats.ratio(mean[shapes[2]], mean[shapes[1]]):.2f} ×** "
        f"({os.cpu_count()} cores shared by the servers, the load generators and PostgreSQL: beyond one "
        "busy worker per core the ratio shows the machine's limit, not the service's).",
        "",
        f"CPU per card-producing call: service worker {_mean(svc_ms):.2f} ms, PostgreSQL (all its processes) "
        f"{_mean(db_ms):.2f} ms: one database core keeps up with the calls of about "
        f"{_mean(svc_ms) / _mean(db_ms):.1f} service cores (≈ {1000 / _mean(db_ms):.0f} card-producing "
        "calls/s per database core).",
    ]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def cluster_version(cluster: Any) -> str:
    bin_dir = getattr(cluster, "_bin", None)
    try:
        out = subprocess.run([str(Path(bin_dir) / "postgres"), "--version"], capture_output=True, text=True,
                             timeout=10, check=False).stdout if bin_dir else ""
    except OSError:
        out = ""
    found = re.search(r"\d+\.\d+", out)
    return found.group(0) if found else "?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pgstate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="measured requests per server (cap)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per arm and server (cap)")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests per client")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    started = time.monotonic()
    section, verdicts = run_arms(parse_args(argv))
    print(section)
    if verdicts:
        print("\n" + run.budget_table(verdicts))
    print(f"\nWall time: {time.monotonic() - started:.0f} s.")


if __name__ == "__main__":
    main()

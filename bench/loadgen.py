"""Closed-loop HTTP load generator, run as its own process so it never shares a GIL with the server.

`concurrency` forked processes each hold one keep-alive `http.client` connection (re-opened when
the server closes it, as gunicorn's sync worker does after every response) and POST the same body
until the shared request budget or the time limit runs out. A short warm-up per process is not
measured. Prints one JSON object: latencies (ms), status counts, measured wall time.

With a body file of several lines (one JSON body per line), every measured request sends a body no
other request sent (the first-seen chart: no cache of the service has seen it); warm-ups send the
last line, and the budget is capped so that no body is sent twice. With `--cycle` the lines are
sent round-robin instead, as often as the budget allows (the fixture cases: a mix of charts).

`python -m bench.loadgen --url http://127.0.0.1:8081/cds-services/x --body req.json -c 1 -n 500 -t 3`
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def _one(conn: http.client.HTTPConnection, path: str, body: bytes) -> int:
    conn.request("POST", path, body=body, headers=HEADERS)
    response = conn.getresponse()
    response.read()
    return response.status


def _worker(url: str, bodies: list[bytes], warmup: int, budget, deadline_s: float, start, out, cycle=False) -> None:  # type: ignore[no-untyped-def]  # noqa: E501
    parts = urlsplit(url)
    body = bodies[-1]
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    # a mix warms up on every one of its bodies (what a worker loads at first use is not measured)
    for n in range(max(warmup, len(bodies)) if cycle and warmup else warmup):
        try:
            _one(conn, parts.path, bodies[n % len(bodies)] if cycle else body)
        except (OSError, http.client.HTTPException):
            conn.close()
    start.wait()
    deadline = time.monotonic() + deadline_s
    t_first = time.monotonic()
    while time.monotonic() < deadline:
        with budget.get_lock():
            if budget.value <= 0:
                break
            budget.value -= 1
            if cycle:
                body = bodies[budget.value % len(bodies)]
            elif len(bodies) > 1:  # the budget counts down through the distinct bodies
                body = bodies[budget.value]
        t0 = time.perf_counter()
        try:
            status = _one(conn, parts.path, body)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            errors += 1
            key = type(exc).__name__
            statuses[key] = statuses.get(key, 0) + 1
            continue
        elapsed_ms = (time.perf_counter() - t0) * 1000
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if 200 <= status < 300:
            latencies.append(elapsed_ms)
        else:
            errors += 1
    conn.close()
    out.put(
        {
            "latencies_ms": latencies,
            "statuses": statuses,
            "errors": errors,
            "wall_s": time.monotonic() - t_first,
        }
    )


def run(
    url: str,
    body: bytes | list[bytes],
    concurrency: int = 1,
    requests: int = 1000,
    duration_s: float = 3.0,
    warmup: int = 5,
    cycle: bool = False,
) -> dict[str, object]:
    """Drive `url`; returns the merged result of all load processes."""
    bodies = body if isinstance(body, list) else [body]
    if len(bodies) > 1 and not cycle:
        requests = min(requests, len(bodies) - 1)  # the last body is the warm-up's
    ctx = mp.get_context("fork")
    budget = ctx.Value("i", requests)
    start = ctx.Barrier(concurrency)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(url, bodies, warmup, budget, duration_s, start, out, cycle))
        for _ in range(concurrency)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=duration_s + 120) for _ in procs]
    for p in procs:
        p.join()
    merged: dict[str, object] = {"latencies_ms": [], "statuses": {}, "errors": 0, "wall_s": 0.0}
    for r in results:
        merged["latencies_ms"].extend(r["latencies_ms"])  # type: ignore[union-attr]
        for k, v in r["statuses"].items():
            merged["statuses"][k] = merged["statuses"].get(k, 0) + v  # type: ignore[union-attr,index]
        merged["errors"] += r["errors"]  # type: ignore[operator]
        merged["wall_s"] = max(merged["wall_s"], r["wall_s"])  # type: ignore[type-var]
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description="closed-loop POST load generator")
    parser.add_argument("--url", required=True)
    parser.add_argument(
        "--body", required=True, type=Path, help="file holding the JSON body (or one body per line)"
    )
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-n", "--requests", type=int, default=1000, help="measured request budget")
    parser.add_argument("-t", "--duration", type=float, default=3.0, help="measured time limit, seconds")
    parser.add_argument("-w", "--warmup", type=int, default=5, help="unmeasured requests per process")
    parser.add_argument("--cycle", action="store_true", help="body lines round-robin, repeats allowed")
    args = parser.parse_args()
    lines = [line for line in args.body.read_bytes().splitlines() if line.strip()]
    body: bytes | list[bytes] = lines if len(lines) > 1 else args.body.read_bytes()
    result = run(args.url, body, args.concurrency, args.requests, args.duration, args.warmup, args.cycle)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()

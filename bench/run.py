"""The benchmark driver behind `make bench`.

Serves the real app (`cds_service.wsgi:app`) and the framework floor (`bench.floor_app:app`) under
identical gunicorn settings on loopback, with 1 then 2 workers; drives each workload from a separate
load-generator process (`bench.loadgen`); reads the workers' peak RSS from /proc; prints markdown
tables (latency, throughput, RSS, service/floor ratios; scaling; budget PASS/FAIL) and optionally
appends them to docs/performance.md.

Bounded: every workload stops after `--requests` measured requests or `--duration` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import fhir_stub, stats
from bench.workloads import (
    AS_OF,
    DEFAULT_DISCOVERY,
    SCALING_SIZES,
    SIZES,
    build_request,
    case_requests,
    first_seen,
    generate_chart,
    pick_service,
    text_only_reports,
)

ROOT = Path(__file__).resolve().parents[1]
SERVICE_APP = "cds_service.wsgi:app"
FLOOR_APP = "bench.floor_app:app"
# The one gunicorn configuration both apps get: sync workers, the app built before the workers
# fork (`--preload`), as `cds-service serve` (`make run`, the Dockerfile) runs it, so the bench
# measures the deployed shape.
GUNICORN_ARGS = ["--worker-class", "sync", "--preload", "--timeout", "60", "--log-level", "warning"]
STUB_DELAY_S = 0.05
FIRST_SEEN_CHARTS = 400  # distinct bodies of the first-seen workload (more than one run sends)
FIRST_SEEN_LARGE = 40  # distinct 2,000-resource bodies (2.3 MB each)
STARTUP_S: dict[int, float] = {}  # workers -> the service's start-up to the first 200 (this run)


@dataclass
class Row:
    workload: str
    workers: int
    app: str  # "service" | "floor"
    resources: int  # in the generated chart, besides the Patient
    body_bytes: int
    prefetched: int  # resources actually sent in prefetch (what the service's templates asked for)
    summary: stats.Summary
    peak_rss_mb: float | None
    notes: list[str] = field(default_factory=list)
    cpu_ms: float | None = None  # worker CPU (user + system) per request served
    pss_mb: float | None = None  # after the workload: proportional share (shared pages split)
    uss_mb: float | None = None  # after the workload: pages of this worker alone


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: the fields after the last ')' are fixed
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return sorted(out)


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss(pids: list[int]) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs) so peaks are per workload."""
    ok = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes so far (/proc/<pid>/stat, clock ticks)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def pss_uss_mb(pids: list[int]) -> tuple[float | None, float | None]:
    """Largest PSS and USS among the workers now (/proc/<pid>/smaps_rollup). RSS counts every page
    a worker maps, also those it shares copy-on-write with the master and the other workers; PSS
    splits shared pages among their users, USS counts only the worker's own."""
    pss: list[int] = []
    uss: list[int] = []
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        values = {
            line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()[1:] if line.endswith("kB")
        }
        pss.append(values.get("Pss", 0))
        uss.append(values.get("Private_Clean", 0) + values.get("Private_Dirty", 0))
    return (max(pss) / 1024 if pss else None, max(uss) / 1024 if uss else None)


def peak_rss_mb(pids: list[int]) -> float | None:
    """Largest VmHWM among the workers: the budget is per worker."""
    peaks = [kb for pid in pids if (kb := _status_kb(pid, "VmHWM")) is not None]
    return max(peaks) / 1024 if peaks else None


@dataclass
class Server:
    app: str
    workers: int
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    startup_s: float | None = None  # from launching gunicorn to the first 200 of /healthz

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        return _children(self.proc.pid)


def _get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextmanager
def gunicorn(app: str, workers: int, env: dict[str, str], logdir: Path) -> Iterator[Server]:
    port = free_port()
    log = logdir / f"{app.split(':')[0].replace('.', '-')}-w{workers}.log"
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        *GUNICORN_ARGS,
        app,
    ]
    launched = time.monotonic()
    with log.open("wb") as logfile:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=logfile, stderr=subprocess.STDOUT)
    server = Server(app, workers, port, proc, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"gunicorn {app} exited with {proc.returncode}; see {log}:\n" + log.read_text()[-2000:]
                )
            try:
                if _get(port, "/healthz")[0] == 200:
                    server.startup_s = server.startup_s or time.monotonic() - launched
                    if len(server.worker_pids()) >= workers:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn {app} did not answer /healthz within 30 s; see {log}")
            time.sleep(0.02)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def service_env(
    stub_url: str | None, feedback_db: Path, extra: dict[str, str] | None = None
) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["CDS_TODAY"] = AS_OF.isoformat()  # the generated chart's "today": results do not drift
    env["CDS_FEEDBACK_DB"] = str(feedback_db)
    env.pop("CDS_TRUSTED_CLIENTS", None)  # open mode: JWT checks are measured by their own tests
    env.update(extra or {})
    if stub_url:
        # "http://host" allows plain http to any port of that host (development form, config.py):
        # every FHIR stub of the bench (one per query delay) listens on loopback
        env["CDS_FHIR_ALLOWED_HOSTS"] = "http://" + stub_url.split("://", 1)[-1].rsplit(":", 1)[0]
    return env


# --- driving --------------------------------------------------------------------------------


def drive(
    server: Server,
    url_path: str,
    body_file: Path,
    requests: int,
    duration: float,
    warmup: int,
    clients: int | None = None,
    cycle: bool = False,
) -> dict[str, Any]:
    """One load-generator run against `server`: closed loop, one client per worker (no queueing)
    unless `clients` says otherwise."""
    cmd = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--url",
        server.base + url_path,
        "--body",
        str(body_file),
        "-c",
        str(clients or server.workers),
        "-n",
        str(requests),
        "-t",
        str(duration),
        "-w",
        str(warmup),
        *(["--cycle"] if cycle else []),
    ]
    done = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr.decode()[-2000:]}")
    return json.loads(done.stdout)


def round_files(bodies: list[bytes], rounds: int, tmp: Path, cycle: bool = False) -> list[Path]:
    """The body file of each round. One body: the same file every round. Several (first-seen
    charts): each round gets its own share, plus the last body for the warm-ups, so no body is
    measured twice on a server. `cycle` (a mix sent round-robin): all bodies every round."""
    if cycle:
        path = tmp / "cycle.jsonl"
        path.write_bytes(b"\n".join(bodies) + b"\n")
        return [path] * rounds
    if len(bodies) == 1:
        path = tmp / "body.json"
        path.write_bytes(bodies[0])
        return [path] * rounds
    measured, warmup = bodies[:-1], bodies[-1]
    share = max(1, len(measured) // rounds)
    files = []
    for i in range(rounds):
        path = tmp / f"bodies-{i}.jsonl"
        path.write_bytes(b"\n".join([*measured[i * share : (i + 1) * share], warmup]) + b"\n")
        files.append(path)
    return files


@dataclass
class Measured:
    summary: stats.Summary
    peak_rss_mb: float | None
    cpu_ms: float | None  # worker CPU per request served (warm-ups included in both terms)
    pss_mb: float | None
    uss_mb: float | None


def measure(
    servers: dict[str, Server],
    url_path: str,
    bodies: list[bytes],
    args: argparse.Namespace,
    tmp: Path,
    duration: float,
    clients: int | None = None,
    cycle: bool = False,
) -> dict[str, Measured]:
    """Measure every server on its bodies, alternating short rounds between them.

    The machine is shared (other processes come and go); alternating service and floor round by
    round spreads that drift over both instead of biasing the ratio. Each server first gets the
    warm-up requests (what a worker loads at first use, e.g. the text reader, is not a request's
    cost); RSS peaks are reset before, so they are this workload's. Worker CPU is read from /proc
    around each round, divided by every request served in it (measured, failed, and the one warm-up
    per client of each round): the cost of a request whatever the machine's load does to latency.
    """
    rounds = max(1, args.rounds)
    files = round_files(bodies, rounds, tmp, cycle)
    pids = {label: server.worker_pids() for label, server in servers.items()}
    for worker_pids in pids.values():
        reset_peak_rss(worker_pids)
    for server in servers.values():  # warm-up only: no measured request
        drive(server, url_path, files[0], 0, duration, args.warmup, clients, cycle)
    merged: dict[str, dict[str, Any]] = {
        label: {"latencies_ms": [], "statuses": {}, "errors": 0, "wall_s": 0.0, "served": 0, "cpu_s": 0.0}
        for label in servers
    }
    for i in range(rounds):
        for label, server in servers.items():
            warmup = 0 if cycle else 1  # (a mix was warmed up on all its bodies above)
            cpu_before = cpu_seconds(pids[label])
            result = drive(
                server,
                url_path,
                files[i],
                max(1, args.requests // rounds),
                duration / rounds,
                warmup,
                clients,
                cycle,
            )
            m = merged[label]
            m["cpu_s"] += cpu_seconds(pids[label]) - cpu_before
            m["served"] += sum(result["statuses"].values()) + warmup * (clients or server.workers)
            m["latencies_ms"].extend(result["latencies_ms"])
            m["errors"] += result["errors"]
            m["wall_s"] += result["wall_s"]
            for k, v in result["statuses"].items():
                m["statuses"][k] = m["statuses"].get(k, 0) + v
    out = {}
    for label, m in merged.items():
        pss, uss = pss_uss_mb(pids[label])
        out[label] = Measured(
            stats.summarize(m["latencies_ms"], m["errors"], m["wall_s"], m["statuses"]),
            peak_rss_mb(pids[label]),
            m["cpu_s"] * 1000 / m["served"] if m["served"] else None,
            pss,
            uss,
        )
    return out


def prefetched_count(request: dict[str, Any]) -> int:
    """Resources in the request's prefetch: one per read, the entries of each searchset Bundle."""
    count = 0
    for value in (request.get("prefetch") or {}).values():
        if isinstance(value, dict):
            count += len(value.get("entry") or []) if value.get("resourceType") == "Bundle" else 1
    return count


def discover(server: Server) -> dict[str, Any]:
    status, body = _get(server.port, "/cds-services")
    if status != 200:
        raise RuntimeError(f"GET /cds-services answered {status}")
    return pick_service(json.loads(body))


@dataclass
class Bench:
    """What a workload's body builder may use: the discovered service, the charts, the stubs."""

    service_entry: dict[str, Any]
    charts: dict[int, Any]  # resources -> generated Chart
    stub_url: Callable[[float], str]  # base URL of a FHIR stub answering with that delay (s/query)
    card_cases: dict[str, Any] = field(default_factory=dict)  # fixture case -> request that gets a card


@dataclass
class Workload:
    """One arm of the bench. Add an arm by appending to `workloads()`; a new kind of request body
    needs only a `bodies` builder (see `fixture_case_bodies`)."""

    name: str
    resources: int
    prefetch: bool = True
    scaling: bool = False
    text: bool = False  # 3 reports as text only and a text-only order reason (issue 8)
    first_seen: int = 0  # > 0: that many distinct charts (patients), each sent once: no cache has seen it
    cycle: bool = False  # several bodies sent round-robin, repeats allowed (a mix, e.g. fixture cases)
    clients: int | None = None  # concurrent load clients; None: one per worker (no queueing)
    workers: tuple[int, ...] | None = None  # only with these worker counts; None: every count run
    stub_delay_s: float = STUB_DELAY_S  # the FHIR stub's delay per query (fallback arms)
    bodies: Callable[[Bench], list[bytes]] | None = None  # custom request bodies; None: the chart's


def fixture_case_bodies(bench: Bench) -> list[bytes]:
    """The fixture cases (fixtures/cases) whose call gets a card, as the EHR sends them: set by
    `run_bench` after asking the service which do (`cards_from_cases`)."""
    return [json.dumps(r).encode() for r in bench.card_cases.values()]


def workloads(args: argparse.Namespace) -> list[Workload]:
    """The arms, in run order. Arms that read text come last: the text reader loads at first use
    and stays, so the arms before them show the lean worker (memory, issue 11)."""
    typical = SIZES["typical"]
    out = [Workload(name, n) for name, n in SIZES.items()]  # repeated chart: the same body again
    out += [
        Workload("cold", typical, first_seen=FIRST_SEEN_CHARTS),  # issue 11: first-seen charts
        Workload("large-cold", SIZES["large"], first_seen=FIRST_SEEN_LARGE),
        Workload("fallback", typical, prefetch=False),
    ]
    if not args.no_scaling:
        out += [Workload(f"scale-{n}", n, scaling=True) for n in SCALING_SIZES]
        # issue 11 memory: four 5,000-resource charts at once on one worker
        out.append(Workload("concurrent-5000", SCALING_SIZES[-1], clients=4, workers=(1,)))
    out += [
        # fixture cases with cards; some read text, so they come with the text arms
        Workload("cases", 0, cycle=True, bodies=fixture_case_bodies),
        Workload("typical-text", typical, text=True),
        Workload("text-cold", typical, text=True, first_seen=FIRST_SEEN_CHARTS),
    ]
    return out


def cards_from_cases(server: Server, path: str, requests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The cases whose call the running service answers with at least one card."""
    out = {}
    for name, request in requests.items():
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("POST", path, body=json.dumps(request), headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status == 200 and json.loads(body).get("cards"):
            out[name] = request
    return out


def run_bench(args: argparse.Namespace) -> tuple[list[Row], dict[str, Any], list[str]]:
    notes: list[str] = []
    service_app = args.service_app
    has_service = not args.floor_only and importlib.util.find_spec(service_app.split(":")[0]) is not None
    if not has_service and not args.floor_only:
        notes.append(
            f"`{service_app}` is not importable yet: floor only, with the bench's default prefetch templates."
        )
    if args.service_env:
        notes.append("service environment: " + ", ".join(f"`{k}={v}`" for k, v in args.service_env))
    rows: list[Row] = []
    service_entry: dict[str, Any] = dict(DEFAULT_DISCOVERY)
    logdir = ROOT / "var" / "bench"
    logdir.mkdir(parents=True, exist_ok=True)
    arms = [w for w in workloads(args) if not args.only or w.name in args.only]
    charts = {w.resources: generate_chart(w.resources) for w in arms if w.resources and not w.bodies}
    charts.setdefault(SIZES["typical"], generate_chart(SIZES["typical"]))
    stubs: dict[float, Any] = {}
    card_cases: dict[str, Any] = {}

    def stub_url(delay_s: float) -> str:
        if delay_s not in stubs:
            stubs[delay_s] = fhir_stub.start(charts[SIZES["typical"]], delay_s=delay_s)
        return str(stubs[delay_s].base_url)

    with tempfile.TemporaryDirectory(prefix="cds-bench-") as tmpname:
        tmp = Path(tmpname)
        try:
            extra_env = dict(args.service_env)
            env_service = service_env(stub_url(STUB_DELAY_S), tmp / "feedback.sqlite3", extra_env)
            env_floor = service_env(None, tmp / "floor.sqlite3")
            if has_service:
                with gunicorn(service_app, 1, env_service, logdir) as probe:
                    service_entry = discover(probe)
                    path = f"/cds-services/{service_entry.get('id', 'imaging-appropriateness')}"
                    if any(w.bodies is fixture_case_bodies for w in arms):
                        cases = case_requests(service_entry)
                        card_cases = cards_from_cases(probe, path, cases)
                        notes.append(
                            f"fixture cases: {len(card_cases)} of {len(cases)} order-select cases get a "
                            "card; the `cases` arm sends those round-robin"
                        )
                notes.append(
                    f"service `{service_entry.get('id')}` ({service_entry.get('hook')}), prefetch keys: "
                    + ", ".join(sorted(service_entry.get("prefetch") or {}))
                )
                notes.append(f"start-up to the first 200 (probe, 1 worker): {_f(probe.startup_s, 2)} s")
            path = f"/cds-services/{service_entry.get('id', 'imaging-appropriateness')}"
            bench = Bench(service_entry, charts, stub_url, card_cases)
            bodies: dict[str, list[bytes]] = {}
            sent: dict[str, int] = {}
            for w in arms:
                if w.bodies is not None:
                    bodies[w.name] = w.bodies(bench)
                    sent[w.name] = 0
                    continue
                chart = text_only_reports(charts[w.resources]) if w.text else charts[w.resources]
                variants = [first_seen(chart, k) for k in range(w.first_seen)] if w.first_seen else [chart]
                requests = [
                    build_request(
                        service_entry,
                        c,
                        prefetch=w.prefetch,
                        fhir_server=None if w.prefetch else stub_url(w.stub_delay_s),
                        text_reason=w.text,
                        # a new hookInstance per call, as an EHR sends it
                        **({"hook_instance": f"00000000-0000-4000-8000-{k:012d}"} if w.first_seen else {}),
                    )
                    for k, c in enumerate(variants)
                ]
                bodies[w.name] = [json.dumps(r).encode() for r in requests]
                sent[w.name] = prefetched_count(requests[0])
                del requests, variants
            for workers in args.workers:
                with contextlib.ExitStack() as stack:
                    servers = {}
                    if has_service:
                        servers["service"] = stack.enter_context(
                            gunicorn(service_app, workers, env_service, logdir)
                        )
                        started = servers["service"].startup_s
                        if started is not None:
                            STARTUP_S[workers] = started
                            notes.append(
                                f"start-up to the first 200 (service, {workers} worker(s)): {started:.2f} s"
                            )
                    servers["floor"] = stack.enter_context(gunicorn(FLOOR_APP, workers, env_floor, logdir))
                    for w in arms:
                        if (w.scaling and workers != 1) or (w.workers and workers not in w.workers):
                            continue
                        if not bodies[w.name]:
                            continue
                        # the floor fetches nothing: there is no floor for the fallback path
                        targets = (
                            servers if w.prefetch else {k: v for k, v in servers.items() if k == "service"}
                        )
                        if not targets:
                            continue
                        stub = stubs.get(w.stub_delay_s)
                        queries_before = stub.queries if stub else 0
                        duration = args.duration * (2 if w.resources >= 2000 else 1)
                        load_before = os.getloadavg()[0]
                        measured = measure(
                            targets, path, bodies[w.name], args, tmp, duration, w.clients, w.cycle
                        )
                        for label, m in measured.items():
                            summary = m.summary
                            row = Row(
                                w.name,
                                workers,
                                label,
                                w.resources,
                                max(len(b) for b in bodies[w.name]),
                                sent[w.name],
                                summary,
                                m.peak_rss_mb,
                                cpu_ms=m.cpu_ms,
                                pss_mb=m.pss_mb,
                                uss_mb=m.uss_mb,
                            )
                            row.notes.append(f"load {load_before:.1f}")
                            if w.clients:
                                row.notes.append(f"{w.clients} concurrent clients")
                            if not w.prefetch and stub is not None:
                                calls = summary.n + summary.errors + (args.warmup + args.rounds - 1) * workers
                                row.notes.append(
                                    f"{(stub.queries - queries_before) / calls:.1f} FHIR queries/call"
                                )
                            rows.append(row)
                            print(
                                f"  {label:7} w={workers} {w.name:15} n={summary.n:5} "
                                f"p50={summary.p50_ms:8.2f} ms p99={summary.p99_ms:8.2f} ms "
                                f"{summary.throughput:7.1f} req/s cpu={_f(m.cpu_ms, 2)} ms/req "
                                f"rss={_f(m.peak_rss_mb)} pss={_f(m.pss_mb)} uss={_f(m.uss_mb)} MB "
                                f"errors={summary.errors} load={load_before:.1f}",
                                file=sys.stderr,
                                flush=True,
                            )
        finally:
            for stub in stubs.values():
                stub.shutdown()
                stub.server_close()
    return rows, service_entry, notes


# --- reporting ------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _find(rows: list[Row], workload: str, workers: int, app: str) -> Row | None:
    return next((r for r in rows if (r.workload, r.workers, r.app) == (workload, workers, app)), None)


def main_table(rows: list[Row]) -> str:
    lines = [
        "| workload | chart / prefetched res. | body KiB | workers | service p50 / p95 / p99 ms "
        "| floor p50 / p95 / p99 ms "
        "| p50 ratio | service req/s | floor req/s | req/s ratio | service CPU ms/req "
        "| service peak RSS / PSS / USS MB | floor RSS MB | errors, notes |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    keys = []
    for r in rows:
        if not r.workload.startswith("scale-") and (r.workload, r.workers) not in keys:
            keys.append((r.workload, r.workers))
    for workload, workers in keys:
        s, f = _find(rows, workload, workers, "service"), _find(rows, workload, workers, "floor")
        any_row = s or f
        assert any_row is not None
        errs = []
        for r in (s, f):
            if r and r.summary.errors:
                by_status = ", ".join(f"{k}×{v}" for k, v in r.summary.statuses.items())
                errs.append(f"{r.app}: {r.summary.errors} ({by_status})")
        notes = [n for r in (s, f) if r for n in r.notes]

        def lat(r: Row | None) -> str:
            if r is None:
                return "—"
            m = r.summary
            return f"{_f(m.p50_ms, 2)} / {_f(m.p95_ms, 2)} / {_f(m.p99_ms, 2)} (n={m.n})"

        lines.append(
            f"| {workload} | {any_row.resources} / {any_row.prefetched} "
            f"| {any_row.body_bytes / 1024:.0f} | {workers} "
            f"| {lat(s)} | {lat(f)} "
            f"| {_f(stats.ratio(s and s.summary.p50_ms, f and f.summary.p50_ms), 2)} "
            f"| {_f(s and s.summary.throughput)} | {_f(f and f.summary.throughput)} "
            f"| {_f(stats.ratio(s and s.summary.throughput, f and f.summary.throughput), 2)} "
            f"| {_f(s and s.cpu_ms, 2)} "
            f"| {_f(s and s.peak_rss_mb)} / {_f(s and s.pss_mb)} / {_f(s and s.uss_mb)} "
            f"| {_f(f and f.peak_rss_mb)} | {'; '.join(errs + notes) or '0'} |"
        )
    return "\n".join(lines)


def scaling_table(rows: list[Row]) -> tuple[str, stats.Linearity | None, str]:
    lines = [
        "| resources | body KiB | service p50 ms | floor p50 ms | service − floor ms | µs/resource "
        "(service − floor) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    points: dict[str, list[tuple[int, float]]] = {"service": [], "floor": []}
    for n in SCALING_SIZES:
        s, f = _find(rows, f"scale-{n}", 1, "service"), _find(rows, f"scale-{n}", 1, "floor")
        if s is None and f is None:
            continue
        any_row = s or f
        assert any_row is not None
        own = (s.summary.p50_ms - f.summary.p50_ms) if s and f else None
        per_resource = own * 1000 / n if own is not None else None
        lines.append(
            f"| {n} | {any_row.body_bytes / 1024:.0f} | {_f(s and s.summary.p50_ms, 2)} "
            f"| {_f(f and f.summary.p50_ms, 2)} | {_f(own, 2)} | {_f(per_resource, 2)} |"
        )
        for label, row in (("service", s), ("floor", f)):
            if row is not None and not math.isnan(row.summary.p50_ms):
                points[label].append((n, row.summary.p50_ms))
    fits = {
        label: stats.linearity([n for n, _ in pts], [t for _, t in pts])
        for label, pts in points.items()
        if len(pts) >= 3
    }
    for label, lin in fits.items():
        lines.append("")
        lines.append(
            f"Marginal cost ({label}, p50): "
            + ", ".join(
                f"{a}→{b}: {m:.2f} µs/resource"
                for a, b, m in zip(lin.sizes, lin.sizes[1:], lin.marginal_us, strict=False)
            )
            + f"; growth last/first {lin.growth:.2f} (linear if ≤ 1.5)."
        )
    # the verdict is on the service; the floor's own growth (JSON parsing, allocator) is context
    label = "service" if "service" in fits else "floor"
    return "\n".join(lines), fits.get(label), label


def verdicts(rows: list[Row], lin: stats.Linearity | None, lin_label: str) -> list[stats.Verdict]:
    def get(workload: str, app: str = "service") -> Row | None:
        return _find(rows, workload, 1, app)

    def valid(r: Row | None) -> Row | None:
        return r if r and r.summary.n and not r.summary.errors else None

    typ, typ_floor, large, fb, txt = (
        valid(get("typical")),
        valid(get("typical", "floor")),
        valid(get("large")),
        valid(get("fallback")),
        valid(get("typical-text")),
    )
    out = [
        stats.at_most("typical p50 (1 worker)", typ and typ.summary.p50_ms, 10, "ms"),
        stats.at_most("typical p99 (1 worker)", typ and typ.summary.p99_ms, 25, "ms"),
        stats.at_most("typical-text p50 (1 worker)", txt and txt.summary.p50_ms, 10, "ms"),
        stats.at_most("typical-text p99 (1 worker)", txt and txt.summary.p99_ms, 25, "ms"),
        stats.at_least(
            "typical throughput / floor (1 worker)",
            stats.ratio(typ and typ.summary.throughput, typ_floor and typ_floor.summary.throughput),
            1 / 3,
            "×",
        ),
        stats.at_most("large p99 (1 worker)", large and large.summary.p99_ms, 250, "ms"),
        stats.at_most("fallback p50, 50 ms/query (1 worker)", fb and fb.summary.p50_ms, 120, "ms"),
    ]
    out += issue11_verdicts(rows, STARTUP_S.get(1))
    if lin is None or lin_label != "service":
        out.append(
            stats.Verdict(
                "linear growth 100 → 5,000 resources",
                "marginal cost growth ≤ 1.5×",
                "not measured" if lin is None else f"{lin.growth:.2f}× (floor only)",
                None,
            )
        )
    else:
        out.append(
            stats.Verdict(
                "linear growth 100 → 5,000 resources",
                "marginal cost growth ≤ 1.5×",
                f"{lin.growth:.2f}×",
                lin.linear,
            )
        )
    if any(r.summary.errors for r in rows if r.app == "service"):
        out.append(stats.Verdict("no errors under load", "0 non-2xx", "see errors column", False))
    return out


# arms whose charts have no text to read: their workers never load the text reader
_NO_TEXT_ARMS = frozenset(
    {*SIZES, "cold", "large-cold", "fallback", "concurrent-5000", *(f"scale-{n}" for n in SCALING_SIZES)}
)


def issue11_verdicts(rows: list[Row], startup_s: float | None = None) -> list[stats.Verdict]:
    """Issue 11's budget (first-seen charts, cards, start-up, memory), 1 worker."""

    def valid(workload: str, app: str = "service") -> Row | None:
        r = _find(rows, workload, 1, app)
        return r if r and r.summary.n and not r.summary.errors else None

    cold, cold_floor, typ, cases = valid("cold"), valid("cold", "floor"), valid("typical"), valid("cases")
    large_cold, big, big_floor = valid("large-cold"), valid("scale-5000"), valid("scale-5000", "floor")
    out = [
        stats.at_most("first-seen typical: worker CPU per request", cold and cold.cpu_ms, 8, "ms"),
        stats.at_most("first-seen typical p50", cold and cold.summary.p50_ms, 10, "ms"),
        stats.at_most("first-seen typical p99", cold and cold.summary.p99_ms, 25, "ms"),
        stats.at_least(
            "first-seen typical throughput / floor",
            stats.ratio(cold and cold.summary.throughput, cold_floor and cold_floor.summary.throughput),
            1 / 3,
            "×",
        ),
        stats.at_most("repeated typical chart p50", typ and typ.summary.p50_ms, 6, "ms"),
        stats.at_most("fixture cases with cards p50", cases and cases.summary.p50_ms, 6, "ms"),
        stats.at_most("first-seen 2,000 resources p99", large_cold and large_cold.summary.p99_ms, 150, "ms"),
        stats.at_most(
            "5,000 resources p50 / floor",
            stats.ratio(big and big.summary.p50_ms, big_floor and big_floor.summary.p50_ms),
            4,
            "×",
        ),
    ]
    out.append(stats.at_most("start-up to the first 200 (1 worker)", startup_s, 1.5, "s"))
    rss = [r.peak_rss_mb for r in rows if r.app == "service" and r.peak_rss_mb is not None]
    out.append(stats.at_most("peak RSS per worker (all workloads)", max(rss) if rss else None, 120, "MB"))
    lean = [
        r.peak_rss_mb for r in rows
        if r.app == "service" and r.peak_rss_mb is not None and r.workload in _NO_TEXT_ARMS
    ]
    out.append(
        stats.at_most("peak RSS per worker, charts without text", max(lean) if lean else None, 120, "MB")
    )
    return out


def budget_table(items: list[stats.Verdict]) -> str:
    lines = ["| budget item | budget | measured | verdict |", "|---|---|---|---|"]
    lines += [f"| {v.item} | {v.budget} | {v.measured} | {v.label} |" for v in items]
    return "\n".join(lines)


def machine() -> str:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
            ).stdout.strip()
            or "unknown"
        )
    except OSError:
        commit = "unknown"
    from importlib.metadata import version

    return (
        f"{cpus} CPUs ({model}), Linux {platform.release()}, Python {platform.python_version()}, "
        f"gunicorn {version('gunicorn')}, Flask {version('flask')}, commit {commit}"
    )


def report(rows: list[Row], notes: list[str], args: argparse.Namespace) -> str:
    scaling, lin, lin_label = scaling_table(rows)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"### Bench run {stamp}",
        "",
        f"Machine: {machine()}.",
        f"Settings: gunicorn `{' '.join(GUNICORN_ARGS)}`; closed loop, one client per worker; per workload "
        f"≤ {args.requests} measured requests or {args.duration:g} s (×2 for ≥ 2,000 resources) after "
        f"{args.warmup} warm-up requests per client, in {args.rounds} rounds alternating service and floor; "
        f"FHIR stub {STUB_DELAY_S * 1000:.0f} ms/query.",
        *[f"Note: {n}" for n in notes],
        "",
        main_table(rows),
        "",
        *(
            ["Scaling (1 worker):", "", scaling, ""]
            if any(r.workload.startswith("scale-") for r in rows)
            else []
        ),
        "Budget (issues 5 and 11; 1 worker):",
        "",
        budget_table(verdicts(rows, lin, lin_label)),
        "",
    ]
    return "\n".join(parts)


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError("expected NAME=VALUE")
    return name, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark the CDS service against the framework floor.")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="gunicorn worker counts")
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per workload (cap)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per workload (cap)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured requests per client")
    parser.add_argument("--rounds", type=int, default=3, help="alternating service/floor rounds per workload")
    parser.add_argument("--no-scaling", action="store_true", help="skip the 100/1,000/5,000 scaling runs")
    parser.add_argument("--floor-only", action="store_true", help="measure the floor alone")
    parser.add_argument("--only", nargs="+", metavar="ARM", help="run only these arms (workload names)")
    parser.add_argument(
        "--service-app", default=SERVICE_APP, help="gunicorn app of the service (module:attr)"
    )
    parser.add_argument(
        "--service-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="CDS_X=VALUE",
        help="extra environment for the service (repeatable), e.g. CDS_FHIR_MAX_WORKERS=8",
    )
    parser.add_argument("--no-fallback-arms", action="store_true", help="skip the FHIR fallback arms")
    parser.add_argument("--no-pg-arms", action="store_true", help="skip the PostgreSQL arms (bench.pgstate)")
    parser.add_argument("--append", type=Path, metavar="MD", help="also append the report to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    rows, _, notes = run_bench(args)
    # other processes on the machine skew latency: say how busy it was
    notes.append(f"load average (1 min) {load_before:.2f} before the run, {os.getloadavg()[0]:.2f} after.")
    text = report(rows, notes, args)
    fallback_arms = {"fallback-50ms", "fallback-1s"}  # bench.fallback (issue 11 point 3)
    wanted = not args.only or fallback_arms & set(args.only)
    if wanted and not args.no_fallback_arms and not args.floor_only:
        from bench import fallback  # noqa: PLC0415 - its own module

        section, fallback_verdicts = fallback.run_arms()
        text += "\n" + section + "\n\n" + budget_table(fallback_verdicts) + "\n"
    pg_arms = {"pg-cases", "replicas"}  # bench.pgstate (issue 13): state in PostgreSQL
    wanted = not args.only or pg_arms & set(args.only)
    if wanted and not args.no_pg_arms and not args.floor_only:
        from bench import pgstate  # noqa: PLC0415 - its own module

        section, pg_verdicts = pgstate.run_arms()
        text += "\n" + section + "\n" + ("\n" + budget_table(pg_verdicts) + "\n" if pg_verdicts else "")
    text += f"\nWall time of the bench: {time.monotonic() - started:.0f} s.\n"
    print(text)
    if args.append:
        with args.append.open("a", encoding="utf-8") as doc:
            doc.write("\n" + text)


if __name__ == "__main__":
    main()

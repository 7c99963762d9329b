"""The FHIR-fallback arms of `make bench` (issue 11 point 3).

The service gets no prefetch and must read the chart from a simulated FHIR server
(`bench.fhir_sim`) at a fixed latency per query:

- `fallback-50ms`: p50 within 50 ms + compute + 10 ms, where compute is the p50 of the same chart
  sent in prefetch, measured in the same run on the same service.
- `fallback-1s`: with the service's DEFAULT settings (only the allowlist is set), every call
  answers 200 with complete data: no 412, no key marked incomplete.

The chart is a Synthea patient (prostate-metastatic-a: 1,243 resources, 869 Observations) when the
reference data is on the machine, else the bench's generated 2,000-resource chart. Completeness is
read from the service's own access-log line of each call (its `incomplete` keys and status).

Run alone: `python -m bench.fallback [--requests 40] [--slow-requests 6]`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from bench import fhir_sim, stats
from bench.workloads import SIZES, build_request, draft_bone_scan, fill_template, generate_chart, hook_context

TOKEN = "bench-not-a-secret"  # what bench.workloads puts in fhirAuthorization
FAST_S, SLOW_S = 0.05, 1.0
BUDGET_SLACK_MS = 10.0


@dataclass
class ArmResult:
    name: str
    delay_ms: float
    summary: stats.Summary
    calls: int = 0
    status_412: int = 0
    incomplete_calls: int = 0
    fhir_calls: list[int] = field(default_factory=list)
    max_in_flight: int = 0
    incomplete_keys: set[str] = field(default_factory=set)
    cpu_ms: float = 0.0  # worker CPU per call


def chart_source(synthea: Path | None) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """(description, Patient, resources): the Synthea patient if present, else a generated chart."""
    if synthea and synthea.is_file():
        patient, resources = fhir_sim.load_transaction(synthea)
        return f"Synthea `{synthea.name}` ({len(resources)} resources)", patient, resources
    chart = generate_chart(SIZES["large"])
    resources = [r for rs in chart.resources.values() for r in rs]
    return f"generated chart ({len(resources)} resources; Synthea data not found)", chart.patient, resources


def _request(service: dict[str, Any], sim: fhir_sim.FhirSim, prefetch: bool) -> dict[str, Any]:
    """A call about the simulated server's patient: bone scan draft, no prefetch (or all of it)."""
    body = build_request(service, generate_chart(5), prefetch=False, fhir_server=sim.base_url)
    pid = sim.patient_id
    context = hook_context(service)
    order = draft_bone_scan()
    order["subject"] = {"reference": f"Patient/{pid}"}
    context["patientId"] = pid
    context["draftOrders"]["entry"][0]["resource"] = order
    body["context"] = context
    body["fhirAuthorization"]["patient"] = pid
    if prefetch:
        body.pop("fhirServer")
        body.pop("fhirAuthorization")
        body["prefetch"] = {}
        for key, template in (service.get("prefetch") or {}).items():
            query = fill_template(template, context)
            path, _, qs = query.partition("?")
            if not qs:
                body["prefetch"][key] = sim.patient
                continue
            params = [p for p in parse_qsl(qs) if p[0] not in ("_count", "_offset")]
            found = sim.search(path, params)
            body["prefetch"][key] = {"resourceType": "Bundle", "type": "searchset",
                                     "entry": [{"resource": r} for r in found]}
    return body


def _post(conn: http.client.HTTPConnection, path: str, body: dict[str, Any]) -> tuple[int, float]:
    data = json.dumps(body).encode()
    start = time.perf_counter()
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status, (time.perf_counter() - start) * 1000


def _cpu_ms(pids: list[int]) -> float:
    """User + system CPU time of the worker processes so far, in ms (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total * 1000 / os.sysconf("SC_CLK_TCK")


@dataclass
class Driven:
    ids: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_ms: float = 0.0  # worker CPU over the measured calls


def _drive(port: int, path: str, bodies: dict[str, dict[str, Any]], n: int, warmup: int,
           pids: list[int]) -> dict[str, Driven]:
    """Closed loop, one client, the bodies' calls interleaved one by one (so the machine's load
    falls on each alike); each call gets a fresh hookInstance."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = {name: Driven() for name in bodies}
    try:
        for i in range(warmup + n):
            for name, body in bodies.items():
                body = {**body, "hookInstance": str(uuid.uuid4())}
                cpu = _cpu_ms(pids)
                status, ms = _post(conn, path, body)
                if i < warmup:
                    continue
                d = out[name]
                d.cpu_ms += _cpu_ms(pids) - cpu
                d.ids.append(body["hookInstance"])
                if status == 200:
                    d.latencies_ms.append(ms)
                else:
                    d.errors += 1
    finally:
        conn.close()
    return out


def _log_lines(log: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for line in log.read_text(errors="replace").splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            entry = json.loads(line[start:])
            message = json.loads(entry["message"]) if isinstance(entry.get("message"), str) else entry
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(message, dict) and message.get("event") == "cds_call" and message.get("hookInstance"):
            out[message["hookInstance"]] = message
    return out


def run_arms(requests: int = 40, slow_requests: int = 6, synthea: Path | None = None,
             logdir: Path | None = None, slots: int | None = None) -> tuple[str, list[stats.Verdict]]:
    """Run both arms; returns (markdown section, budget verdicts). `slots`: the simulated servers
    work on at most that many queries at once (the rest queue), as a server's database pool does."""
    from bench import run as bench_run  # noqa: PLC0415 - bench.run imports this module

    synthea = synthea or fhir_sim.SYNTHEA_DIR / fhir_sim.SYNTHEA_PATIENT
    description, patient, resources = chart_source(synthea)
    sims = {
        name: fhir_sim.start(fhir_sim.FhirSim(patient, resources, delay_s=delay, token=TOKEN, slots=slots))
        for name, delay in (("fallback-50ms", FAST_S), ("fallback-1s", SLOW_S))
    }
    logdir = logdir or bench_run.ROOT / "var" / "bench"
    logdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="cds-fallback-") as tmp:
            # Default settings: only the allowlist (both simulated servers) and the bench's date.
            env = bench_run.service_env(None, Path(tmp) / "feedback.sqlite3")
            env = {k: v for k, v in env.items() if not k.startswith("CDS_FHIR_")}
            env["CDS_FHIR_ALLOWED_HOSTS"] = ",".join(s.base_url for s in sims.values())
            with bench_run.gunicorn(bench_run.SERVICE_APP, 1, env, logdir) as server:
                service = bench_run.discover(server)
                path = f"/cds-services/{service['id']}"
                pids = server.worker_pids()
                fast, slow = sims["fallback-50ms"], sims["fallback-1s"]
                # compute (same chart in prefetch) and the 50 ms arm alternate call by call
                driven = _drive(server.port, path, {"compute": _request(service, fast, True),
                                                    "fallback-50ms": _request(service, fast, False)},
                                requests, 3, pids)
                driven.update(_drive(server.port, path, {"fallback-1s": _request(service, slow, False)},
                                     slow_requests, 1, pids))
                lines = _log_lines(server.log)
    finally:
        for sim in sims.values():
            sim.shutdown()
            sim.server_close()
    compute = driven.pop("compute")
    results = []
    for name, d in driven.items():
        sim = sims[name]
        summary = stats.summarize(d.latencies_ms, d.errors, sum(d.latencies_ms) / 1000)
        result = ArmResult(name, sim.delay_s * 1000, summary, calls=len(d.ids),
                           max_in_flight=sim.max_in_flight, cpu_ms=d.cpu_ms / max(1, len(d.ids)))
        for hook_instance in d.ids:
            line = lines.get(hook_instance, {})
            result.status_412 += line.get("status") == 412
            if line.get("incomplete") or line.get("status") != 200:
                result.incomplete_calls += 1
                result.incomplete_keys.update(line.get("incomplete") or ["(no log line)"])
            result.fhir_calls.append(int(line.get("fhir_calls") or 0))
        results.append(result)
    compute_summary = stats.summarize(compute.latencies_ms, compute.errors, sum(compute.latencies_ms) / 1000)
    if slots:
        description += f", at most {slots} queries worked on at once"
    return _report(description, compute_summary, compute.cpu_ms / max(1, len(compute.ids)), results,
                   load_before)


def _report(description: str, compute: stats.Summary, compute_cpu: float, results: list[ArmResult],
            load_before: float) -> tuple[str, list[stats.Verdict]]:
    lines = [
        "FHIR fallback arms (no prefetch; simulated FHIR server `bench.fhir_sim`, "
        f"{description}; service with default `CDS_FHIR_*` settings, 1 sync worker, one client):",
        "",
        "| arm | ms/query | calls | p50 / p99 ms | worker CPU ms/call | FHIR queries/call | most in flight "
        "| 412 | calls with incomplete data |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|",
        f"| same chart in prefetch (compute) | — | {compute.n} | {compute.p50_ms:.1f} / {compute.p99_ms:.1f} "
        f"| {compute_cpu:.1f} | 0 | — | — | — |",
    ]
    verdicts = []
    for r in results:
        keys = f" ({', '.join(sorted(r.incomplete_keys))})" if r.incomplete_keys else ""
        queries = statistics.median(r.fhir_calls) if r.fhir_calls else 0
        lines.append(
            f"| {r.name} | {r.delay_ms:.0f} | {r.calls} | {r.summary.p50_ms:.1f} / {r.summary.p99_ms:.1f} "
            f"| {r.cpu_ms:.1f} | {queries:g} | {r.max_in_flight} | {r.status_412} "
            f"| {r.incomplete_calls}{keys} |"
        )
        if r.delay_ms < 500:
            limit = r.delay_ms + compute.p50_ms + BUDGET_SLACK_MS
            verdicts.append(stats.Verdict(
                f"{r.name} p50 (≤ {r.delay_ms:.0f} ms + compute {compute.p50_ms:.1f} ms "
                f"+ {BUDGET_SLACK_MS:.0f} ms)",
                f"≤ {limit:.1f} ms", f"{r.summary.p50_ms:.1f} ms",
                r.summary.n > 0 and r.summary.p50_ms <= limit and not r.incomplete_calls))
        else:
            verdicts.append(stats.Verdict(
                f"{r.name} with default settings", "complete data, no 412",
                f"{r.calls - r.incomplete_calls}/{r.calls} complete, {r.status_412} × 412",
                r.calls > 0 and not r.incomplete_calls and not r.status_412))
    lines += ["", f"Load average (1 min) {load_before:.2f} before the arms, {os.getloadavg()[0]:.2f} after."]
    return "\n".join(lines), verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40,
                        help="measured calls of the 50 ms arm (and compute)")
    parser.add_argument("--slow-requests", type=int, default=6, help="measured calls of the 1 s arm")
    parser.add_argument("--synthea", type=Path, default=None, help="Synthea transaction Bundle to serve")
    parser.add_argument("--slots", type=int, default=0, help="queries the server works on at once (0: all)")
    args = parser.parse_args()
    section, verdicts = run_arms(args.requests, args.slow_requests, args.synthea, slots=args.slots or None)
    print(section)
    print()
    print("| budget item | budget | measured | verdict |\n|---|---|---|---|")
    for v in verdicts:
        print(f"| {v.item} | {v.budget} | {v.measured} | {v.label} |")
    sys.exit(0 if all(v.passed for v in verdicts) else 1)


if __name__ == "__main__":
    main()

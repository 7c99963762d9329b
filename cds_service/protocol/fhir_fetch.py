"""How the FHIR fallback queries of one hook call are scheduled (issue 11 point 3).

Measured against a real FHIR server (code-filtered Observation searches 3-5 s each), three things
decide whether a call gets complete data in time:

- The Patient read goes first, on its own thread and connection: the other queries start only once
  its request is on the wire (or after PATIENT_HEAD_START at most), so a server that works in
  arrival order answers it first, and no slow search can hold it back into a 412.
- The Observation templates that differ only in their `code=` list become one query with the lists
  joined (one slow search instead of three); the answer is split back per template by matching each
  Observation's codings on (system, code). A server that refuses the joined query (400/404/413/414/
  422, or an OperationOutcome for a Bundle) gets the templates one by one instead, and is remembered
  for the life of the process (at most 1,024 servers), so later calls ask it per template at once.
- Every other query (and each key's chain of `next` pages) runs at once, at most
  `CDS_FHIR_MAX_WORKERS` of one call together, on the process's kept pool of threads (see
  `executor`); the follow-up reads (order reasons, referenced Medications) run in parallel too,
  in one wave.

Everything runs under the client's one deadline: every query has its timeouts, and what is still
running when the deadline passes is cancelled (`FhirClient.cancel`) and reported incomplete.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from cds_service.protocol.fhir_client import FhirAccessError, FhirClient, FhirNotFound, FhirRejected

log = logging.getLogger(__name__)

# Longest the other queries wait for the Patient read's request to be sent (a connect that hangs
# must not hold them back); on a warm connection it is sent within a millisecond.
PATIENT_HEAD_START = 0.25
# Seconds to wait, after cancelling, for queries that are still running: each read ends by the
# deadline, so only a call stuck outside a read (name resolution, a mocked transport) needs it.
STRAGGLER_GRACE = 0.3
# Slack past the deadline for a query to report its own timeout rather than be cut off.
_DEADLINE_SLACK = 0.1

Codes = frozenset[tuple[str, str]]
Outcome = tuple[list[dict[str, Any]], bool]  # (resources, complete)


@dataclass(frozen=True)
class Query:
    """One search or read to run; `members` are the keys its answer is for, each with the codes
    that pick its share out of a joined answer (empty: the whole answer)."""

    query: str
    members: tuple[tuple[str, Codes], ...]
    is_read: bool = False
    bundle: dict[str, Any] | None = None  # set: follow this prefetch Bundle's `next` links instead

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.members)

    @property
    def joined(self) -> bool:
        return len(self.members) > 1


# --- joining the code lists -------------------------------------------------------------------

_REJECTED_MAX = 1024
_rejected: OrderedDict[str, None] = OrderedDict()  # fhirServer base URLs that refused a joined query
_rejected_lock = threading.Lock()


def refuses_joined(base_url: str) -> bool:
    with _rejected_lock:
        return base_url.lower() in _rejected


def remember_refusal(base_url: str) -> None:
    with _rejected_lock:
        _rejected[base_url.lower()] = None
        _rejected.move_to_end(base_url.lower())
        while len(_rejected) > _REJECTED_MAX:
            _rejected.popitem(last=False)


def forget_refusals() -> None:
    """For tests: every server may be asked the joined query again."""
    with _rejected_lock:
        _rejected.clear()


def _split_query(query: str) -> tuple[str, list[tuple[str, str]]] | None:
    path, sep, qs = query.partition("?")
    if not sep:
        return None
    params = []
    for part in qs.split("&"):
        name, eq, value = part.partition("=")
        if not eq:
            return None
        params.append((name, value))
    return path, params


def _code_list(value: str) -> Codes | None:
    """`system|code,...` as (system, code) pairs; None when a token has no system (it could not be
    matched back to its template on (system, code))."""
    out = set()
    for token in value.split(","):
        system, bar, code = token.partition("|")
        if not bar or not system or not code:
            return None
        out.add((system, code))
    return frozenset(out)


def plan(searches: Mapping[str, str]) -> list[Query]:
    """One Query per search, except that searches of one resource type with the same parameters
    but their `code=` list (and `_count`) become one Query with the lists joined."""
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[str, list[tuple[str, str]], Codes]]]
    groups = {}
    out: list[Query] = []
    for key, query in searches.items():
        parsed = _split_query(query)
        codes_params = [v for n, v in parsed[1] if n == "code"] if parsed else []
        codes = _code_list(codes_params[0]) if len(codes_params) == 1 else None
        if parsed is None or codes is None:
            out.append(Query(query, ((key, frozenset()),)))
            continue
        path, params = parsed
        rest = tuple((n, v) for n, v in params if n not in ("code", "_count"))
        groups.setdefault((path, rest), []).append((key, params, codes))
    for (path, rest), members in groups.items():
        if len(members) == 1:
            out.append(Query(searches[members[0][0]], ((members[0][0], frozenset()),)))
            continue
        tokens: dict[str, None] = {}
        counts = []
        for _, params, _ in members:
            for name, value in params:
                if name == "code":
                    tokens.update(dict.fromkeys(value.split(",")))
                elif name == "_count" and value.isdigit():
                    counts.append(int(value))
        params = [*rest, *([("_count", str(max(counts)))] if counts else []), ("code", ",".join(tokens))]
        out.append(
            Query(f"{path}?" + "&".join(f"{n}={v}" for n, v in params), tuple((k, c) for k, _, c in members))
        )
    return out


def unjoin(query: Query, searches: Mapping[str, str]) -> list[Query]:
    """The per-template queries a joined one stands for."""
    return [Query(searches[key], ((key, frozenset()),)) for key in query.keys]


def split(query: Query, resources: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each member's share of an answer: every Observation with a coding among its codes (an
    Observation may be in several shares; one matching none is nobody's)."""
    if not query.joined:
        return {query.keys[0]: resources}
    out: dict[str, list[dict[str, Any]]] = {key: [] for key in query.keys}
    unmatched = 0
    for resource in resources:
        codings = _codings(resource)
        matched = False
        for key, codes in query.members:
            if codings & codes:
                out[key].append(resource)
                matched = True
        unmatched += not matched
    if unmatched:
        log.info("joined search: %d resources matched none of the code lists; not used", unmatched)
    return out


def _codings(resource: Mapping[str, Any]) -> set[tuple[str, str]]:
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    return {
        (c["system"], c["code"])
        for c in (codings if isinstance(codings, list) else ())
        if isinstance(c, dict) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)
    }


# --- running them -----------------------------------------------------------------------------


_running = 0  # queries being run in this process, all hook calls together (see `running`)
_running_lock = threading.Lock()


def running() -> int:
    """Queries running now: 0 once every hook call has returned (none outlives its call)."""
    return _running


def _run(client: FhirClient, query: Query, on_sent: Callable[[], None] | None = None) -> Outcome:
    global _running  # noqa: PLW0603
    with _running_lock:
        _running += 1
    try:
        if query.bundle is not None:
            return client.follow(query.bundle)
        if query.is_read:
            return [client.read(query.query, on_sent)], True
        return client.search(query.query)
    finally:
        with _running_lock:
            _running -= 1


Report = Callable[[Query, "Outcome | FhirAccessError | None"], None]


_EXECUTOR_MIN_THREADS = 32  # per process: room for two or three hook calls' queries at once
_executor: ThreadPoolExecutor | None = None
_executor_pid = 0
_executor_lock = threading.Lock()


def executor(threads: int) -> ThreadPoolExecutor:
    """This process's query threads, kept between hook calls (starting a dozen threads on every
    call cost about 1 ms of CPU). A forked worker inherits the object but none of its threads, so
    a new pid gets a new pool; so does a call that needs more threads than the pool has (the old
    one finishes what it runs and its idle threads end)."""
    global _executor, _executor_pid  # noqa: PLW0603 - one per process, replaced after a fork
    with _executor_lock:
        pool = _executor
        if pool is None or _executor_pid != os.getpid() or pool._max_workers < threads:
            if pool is not None and _executor_pid == os.getpid():
                pool.shutdown(wait=False)
            pool = ThreadPoolExecutor(max_workers=max(_EXECUTOR_MIN_THREADS, threads),
                                      thread_name_prefix="fhir")
            _executor, _executor_pid = pool, os.getpid()
        return pool


def run_all(
    client: FhirClient,
    first: Iterable[Query],
    queries: Iterable[Query],
    searches: Mapping[str, str],
    max_workers: int,
    report: Report,
) -> None:
    """Run `first` (the Patient read) ahead of `queries`, all within the client's deadline; at
    most `max_workers` of `queries` at once (`first` comes on top).

    `report(query, outcome)` is called in this thread once per query: (resources, complete), the
    FhirAccessError it ended with, or None when the deadline passed first. A joined query the
    server refuses is not reported: its per-template queries are run and reported instead.
    """
    first, backlog = list(first), deque(queries)
    limit = max(1, max_workers)
    pool = executor(limit + len(first))
    jobs: dict[Future[Outcome], Query] = {}
    try:
        sent = threading.Event()
        lead = set()
        for query in first:
            future = pool.submit(_run, client, query, sent.set)
            future.add_done_callback(lambda _f: sent.set())
            jobs[future] = query
            lead.add(future)
        if first:
            sent.wait(max(0.0, min(PATIENT_HEAD_START, client.deadline - time.monotonic())))
        _collect(client, pool, jobs, lead, backlog, limit, searches, report)
    finally:
        _stop(jobs, client)


def _collect(
    client: FhirClient,
    pool: ThreadPoolExecutor,
    jobs: dict[Future[Outcome], Query],
    lead: set[Future[Outcome]],
    backlog: deque[Query],
    limit: int,
    searches: Mapping[str, str],
    report: Report,
) -> None:
    pending = set(jobs)

    def fill() -> None:  # keep `limit` queries of this call running (the lead read on top)
        while backlog and len(pending - lead) < limit:
            query = backlog.popleft()
            future = pool.submit(_run, client, query)
            jobs[future] = query
            pending.add(future)

    fill()
    while pending:
        remaining = client.deadline + _DEADLINE_SLACK - time.monotonic()
        if remaining <= 0:
            break
        done, _ = wait(pending, timeout=remaining, return_when=FIRST_COMPLETED)
        pending.difference_update(done)
        for future in done:
            query = jobs[future]
            try:
                outcome: Outcome | FhirAccessError = future.result()
            except FhirAccessError as exc:
                # A search is never "not found": a 404 to the joined one is a URL refused for its
                # length (IIS answers 404.15), like a 400/414. Asked another way, the server may
                # answer: each template on its own.
                if query.joined and isinstance(exc, (FhirRejected, FhirNotFound)):
                    remember_refusal(client.base_url)
                    log.info("joined search refused (%s); asking per template", exc)
                    backlog.extendleft(reversed(unjoin(query, searches)))
                    continue
                outcome = exc
            report(query, outcome)
        fill()
    for future in pending:
        report(jobs[future], None)
    for query in backlog:  # never started: the deadline passed first
        report(query, None)


def _stop(jobs: Mapping[Future[Outcome], Query], client: FhirClient) -> None:
    """Leave no query running past the hook call (the pool's idle threads stay for the next)."""
    if all(future.done() for future in jobs):
        return
    client.cancel()  # running queries stop at their next chunk and close their connections
    for future in jobs:
        future.cancel()  # still queued behind another call's queries: never starts
    _, stragglers = wait(list(jobs), timeout=STRAGGLER_GRACE)
    if stragglers:
        log.warning("%d FHIR queries still running after the deadline", len(stragglers))


def read_many(client: FhirClient, paths: list[str], max_workers: int) -> dict[str, dict[str, Any] | None]:
    """Read `Type/id` paths in parallel under the client's deadline; None for each that failed."""
    found: dict[str, dict[str, Any] | None] = dict.fromkeys(paths)
    if not paths:
        return found

    def keep(query: Query, outcome: Outcome | FhirAccessError | None) -> None:
        if isinstance(outcome, tuple):
            found[query.query] = outcome[0][0]
        else:
            log.info("follow-up %s read failed: %s", query.query.split("/")[0],
                     outcome or "deadline for FHIR queries passed")

    reads = [Query(path, (), is_read=True) for path in paths]
    run_all(client, (), reads, {}, max_workers, keep)
    return found

"""What the FHIR fallback keeps between hook calls (issue 11 point 3: worker CPU of the fallback):
one session and one pool of query threads per process (new after a fork), the environment's
proxy / CA settings looked up once per origin, and still each call's token only on its own URLs."""

from __future__ import annotations

import threading
import time

import pytest
import responses

from cds_service.protocol import fhir_client, fhir_fetch
from cds_service.protocol.fhir_client import FhirClient, parse_allowed_hosts
from cds_service.protocol.fhir_fetch import Query, executor, run_all

ALLOWED = parse_allowed_hosts(["fhir.example.org", "other.example.org"])


def test_query_threads_are_kept_between_calls_and_new_after_a_fork(monkeypatch):
    pool = executor(4)
    assert executor(4) is pool
    assert pool.submit(lambda: 42).result(timeout=5) == 42
    bigger = executor(pool._max_workers + 1)  # a call that needs more threads gets them
    assert bigger is not pool and bigger._max_workers > pool._max_workers
    real = fhir_fetch.os.getpid()
    monkeypatch.setattr(fhir_fetch.os, "getpid", lambda: real + 1)  # as in a forked worker
    forked = executor(4)
    assert forked is not bigger
    assert executor(4) is forked
    assert forked.submit(lambda: 7).result(timeout=5) == 7
    forked.shutdown(wait=True)  # (the next caller, back in the real pid, makes its own)


def test_session_is_new_after_a_fork(monkeypatch):
    first = fhir_client.session()
    assert fhir_client.session() is first
    origin = ("https", "fhir.example.org", 443)
    fhir_client._origin_settings[origin] = {"proxies": {}, "verify": True, "cert": None}
    real = fhir_client.os.getpid()
    monkeypatch.setattr(fhir_client.os, "getpid", lambda: real + 1)
    forked = fhir_client.session()
    assert forked is not first
    assert fhir_client.session() is forked
    assert not fhir_client._origin_settings  # looked up again in the new process


@responses.activate
def test_environment_settings_are_looked_up_once_per_origin(monkeypatch):
    fhir_client._origin_settings.clear()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.org:3128")
    monkeypatch.setenv("NO_PROXY", "other.example.org")
    lookups = []
    current = fhir_client.session()
    original = current.merge_environment_settings

    def spy(url, *args):
        lookups.append(url)
        return original(url, *args)

    monkeypatch.setattr(current, "merge_environment_settings", spy)
    responses.get("https://fhir.example.org/r4/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    responses.get("https://other.example.org/r4/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    for _ in range(3):
        FhirClient("https://fhir.example.org/r4", ALLOWED).read("Patient/p1")
    FhirClient("https://other.example.org/r4", ALLOWED).read("Patient/p1")
    assert lookups == ["https://fhir.example.org:443/", "https://other.example.org:443/"]
    # what requests would have used: the proxy for one origin, NO_PROXY for the other
    assert fhir_client._origin_settings[("https", "fhir.example.org", 443)]["proxies"]["https"] \
        == "http://proxy.example.org:3128"
    assert "https" not in fhir_client._origin_settings[("https", "other.example.org", 443)]["proxies"]
    fhir_client._origin_settings.clear()


@responses.activate
def test_each_calls_token_goes_only_to_its_own_server():
    responses.get("https://fhir.example.org/r4/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    responses.get("https://other.example.org/r4/Patient/p2", json={"resourceType": "Patient", "id": "p2"})
    a = FhirClient("https://fhir.example.org/r4", ALLOWED, access_token="token-a")
    b = FhirClient("https://other.example.org/r4", ALLOWED, access_token="token-b")
    anonymous = FhirClient("https://other.example.org/r4", ALLOWED)
    a.read("Patient/p1")
    b.read("Patient/p2")
    anonymous.read("Patient/p2")
    a.read("Patient/p1")
    seen = [(c.request.url.split("/")[2], c.request.headers.get("Authorization")) for c in responses.calls]
    assert seen == [
        ("fhir.example.org", "Bearer token-a"),
        ("other.example.org", "Bearer token-b"),
        ("other.example.org", None),
        ("fhir.example.org", "Bearer token-a"),
    ]
    # the URL goes out quoted as requests quotes it (`|` in a code list)
    bundle = {"resourceType": "Bundle", "type": "searchset"}
    responses.get("https://fhir.example.org/r4/Observation", json=bundle)
    a.search("Observation?code=http://loinc.org|2857-1")
    assert responses.calls[-1].request.url.endswith("code=http://loinc.org%7C2857-1")


class _CountingClient:
    """Stands in for FhirClient: counts the searches running at once."""

    base_url = "https://fhir.example.org/r4"

    def __init__(self, limit: int) -> None:
        self.deadline = time.monotonic() + 10
        self.now = self.most = 0
        self.limit = limit
        self.lock = threading.Condition()

    def search(self, query: str) -> tuple[list[dict], bool]:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.lock.notify_all()
            # Stay running until `limit` searches have run at once (or 5 s): a fixed sleep would
            # let one search end before the next thread is scheduled, under load, and undercount.
            self.lock.wait_for(lambda: self.most >= self.limit, timeout=5)
        time.sleep(0.02)  # a search started over the limit meanwhile is counted in `most`
        with self.lock:
            self.now -= 1
        return [{"resourceType": "Condition", "id": query}], True

    def cancel(self) -> None:
        pass


@pytest.mark.parametrize("limit", [1, 2])
def test_the_per_call_limit_holds_on_the_kept_pool(limit):
    client = _CountingClient(limit)
    queries = [Query(f"Condition?n={n}", ((f"k{n}", frozenset()),)) for n in range(6)]
    reported = []
    run_all(client, (), queries, {}, limit, lambda q, outcome: reported.append((q.query, outcome)))  # type: ignore[arg-type]
    assert client.most == limit
    assert sorted(q for q, _ in reported) == sorted(q.query for q in queries)
    assert all(isinstance(outcome, tuple) and outcome[1] for _, outcome in reported)
    assert fhir_fetch.running() == 0

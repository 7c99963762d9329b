"""Property-based fuzzing of the hook and feedback endpoints (issue 10, "How it is checked").

Hypothesis mutates valid CDS Hooks 2.0 requests (the bodies described in docs/openapi.yaml):
members replaced by random JSON, deleted, or odd members added, at random depths. Every answer
must be < 500, and every 200 from a hook call must pass the response validator. Together the
tests send >= 2,000 requests in-process (Flask test client), time-boxed by max_examples.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import random
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.protocol.validator import validate_response

from .conftest import full_prefetch, hook_request, service_url

# Examples per test; 3,000 hook + 1,000 feedback = 4,000 requests, ~20 s in-process (a few ms each).
HOOK_EXAMPLES = 3000
FEEDBACK_EXAMPLES = 1000
FUZZ = settings(
    # CI (CI=true) replays a fixed sequence, so a red run reproduces; local runs explore new ones.
    max_examples=HOOK_EXAMPLES, deadline=None, derandomize=bool(os.environ.get("CI")), database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large],
)

# Lone surrogates, NaN/Infinity and a non-array `coding` are generated on purpose: they were
# 500s (issue 10, points 6 and 7) and are 400s / data issues now. Nesting stays shallow here
# (max_leaves): the depth limit has its own tests in test_input_bounds.py.
_text = st.text(max_size=40)
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(), _text,
    st.sampled_from(["", "Patient/pat-1", "ServiceRequest/sr-1", "Bundle", "C61", "78306",
                     "http://www.ama-assn.org/go/cpt", "order-select", "order-sign", "accepted"]),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every member path in a JSON value (dict keys and list indexes)."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            out.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out.extend(_paths(child, (*prefix, i)))
    return out


def _allowed(path: tuple, value: Any) -> bool:
    # The hook for excluding a known 5xx while it is being fixed (none now; until issue 10 point 6
    # landed, a `coding` that is not an array was one: TypeError).
    return True


# A member of another JSON type: where crashes hide (a list where a dict is expected, ...).
_confusing = st.sampled_from([0, -1, 1.5, True, False, None, "", "x", [], {}, [0], ["x"], {"a": 1}, [{}]])


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(base)
    # Uniform choice of the member to mutate (st.sampled_from favours the first members, and the
    # deep ones, e.g. a Condition's code.coding, matter most), from a drawn seed so that hypothesis
    # sees the same draws for the same seed whatever the body's size.
    rnd = random.Random(draw(st.integers(min_value=0, max_value=2**32)))
    for _ in range(rnd.randint(1, 3)):
        paths = _paths(body)
        if not paths:
            break
        path = rnd.choice(paths)
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        action = rnd.choice(["retype", "retype", "replace", "delete", "add"])
        if action in ("retype", "replace"):
            # a copy: sampled_from hands out the same [] / {} each time, and bodies are mutated
            value = copy.deepcopy(draw(_confusing if action == "retype" else _json))
            if _allowed(path, value):
                parent[path[-1]] = value
        elif action == "delete":
            parent.pop(path[-1])  # dict key or list index
        else:
            target = parent[path[-1]]
            value = copy.deepcopy(draw(_json))
            if isinstance(target, dict):
                key = draw(st.one_of(_text, st.sampled_from(["coding", "subject", "resourceType", "entry"])))
                if _allowed((*path, key), value):
                    target[key] = value
            elif isinstance(target, list):
                target.append(value)
    return body


@functools.cache
def _hook_bases() -> list[dict[str, Any]]:
    # built once: full_prefetch() reads cards/prefetch.yaml (~0.3 s); mutated() deep-copies a base
    prefetch = full_prefetch()
    return [hook_request("order-select", prefetch=prefetch), hook_request("order-sign", prefetch=prefetch),
            hook_request("order-select")]


def _feedback_base() -> dict[str, Any]:
    return {"feedback": [
        {"card": str(uuid.uuid4()), "outcome": "accepted", "outcomeTimestamp": "2026-11-22T10:00:00Z",
         "acceptedSuggestions": [{"id": str(uuid.uuid4())}]},
        {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-22T10:00:00Z",
         "overrideReason": {"reason": {"system": "http://example.org/reasons", "code": "patient-refused",
                                       "display": "Patient refused"}, "userComment": "asked twice"}},
    ]}


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory):
    from dataclasses import replace
    from datetime import date

    from cds_service.app import create_app
    from cds_service.config import Settings

    # No FHIR server is allowed: a fuzzed fhirServer must never cause an outbound call.
    cfg = Settings(today=date(2026, 11, 22), strict_responses=True,
                   feedback_db=tmp_path_factory.mktemp("fuzz") / "fb.sqlite3")
    app = create_app(replace(cfg, feedback_store_comments=True))
    app.testing = True
    return app.test_client()


def _post(client, url: str, body: Any):
    # NaN / Infinity are written as such (not JSON): the service must answer 400 (point 7)
    return client.post(url, data=json.dumps(body), content_type="application/json")


@FUZZ
@given(data=st.data())
def test_fuzzed_hook_calls_never_5xx_and_every_200_is_valid(fuzz_client, data):
    base = data.draw(st.sampled_from(_hook_bases()))
    body = data.draw(mutated(base))
    service = data.draw(st.sampled_from([service_url("order-select"), service_url("order-sign")]))
    response = _post(fuzz_client, service, body)
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:500])
    payload = json.loads(response.get_data(), parse_constant=_no_constants)
    if response.status_code == 200:
        assert validate_response(payload) == []
    else:
        assert payload["resourceType"] == "OperationOutcome"


@settings(FUZZ, max_examples=FEEDBACK_EXAMPLES)
@given(data=st.data())
def test_fuzzed_feedback_never_5xx(fuzz_client, data):
    body = data.draw(mutated(_feedback_base()))
    response = _post(fuzz_client, service_url("order-select") + "/feedback", body)
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:500])
    payload = json.loads(response.get_data(), parse_constant=_no_constants)
    if response.status_code == 200:
        assert {"received", "stored"} <= set(payload)
        assert 0 <= payload["stored"] <= payload["received"]
    else:
        assert payload["resourceType"] == "OperationOutcome"


def _no_constants(name: str) -> Any:
    raise AssertionError(f"{name} in a response: not JSON")

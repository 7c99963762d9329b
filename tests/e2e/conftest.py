"""Fixtures for the end-to-end tests: the real app, in-process, with "today" = the bundle's date."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from contextlib import redirect_stdout
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import responses

from cds_service import replay
from cds_service.bundle_search import BundleStore
from cds_service.config import Settings

REPO = Path(__file__).resolve().parents[2]
FHIR_BASE = "https://fhir.replay.test/r4"
# `cli` swaps replay.InProcess for the cached app; building one must reach the real class, or a CLI
# test that runs first (alone, or under xdist) recurses forever.
_IN_PROCESS = replay.InProcess


@pytest.fixture(scope="session")
def _e2e_session(tmp_path_factory):
    # No skips: a missing protocol layer or knowledge base must fail the suite, not hide it.
    assert (REPO / "cards" / "scenarios").is_dir(), "the knowledge base cards/scenarios is missing"
    tmp = tmp_path_factory.mktemp("e2e")
    with pytest.MonkeyPatch.context() as mp:
        # The CLI path builds its own Settings from the environment: keep its files in tmp.
        mp.setenv("CDS_FEEDBACK_DB", str(tmp / "feedback-cli.sqlite3"))
        mp.setenv("CDS_STRICT_RESPONSES", "1")
        yield Runner(Settings.from_env())


@pytest.fixture
def e2e(_e2e_session):
    return _e2e_session


EXAMPLE_SITE = REPO / "fixtures" / "site" / "example-site.yaml"


@pytest.fixture(scope="session")
def e2e_site(_e2e_session):
    """The same runner with the example site file (fixtures/site/example-site.yaml) loaded."""
    return Runner(dataclasses.replace(_e2e_session.settings, site_config=EXAMPLE_SITE))


class Runner:
    """Runs cases; the in-process apps are built once per (date, FHIR server) and reused."""

    def __init__(self, settings: Any):
        self.settings = settings
        self._apps: dict[tuple[date, str | None], replay.InProcess] = {}

    def app(self, as_of: date, fhir_server: str | None = None) -> replay.InProcess:
        key = (as_of, fhir_server)
        if key not in self._apps:
            self._apps[key] = _IN_PROCESS(as_of, fhir_server=fhir_server, settings=self.settings)
        return self._apps[key]

    def load(self, case: dict[str, Any], hook: str) -> tuple[replay.Replay, dict[str, str]]:
        rp = replay.load(case["_path"])
        rp.hook = hook
        return rp, {name: o["id"] for name, o in zip(case["orders"], rp.orders, strict=True)}

    def http(self, case: dict[str, Any], hook: str) -> tuple[int, Any, dict[str, str]]:
        """The hook call over HTTP (Flask test client), prefetch filled from discovery."""
        rp, ids = self.load(case, hook)
        status, body, _ = replay.run(rp, self.app(rp.as_of))
        return status, body, ids

    def fallback(self, case: dict[str, Any], hook: str) -> tuple[int, Any, dict[str, str]]:
        """No prefetch: the service reads the same bundle from a FHIR server served by `responses`."""
        rp, ids = self.load(case, hook)
        store = BundleStore(rp.bundle, base_url=FHIR_BASE)
        transport = self.app(rp.as_of, FHIR_BASE)
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            mock.add_callback(responses.GET, re.compile(re.escape(FHIR_BASE) + r"/.*"),
                              callback=store.responses_callback)
            status, body, _ = replay.run(rp, transport, prefetch=False, fhir_server=FHIR_BASE)
            fhir_calls = len(mock.calls)
        assert fhir_calls > 0, "the fallback path made no FHIR request"
        return status, body, ids

    def cli(self, case: dict[str, Any], hook: str) -> tuple[int, Any, dict[str, str]]:
        """`cds-service replay <case> --hook H --json`, in-process."""
        _, ids = self.load(case, hook)
        buf = io.StringIO()
        # The same real app, built once: building it (knowledge base load) per call costs ~1 s.
        with pytest.MonkeyPatch.context() as mp, redirect_stdout(buf):
            mp.setattr(replay, "InProcess", lambda as_of, fhir_server=None, **_: self.app(as_of, fhir_server))
            code = replay.main([str(case["_path"]), "--hook", hook, "--json"])
        assert code in (0, 1), f"replay exited {code}"
        return (200 if code == 0 else 500), json.loads(buf.getvalue()), ids

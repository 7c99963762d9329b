"""Fixtures for the end-to-end tests: the real app, in-process, with "today" = the bundle's date."""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import responses

from cds_service import replay
from cds_service.bundle_search import BundleStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def e2e(tmp_path, monkeypatch):
    try:
        from cds_service.config import Settings
    except ImportError:
        pytest.skip("the protocol layer (cds_service.app / config) is not in this checkout yet")
    if not (REPO / "cards" / "scenarios").is_dir():
        # The expected outcomes need the knowledge base; before it lands every case would fail alike.
        pytest.skip("the knowledge base (cards/scenarios) is not in this checkout yet")
    # The CLI path builds its own Settings from the environment: keep its files in tmp.
    monkeypatch.setenv("CDS_FEEDBACK_DB", str(tmp_path / "feedback-cli.sqlite3"))
    monkeypatch.setenv("CDS_STRICT_RESPONSES", "1")
    settings = Settings.from_env()
    return Runner(settings)


class Runner:
    def __init__(self, settings: Any):
        self.settings = settings

    def load(self, case: dict[str, Any], hook: str) -> tuple[replay.Replay, dict[str, str]]:
        rp = replay.load(case["_path"])
        rp.hook = hook
        return rp, {name: o["id"] for name, o in zip(case["orders"], rp.orders, strict=True)}

    def http(self, case: dict[str, Any], hook: str) -> tuple[int, Any, dict[str, str]]:
        """The hook call over HTTP (Flask test client), prefetch filled from discovery."""
        rp, ids = self.load(case, hook)
        status, body, _ = replay.run(rp, replay.InProcess(rp.as_of, settings=self.settings))
        return status, body, ids

    def fallback(self, case: dict[str, Any], hook: str) -> tuple[int, Any, dict[str, str]]:
        """No prefetch: the service reads the same bundle from a FHIR server served by `responses`."""
        rp, ids = self.load(case, hook)
        store = BundleStore(rp.bundle, base_url=replay_base())
        transport = replay.InProcess(rp.as_of, fhir_server=replay_base(), settings=self.settings)
        with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
            mock.add_callback(responses.GET, re.compile(re.escape(replay_base()) + r"/.*"),
                              callback=store.responses_callback)
            status, body, _ = replay.run(rp, transport, prefetch=False, fhir_server=replay_base())
            fhir_calls = len(mock.calls)
        assert fhir_calls > 0, "the fallback path made no FHIR request"
        return status, body, ids

    def cli(self, case: dict[str, Any], hook: str) -> tuple[int, Any, dict[str, str]]:
        """`cds-service replay <case> --hook H --json`, in-process."""
        _, ids = self.load(case, hook)
        buf = io.StringIO()
        with redirect_stdout(buf):
            code = replay.main([str(case["_path"]), "--hook", hook, "--json"])
        assert code in (0, 1), f"replay exited {code}"
        return (200 if code == 0 else 500), json.loads(buf.getvalue()), ids


def replay_base() -> str:
    from e2e_support import FHIR_BASE

    return FHIR_BASE

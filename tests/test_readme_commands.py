"""The README's `cds-service` commands run as documented (so the quick start stays true).

Every `cds-service` line of a ```sh block that needs no running server is run in-process from the
repository root and must exit 0 and print what the README promises; the `--print-request | curl`
pipeline is replayed against the app with the same date the README tells the server to use.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from cds_service import cli, replay
from cds_service.config import Settings

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def _commands() -> list[str]:
    lines: list[str] = []
    for block in BLOCKS:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            words = line.split()
            if not words or not words[0].endswith("cds-service") or "|" in line:
                continue
            if {"serve", "fhir-serve"} & set(words) or "--url" in words or "--fhir-server" in words:
                continue  # needs a running server: covered by tests/replay/test_fhir_serve.py
            lines.append(line)
    return lines


COMMANDS = _commands()


def test_the_readme_documents_replay_commands():
    assert sum("replay" in c for c in COMMANDS) >= 2, COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_runs(command, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("CDS_FEEDBACK_DB", str(tmp_path / "fb.sqlite3"))
    argv = shlex.split(command)[1:]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    if argv[0] == "replay" and "--print-request" not in argv:
        assert re.search(r"^\[(WARNING|CRITICAL|INFO)\] ", out, re.M), out  # a card, on any day


def test_the_print_request_pipeline_gets_a_card_from_a_service_on_the_readme_date(tmp_path, monkeypatch):
    (pipeline,) = [b for b in BLOCKS if "--print-request" in b]
    case = re.search(r"replay (\S+\.json) --print-request", pipeline)
    today = re.search(r"CDS_TODAY=(\d{4}-\d{2}-\d{2})", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert case and today
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["replay", case.group(1), "--print-request"]) == 0
    as_of = date.fromisoformat(today.group(1))
    settings = replace(Settings(), today=as_of, feedback_db=tmp_path / "fb.sqlite3")
    service = replay.InProcess(as_of, settings=settings)
    status, body = service.post("/cds-services/imaging-appropriateness", json.loads(out.getvalue()))
    assert status == 200 and body["cards"], body

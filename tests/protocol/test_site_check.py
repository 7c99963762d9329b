"""`cds-service check` with a site file: the effective site configuration printed, a bad file refused
with exit status 2 and one line naming the file and field (like any other configuration error)."""

import logging
from pathlib import Path

import pytest

from cds_service import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "site" / "example-site.yaml"


@pytest.fixture(autouse=True)
def keep_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_check_prints_the_site_configuration(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CDS_FEEDBACK_DB", str(tmp_path / "fb.sqlite3"))
    monkeypatch.setenv("CDS_SITE_CONFIG", str(EXAMPLE))
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert f"site_config = {EXAMPLE}" in out
    assert f"site configuration {EXAMPLE}: Example General Hospital, version 2026-11-30.1" in out
    assert "  unavailable = psma-pet-ct" in out
    who = "rule contrast-kidney-risk: switched off at this site by Dr A. Rivera, CDS committee on 2026-11-02"
    assert who in out
    assert "  rule flare-phenomenon: shown as info at this site by Dr B. Chen" in out
    assert "  service imaging-appropriateness-sign: quiet=false, snooze_hours=72" in out


def test_check_without_a_site_file_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CDS_FEEDBACK_DB", str(tmp_path / "fb.sqlite3"))
    monkeypatch.delenv("CDS_SITE_CONFIG", raising=False)
    assert cli.main(["check"]) == 0
    assert "site configuration: none (CDS_SITE_CONFIG unset)" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ('version: "1"\nunavailable: [psma-pet-ct, psma-pet-mri]\n',
     "unavailable[1]: 'psma-pet-mri' is not a catalog procedure; did you mean 'psma-pet-ct'?"),
    ('version: "1"\nrules:\n  red-flag-cord-compression:\n    off: true\n'
     "    reason: noisy\n    approved_by: X\n",
     "rules.red-flag-cord-compression: 'red-flag-cord-compression' is a red flag"),
])
def test_a_bad_site_file_stops_the_start_with_exit_status_2(monkeypatch, tmp_path, capsys, text, message):
    site = tmp_path / "site.yaml"
    site.write_text(text)
    monkeypatch.setenv("CDS_FEEDBACK_DB", str(tmp_path / "fb.sqlite3"))
    monkeypatch.setenv("CDS_SITE_CONFIG", str(site))
    assert cli.main(["check"]) == 2
    err = capsys.readouterr().err
    assert f"refusing to start: {site}: {message}" in err and "Traceback" not in err

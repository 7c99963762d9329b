"""Bad settings stop the service with one line naming the variable, exit 2, and no traceback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cds_service import cli
from cds_service.config import SERVE_VARIABLES, ConfigError, Settings, _Recording

SOURCE = Path(cli.__file__).resolve().parent
CASE = str(SOURCE.parent / "fixtures" / "cases" / "prostate-mcrpc-bone-scan.json")


def _clear_cds_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [k for k in os.environ if k.startswith("CDS_")]:
        monkeypatch.delenv(name)


@pytest.mark.parametrize(("env", "command", "named"), [
    ({"CDS_LOG_LEVEL": "verbose"}, ["check"], "CDS_LOG_LEVEL"),
    ({"CDS_PORT": "abc"}, ["serve"], "CDS_PORT"),
    ({"CDS_PORT": "70000"}, ["serve"], "CDS_PORT"),
    ({"CDS_FHIR_DEADLINE": "soon"}, ["check"], "CDS_FHIR_DEADLINE"),
    ({"CDS_QUIET_APPROPRIATE": "maybe"}, ["check"], "CDS_QUIET_APPROPRIATE"),
    ({"CDS_ENV": "staging"}, ["check"], "CDS_ENV"),
    ({"CDS_TRUSTED_CLIENT": "/etc/cds/clients.json"}, ["check"], "did you mean CDS_TRUSTED_CLIENTS?"),
    ({"CDS_TRUSTED_CLIENT": "/etc/cds/clients.json"}, ["replay", CASE], "CDS_TRUSTED_CLIENT"),
    ({"CDS_WORKERS": "four"}, ["serve"], "CDS_WORKERS"),
])
def test_a_bad_setting_is_one_line_and_exit_2(monkeypatch, capsys, env, command, named):
    _clear_cds_env(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(command) == 2
    err = capsys.readouterr().err.strip()
    assert named in err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["serve", "--port", "abc"], ["serve", "--log-level", "bogus"]])
def test_a_bad_option_is_a_usage_error(capsys, argv):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert argv[1] in err and "Traceback" not in err


def test_a_bad_port_does_not_break_help_of_other_commands(monkeypatch, capsys):
    monkeypatch.setenv("CDS_PORT", "abc")
    with pytest.raises(SystemExit) as stop:
        cli.main(["replay", "--help"])
    assert stop.value.code == 0
    assert "usage: cds-service replay" in capsys.readouterr().out


def test_every_cds_variable_in_the_code_is_a_known_setting():
    """Keeps the unknown-variable check honest: a new setting read anywhere must be known to it."""
    recording = _Recording({})
    Settings._read(recording)
    known = recording.read | SERVE_VARIABLES
    mentioned = {
        name for path in SOURCE.rglob("*.py")
        for name in re.findall(r"\bCDS_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8"))
    }
    assert mentioned - known == set()


@pytest.mark.parametrize(("env", "problem"), [
    ({}, "CDS_TRUSTED_CLIENTS is not set"),
    ({"CDS_TRUSTED_CLIENTS": "/etc/cds/clients.json", "CDS_CORS_ORIGINS": "https://ehr.example.org",
      "CDS_FHIR_ALLOWED_HOSTS": "http://fhir.example.org"}, "plain http"),
    ({"CDS_TRUSTED_CLIENTS": "/etc/cds/clients.json"}, "CDS_CORS_ORIGINS is '*'"),
])
def test_production_refuses_development_settings(env, problem):
    with pytest.raises(ConfigError, match=re.escape(problem)):
        Settings.from_env({"CDS_ENV": "production", **env})


def test_production_accepts_a_locked_down_configuration():
    settings = Settings.from_env({
        "CDS_ENV": "production", "CDS_TRUSTED_CLIENTS": "/etc/cds/clients.json",
        "CDS_CORS_ORIGINS": "https://ehr.example.org", "CDS_FHIR_ALLOWED_HOSTS": "fhir.example.org",
    })
    assert settings.environment == "production"


def test_check_prints_the_configuration_and_writes_nothing(monkeypatch, capsys, tmp_path):
    _clear_cds_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    state = tmp_path / "state" / "feedback.sqlite3"
    monkeypatch.setenv("CDS_FEEDBACK_DB", str(state))
    monkeypatch.setenv("CDS_FHIR_DEADLINE", "2.5")
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: knowledge version ")
    assert "  fhir_deadline = 2.5" in out
    assert f"  feedback_db = {state}" in out
    assert list(tmp_path.iterdir()) == []


def test_state_defaults_to_the_per_user_data_directory(monkeypatch, tmp_path):
    from cds_service.config import default_state_dir

    assert default_state_dir({"XDG_DATA_HOME": str(tmp_path)}) == tmp_path / "cds-imaging-appropriateness"
    assert Settings().feedback_db.parent.name == "cds-imaging-appropriateness"
    assert not Settings().feedback_db.is_relative_to(Path.cwd()) or Path.cwd() == Path.home()


def test_canonical_base_is_a_setting_that_roots_our_urls(tmp_path):
    from dataclasses import replace

    from cds_service import replay

    base = "https://cds.hospital.example/fhir"
    case = replay.load(Path(CASE))
    settings = replace(Settings(), canonical_base=base, feedback_db=tmp_path / "fb.sqlite3")
    status, body, _ = replay.run(case, replay.InProcess(case.as_of, settings=settings))
    urls = json.dumps(body)
    assert status == 200 and body["systemActions"]
    assert f"{base}/StructureDefinition/imaging-appropriateness" in urls
    assert "example.org/fhir/StructureDefinition" not in urls
    with pytest.raises(ConfigError, match="CDS_CANONICAL_BASE"):
        Settings.from_env({"CDS_CANONICAL_BASE": "cds.hospital.example"})

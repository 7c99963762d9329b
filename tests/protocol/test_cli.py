import logging
import sys

import pytest

from cds_service import cli


@pytest.fixture(autouse=True)
def keep_logging():
    """`check` configures process-wide JSON logging: give the other tests theirs back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_replay_without_the_module_prints_a_clear_message(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cds_service.replay", None)  # import fails as if absent
    assert cli.main(["replay", "--anything"]) == 2
    assert "cds_service.replay" in capsys.readouterr().err


def test_replay_delegates_its_arguments(monkeypatch):
    seen = {}

    class Replay:
        @staticmethod
        def main(argv):
            seen["argv"] = argv
            return 0

    monkeypatch.setitem(sys.modules, "cds_service.replay", Replay)
    assert cli.main(["replay", "fixtures/x", "--today", "2026-11-22"]) == 0
    assert seen["argv"] == ["fixtures/x", "--today", "2026-11-22"]


def test_replay_into_a_closed_pipe_exits_quietly(monkeypatch, capsys):
    class Replay:
        @staticmethod
        def main(argv):
            raise BrokenPipeError(32, "Broken pipe")  # `cds-service replay ... | head` after head left

    monkeypatch.setitem(sys.modules, "cds_service.replay", Replay)
    assert cli.main(["replay", "fixtures/x"]) == 141
    assert "Traceback" not in capsys.readouterr().err


def test_check_loads_the_knowledge_base(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CDS_FEEDBACK_DB", str(tmp_path / "fb.sqlite3"))
    assert cli.main(["check"]) == 0
    assert "knowledge version" in capsys.readouterr().out


def test_refuses_to_start_on_bad_configuration(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CDS_FEEDBACK_DB", str(tmp_path / "fb.sqlite3"))
    monkeypatch.setenv("CDS_TRUSTED_CLIENTS", str(tmp_path / "missing.json"))
    assert cli.main(["check"]) == 2
    assert "refusing to start" in capsys.readouterr().err

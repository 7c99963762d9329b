"""The profiling entry point runs the real app in-process and writes a report."""

import pytest

pytest.importorskip("pyinstrument")

from bench import profile  # noqa: E402


def test_profile_writes_a_text_report(tmp_path, capsys):
    profile.main(["--iterations", "2", "--workloads", "small", "--out", str(tmp_path)])
    report = (tmp_path / "small.txt").read_text()
    assert "invoke" in report or "dispatch_request" in report  # the service's own frames, not only Flask
    assert "small: 2 calls" in capsys.readouterr().out

"""`cds-service verify`: the fixture library passes, a wrong expectation fails readably, bad input exits 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cds_service import cli, verify

FIX = Path(__file__).resolve().parents[2] / "fixtures"
CASE = FIX / "cases" / "breast-early-stage-bone-scan.json"


def run(argv, capsys):
    code = verify.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_fixture_library_passes(capsys):
    cases = sorted((FIX / "cases").glob("*.json"))
    calls = sum(len(json.loads(p.read_text())["hooks"]) for p in cases)
    code, out, err = run([], capsys)  # default: every fixtures/cases/*.json
    assert code == 0, out[-3000:] + err
    last = out.splitlines()[-1]
    assert last == f"verify: {calls} passed, 0 failed ({len(cases)} case files, {calls} hook calls)"
    assert "FAIL" not in out
    # expected vs actual per order, and the rules the answer cites
    scenario = "breast-early-stage-asymptomatic"
    assert re.search(rf"PASS  breast-early-stage-bone-scan \[order-sign\]\n"
                     rf"    scenario +expected {scenario} +actual {scenario}\n", out)
    assert f"  rules fired: {scenario}\n" in out
    assert re.search(r"PAMA +expected not-appropriate +actual not-appropriate", out)
    assert re.search(r"ACR +expected usually-not-appropriate +actual usually-not-appropriate", out)


def _library_copy(tmp_path: Path) -> Path:
    """A cases/ directory beside links to the fixture patients/ and orders/, as replay.load_case expects."""
    for name in ("patients", "orders"):
        (tmp_path / name).symlink_to(FIX / name, target_is_directory=True)
    (tmp_path / "cases").mkdir()
    return tmp_path / "cases"


def test_a_wrong_expectation_fails_with_expected_vs_actual(tmp_path, capsys):
    case = json.loads(CASE.read_text())
    (order,) = case["expected"]["orders"]
    assert case["expected"]["orders"][order]["pama"] == "not-appropriate"
    case["expected"]["orders"][order]["pama"] = "appropriate"  # what the sources do not say
    cases = _library_copy(tmp_path)
    (cases / CASE.name).write_text(json.dumps(case))
    (cases / "untouched.json").write_text(CASE.read_text())

    code, out, err = run([cases], capsys)  # a directory of case files
    assert code == 1, out + err
    name = case["name"]
    for hook in case["hooks"]:
        assert f"FAIL  {name} [{hook}]" in out
    assert re.search(r"PAMA +expected appropriate +actual not-appropriate", out)
    assert f"! {name}: {order} rated 'not-appropriate', expected ['appropriate']" in out
    hooks = len(case["hooks"])
    assert f"verify: {hooks} passed, {hooks} failed (2 case files, {2 * hooks} hook calls)" in out
    assert out.splitlines()[-1].startswith("failed: ")


def test_a_missing_scenario_card_and_pitfall_are_each_reported(tmp_path, capsys):
    case = json.loads(CASE.read_text())
    exp = case["expected"]
    exp["scenario"] = "prostate-initial-staging"
    (order,) = exp["orders"]
    exp["orders"][order]["pitfalls"] = ["flare-phenomenon"]
    cases = _library_copy(tmp_path)
    path = cases / "wrong.json"
    path.write_text(json.dumps(case))
    code, out, _ = run([path], capsys)
    assert code == 1
    assert "expected scenario ['prostate-initial-staging']" in out
    assert "pitfall flare-phenomenon missing" in out


def test_missing_or_malformed_input_is_exit_2(tmp_path, capsys):
    code, out, err = run([tmp_path / "nope.json"], capsys)
    assert code == 2 and "case file not found" in err and not out
    bundle = FIX / "patients" / "prostate-mets-adt-rising-psa.json"
    code, _, err = run([bundle], capsys)
    assert code == 2 and "not a case file" in err
    code, _, err = run([tmp_path], capsys)  # an empty directory
    assert code == 2 and "no case files" in err


def test_the_cli_dispatches_to_verify(tmp_path, capsys):
    assert cli.main(["verify", str(tmp_path / "nope.json")]) == 2
    assert "case file not found" in capsys.readouterr().err

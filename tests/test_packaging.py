"""The built wheel works on its own: installed into a fresh venv, run outside the source tree.

A hospital installs the wheel (or the Docker image) and has no checkout: the knowledge base and the
OpenAPI document must come from the package itself, without CDS_CARDS_DIR.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "fixtures" / "cases" / "prostate-mcrpc-bone-scan.json"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheel; third-party packages come from this interpreter's site."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy of what an sdist holds, so the build leaves nothing in the checkout and
    # cannot lean on files outside it.
    source = tmp / "source"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("cds_service", "cards", "docs"):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp / "dist"), str(source)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    target_site = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)}))
    # Dependencies (and pip itself) are reachable but not this checkout: a .pth line adds a directory
    # without running that directory's own .pth files, so the editable install's finder stays out.
    (target_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    return env_dir


def _run(env_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PYTHON"))}
    env["HOME"] = str(cwd)
    return subprocess.run([str(env_dir / "bin" / "cds-service"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def test_the_wheel_carries_the_knowledge_base_and_openapi(installed: Path, tmp_path: Path) -> None:
    code = ("import json; from cds_service.knowledge import DEFAULT_CARDS_DIR as d; "
            "from cds_service.protocol.openapi import load_description as o; "
            "print(json.dumps([str(d), o() is not None]))")
    out = subprocess.run([str(installed / "bin" / "python"), "-c", code], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    cards_dir, has_openapi = json.loads(out.stdout)
    assert str(installed) in cards_dir and cards_dir.endswith("_cards")
    assert ROOT.as_posix() not in cards_dir
    assert has_openapi


def test_check_and_replay_run_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    check = _run(installed, tmp_path, "check")
    assert check.returncode == 0, check.stderr
    assert "ok: knowledge version" in check.stdout
    replay = _run(installed, tmp_path, "replay", str(CASE), "--json")
    assert replay.returncode == 0, replay.stderr
    assert "Traceback" not in replay.stderr
    answer = json.loads(replay.stdout)
    assert isinstance(answer["cards"], list)
    rated = [a["description"] for a in answer["systemActions"]]
    assert any("rating" in d for d in rated), rated


def test_the_installed_wheel_renders_the_governance_dashboard(installed: Path, tmp_path: Path) -> None:
    # the Jinja2 templates are package data: a wheel without them answers /admin/ with a 500
    code = ("from pathlib import Path; from cds_service.app import create_app; "
            "from cds_service.config import Settings; "
            "app = create_app(Settings(feedback_db=Path('state.sqlite3'), cache_dir=None)); "
            "r = app.test_client().get('/admin/'); "
            "print(r.status_code, 'id=\"rules\"' in r.get_data(as_text=True))")
    out = subprocess.run([str(installed / "bin" / "python"), "-c", code], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["200", "True"], out.stdout + out.stderr


def test_version_flag(installed: Path, tmp_path: Path) -> None:
    out = _run(installed, tmp_path, "--version")
    assert out.returncode == 0
    assert out.stdout.startswith("cds-service 0.1.0 (knowledge base ")

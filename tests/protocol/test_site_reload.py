"""Reloading the site file (CDS_SITE_CONFIG): SIGHUP to the `cds-service serve` master re-reads it
into new workers; a file that does not load keeps the running configuration (README, Site
configuration). A real gunicorn master and workers: nothing is stubbed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import requests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _until(check: Callable[[], bool], seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except requests.RequestException:
            pass
        time.sleep(0.3)
    return False


SITE = 'version: "{version}"\nsite: Reload Hospital\nunavailable: [{unavailable}]\n'


def test_sighup_reloads_the_site_file_and_a_broken_one_keeps_the_running_configuration(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(SITE.format(version="v1", unavailable="psma-pet-ct"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PROMETHEUS"))}
    env.update(CDS_FEEDBACK_DB=str(tmp_path / "fb.sqlite3"), PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"),
               CDS_CACHE_DIR=str(tmp_path / "cache"), CDS_SITE_CONFIG=str(site))
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "cds_service.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    rules = f"http://127.0.0.1:{port}/rules"

    def shows(version: str) -> Callable[[], bool]:
        return lambda: f"version {version}" in requests.get(rules, timeout=5).text

    try:
        assert _until(shows("v1")), (tmp_path / "serve.log").read_text()[-2000:]
        site.write_text(SITE.format(version="v2", unavailable="fdg-pet-ct"))
        server.send_signal(signal.SIGHUP)
        assert _until(shows("v2")), (tmp_path / "serve.log").read_text()[-2000:]
        # every worker now serves v2 (the old ones were stopped after their requests)
        assert _until(lambda: all(shows("v2")() for _ in range(8)))
        assert "FDG-PET/CT" in requests.get(rules, timeout=5).text

        site.write_text(SITE.format(version="v3", unavailable="psma-pet-mri"))  # not a catalog id
        server.send_signal(signal.SIGHUP)
        assert _until(lambda: "reload refused" in (tmp_path / "serve.log").read_text())
        assert "'psma-pet-mri' is not a catalog procedure" in (tmp_path / "serve.log").read_text()
        assert server.poll() is None and all(shows("v2")() for _ in range(8))
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()

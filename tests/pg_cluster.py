"""A throwaway PostgreSQL cluster for tests and benchmarks (no pytest needed).

    with PgCluster() as cluster:
        url = cluster.create_database("t1")   # postgresql://postgres@127.0.0.1:PORT/t1

`initdb` into a temporary directory, `pg_ctl start` on a free loopback port with its unix socket in
that directory, trust authentication; `stop()` (or leaving the `with`) stops it and deletes the
directory. PostgreSQL refuses to run as root: as root the binaries run as the `postgres` user
(`runuser -u postgres --`) in a directory that user owns.

Binaries: $PG_BIN, else the newest /usr/lib/postgresql/*/bin (Debian's `postgresql` package), else
`pg_ctl` on PATH. `available()` says whether any was found and, if not, why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

DEBIAN_BINARIES = Path("/usr/lib/postgresql")


def bin_dir() -> Path | None:
    configured = os.environ.get("PG_BIN", "").strip()
    if configured:
        return Path(configured) if (Path(configured) / "initdb").is_file() else None
    if DEBIAN_BINARIES.is_dir():
        versions = sorted(
            (p for p in DEBIAN_BINARIES.iterdir() if (p / "bin" / "initdb").is_file()),
            key=lambda p: int(p.name) if p.name.isdigit() else 0,
        )
        if versions:
            return versions[-1] / "bin"
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def available() -> str | None:
    """None when a cluster can be started here; else the reason it cannot."""
    if bin_dir() is None:
        return (f"PostgreSQL binaries not found (no initdb in $PG_BIN, {DEBIAN_BINARIES}/*/bin or PATH); "
                "install Debian's `postgresql` package")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without `runuser` (PostgreSQL refuses to run as root)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run PostgreSQL as"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PgCluster:
    def __init__(self, fsync: bool = False) -> None:
        # fsync off: a test cluster need not survive a power cut, and its commits are then ~10x
        # faster. Benchmarks turn it on to measure what a real database pays.
        self.fsync = fsync
        self.port = 0
        self.dir: Path | None = None
        self._options = ""
        self._bin = bin_dir()

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def start(self) -> PgCluster:
        if self._bin is None:
            raise RuntimeError(available() or "PostgreSQL binaries not found")
        self.dir = Path(tempfile.mkdtemp(prefix="cds-pg-"))
        data = self.dir / "data"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        self.port = free_port()
        durable = "on" if self.fsync else "off"
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses={self.host} -c fsync={durable}"
                   f" -c synchronous_commit={durable} -c full_page_writes={durable}"
                   " -c max_connections=200 -c shared_buffers=32MB")
        self._options = options
        self._run("pg_ctl", "-D", str(data), "-o", options, "-l", str(self.dir / "server.log"),
                  "-w", "-t", "30", "start")
        return self

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (a fast test teardown: no checkpoint) and delete its directory."""
        if self.dir is None:
            return
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", mode, "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def pause(self) -> None:
        """Stop the server but keep its data (an outage); `resume()` starts it again on the same port."""
        assert self.dir is not None
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        assert self.dir is not None
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-o", self._options, "-l",
                  str(self.dir / "server.log"), "-w", "-t", "30", "start")

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')  # names come from tests
        return self.url(name)

    def _run(self, tool: str, *args: str) -> None:
        assert self._bin is not None
        command = [str(self._bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=90, cwd=self.dir or "/")
        if result.returncode != 0:
            log = ""
            if self.dir is not None and (self.dir / "server.log").is_file():
                log = (self.dir / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip()[-2000:]}\n{log}")

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

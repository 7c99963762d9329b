"""`cds-service` command: `serve` (gunicorn), `replay` (fixtures; cds_service.replay), `verify` (cases)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib
import io
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cds_service.config import ConfigError, check_log_level

# Raised while reading settings or the knowledge base before anything serves (all ValueErrors with
# a message written for the operator).
_SETTINGS_ERRORS = (ConfigError,)


def main(argv: Sequence[str] | None = None) -> int:
    """Every usage or settings error is one line on stderr and exit status 2, never a traceback."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except _SETTINGS_ERRORS as exc:
        print(f"cds-service: refusing to start: {exc}", file=sys.stderr)
        return 2


def _main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cds-service", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the CDS Hooks endpoints with gunicorn")
    serve.add_argument("--host", default=os.environ.get("CDS_HOST", "127.0.0.1"))
    # Read when serving, not while building the parser: a bad CDS_PORT must not break `replay --help`.
    serve.add_argument("--port", type=_port, default=None, help="default: CDS_PORT or 8080")
    serve.add_argument("--workers", type=int, default=_env_int("CDS_WORKERS", 4))
    serve.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)  # ignored: sync workers
    serve.add_argument("--timeout", type=int, default=_env_int("CDS_WORKER_TIMEOUT", 30),
                       help="seconds a request may run before its worker is killed and replaced")
    serve.add_argument("--graceful-timeout", type=int, default=_env_int("CDS_GRACEFUL_TIMEOUT", 10))
    serve.add_argument("--log-level", type=_log_level, default=None, help="default: CDS_LOG_LEVEL or INFO")
    sub.add_parser("replay", help="replay fixture scenarios (see cds_service.replay)", add_help=False)
    sub.add_parser("check", help="load the knowledge base and configuration, then exit")
    sub.add_parser("migrate", help="bring the state database (CDS_DATABASE_URL or CDS_FEEDBACK_DB) to the "
                   "schema revision this version needs")
    sub.add_parser("prune", help="delete audit records and card links older than CDS_RETENTION_DAYS, "
                   "and expired JWT ids (run daily)")
    sub.add_parser("report", help="report figures over the fixture cases: `report rated-share` (issue 9)",
                   add_help=False)
    sub.add_parser("verify", add_help=False,
                   help="run case files and check each answer against its expected outcome (PASS/FAIL)")
    sub.add_parser("fhir-serve", add_help=False,
                   help="serve a fixture patient as a read-only FHIR server (try the no-prefetch path)")

    if args[:1] == ["replay"]:
        return _replay(args[1:])
    if args[:1] == ["report"]:
        from cds_service import coverage_report

        return coverage_report.main(args[1:])
    if args[:1] == ["verify"]:
        from cds_service import verify

        return _piped(verify.main, args[1:])
    if args[:1] == ["fhir-serve"]:
        from cds_service import fhir_serve

        return fhir_serve.main(args[1:])
    parsed = parser.parse_args(args)
    if parsed.command == "check":
        return _check()
    if parsed.command == "prune":
        return _prune()
    if parsed.command == "migrate":
        return _migrate()
    return _serve(parsed)


def _replay(argv: list[str]) -> int:
    try:
        replay = importlib.import_module("cds_service.replay")
    except ModuleNotFoundError as exc:
        if exc.name != "cds_service.replay":
            raise
        print("cds-service replay: cds_service.replay is not installed in this build", file=sys.stderr)
        return 2
    return _piped(replay.main, argv)


def _piped(command: Any, argv: list[str]) -> int:
    try:
        result = command(argv)
    except BrokenPipeError:
        # `cds-service replay ... | head`: the reader left. No traceback, the usual exit status;
        # stdout goes to /dev/null so the interpreter's final flush does not fail again.
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return int(result or 0)


def _check() -> int:
    """Load everything a start would load, print the effective configuration, write nothing."""
    from cds_service.config import Settings

    settings = Settings.from_env()
    # Opening the real state file would create it (and its directory), migrating the shared
    # database would change it: check against a throw-away copy, then only read the real one.
    with tempfile.TemporaryDirectory() as scratch:
        app = _build_app(dataclasses.replace(settings, feedback_db=Path(scratch) / "check.sqlite3",
                                             database_url=None))
        if app is None:
            return 2
        knowledge = app.extensions["cds"].knowledge
        site = app.extensions["cds"].site
    print(f"ok: knowledge version {knowledge.version} ({len(knowledge.scenarios)} scenarios)")
    if settings.database_url:
        print(f"  database: {_database_state(settings)}")
    for name, value in effective_settings(settings).items():
        print(f"  {name} = {value}")
    # the site's changes, with who approved each and why (CDS_SITE_CONFIG; knowledge/site.py)
    for line in site.describe(knowledge) if site else ["site configuration: none (CDS_SITE_CONFIG unset)"]:
        print(line)
    return 0


def _database_state(settings: Any) -> str:
    """The shared database's schema revision, read only (the URL shown without its password)."""
    from cds_service.state import db as state_db
    from cds_service.state import migrate

    database = state_db.from_settings(settings)
    try:
        revision = migrate.current(database)
    except state_db.DatabaseError as exc:
        return f"{database.redacted}: unreachable ({type(exc).__name__})"
    finally:
        database.dispose()
    if migrate.is_current(revision):
        return f"{database.redacted}: schema revision {revision} (current)"
    return (f"{database.redacted}: schema revision {revision or 'none'}, needs {migrate.HEAD}: "
            "run `cds-service migrate`")


def _migrate() -> int:
    from cds_service.config import Settings
    from cds_service.state import db as state_db
    from cds_service.state import migrate

    settings = Settings.from_env()
    database = state_db.from_settings(settings)
    try:
        before, after = migrate.upgrade(database)
    except state_db.DatabaseError as exc:
        print(f"migrate: {database.redacted}: failed ({type(exc).__name__}: {_first_line(exc)})",
              file=sys.stderr)
        return 1
    finally:
        database.dispose()
    change = "already current" if before == after else "migrated"
    print(f"migrate: {database.redacted}: revision {before or 'none'} -> {after} ({change})")
    return 0


def _first_line(exc: BaseException) -> str:
    # a driver's message names host and database, never the password; keep it to one line
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200] if str(exc).strip() else ""


def _prune() -> int:
    from cds_service.config import Settings
    from cds_service.protocol.auth import DatabaseReplayCache
    from cds_service.protocol.feedback import FeedbackStore
    from cds_service.state import db as state_db
    from cds_service.state import migrate

    settings = Settings.from_env()
    if settings.database_url is None and not settings.feedback_db.is_file():
        print(f"prune: nothing to do ({settings.feedback_db} does not exist)")
        return 0
    database = state_db.from_settings(settings)
    try:
        migrate.prepare(database, settings.database_auto_migrate)
        migrate.check(database)
        removed = FeedbackStore(database).prune_older_than(settings.retention_days)
        removed["seen_jti"] = DatabaseReplayCache(database).prune()
    except migrate.SchemaTooOld as exc:
        raise ConfigError(str(exc)) from None
    except state_db.DatabaseError as exc:
        print(f"prune: {database.redacted}: failed ({type(exc).__name__})", file=sys.stderr)
        return 1
    print(f"prune: older than {settings.retention_days} days: "
          + ", ".join(f"{n} {table}" for table, n in removed.items()))
    return 0


def effective_settings(settings: Any) -> dict[str, str]:
    """The settings as an operator reads them; anything secret is shown only as set / unset."""
    shown = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.name.rsplit("_", 1)[-1] in {"secret", "token", "password"}:
            value = "(set)" if value else "(unset)"
        elif f.name == "database_url" and value:
            from cds_service.state.db import redact

            value = redact(value)
        elif isinstance(value, tuple):
            value = ", ".join(map(str, value)) or "(none)"
        shown[f.name] = "(default)" if value is None else str(value)
    return shown


def _build_app(settings: Any = None) -> Any:
    from cds_service.app import create_app
    from cds_service.protocol.access_log import configure_logging

    configure_logging(check_log_level(os.environ.get("CDS_LOG_LEVEL", "INFO")))
    try:
        return create_app(settings)
    except (ValueError, OSError) as exc:  # KnowledgeError, ConfigError, TrustConfigError, ...
        print(f"cds-service: refusing to start: {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    if args.port is None:
        args.port = _port(os.environ.get("CDS_PORT", "").strip() or "8080", "CDS_PORT")
    if args.log_level is None:
        args.log_level = check_log_level(os.environ.get("CDS_LOG_LEVEL", "INFO"))
    os.environ["CDS_LOG_LEVEL"] = args.log_level
    _metrics_dir()  # before the app (and prometheus_client) is imported
    app = _build_app()  # built once in the master (preload): a bad knowledge base stops here
    if app is None:
        return 2
    gc.freeze()  # the loaded knowledge base is permanent: keep it out of every GC pass (and shared)

    if args.threads != 1:
        print("cds-service serve: --threads is ignored; sync workers serve one request each "
              "(see README, Worker protection)", file=sys.stderr)
    options = gunicorn_options(args)
    options["child_exit"] = _worker_exited
    current = {"app": app}

    class _Server(BaseApplication):  # type: ignore[misc]  # gunicorn ships no type hints
        def load_config(self) -> None:
            for name, value in options.items():
                self.cfg.set(name, value)

        def load(self) -> Any:
            return current["app"]

        def reload(self) -> None:
            # SIGHUP to the master: build the app again (site file and knowledge base re-read); the
            # new workers serve it while the old ones finish their requests. A file that does not
            # load keeps the running app, with the reason in the log: a reload never stops service.
            super().reload()
            fresh = _rebuilt_app()
            if fresh is not None:
                current["app"] = fresh
                self.callable = None
                gc.freeze()

    _Server().run()
    return 0


def _rebuilt_app() -> Any:
    import logging

    from cds_service.app import create_app

    try:
        return create_app()
    except (ValueError, OSError) as exc:
        logging.getLogger("cds_service").error("reload refused, the running configuration stays: %s", exc)
        return None


def _metrics_dir() -> Path:
    """A directory where every worker writes its metric samples (prometheus_client multiprocess).

    Emptied at start: samples of a previous run's workers would otherwise be summed in.
    """
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    path = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="cds-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def _worker_exited(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def gunicorn_options(args: argparse.Namespace) -> dict[str, Any]:
    """The gunicorn configuration `serve` runs with (README "Worker protection").

    Sync workers, one request each: a sync worker heart-beats only between requests, so a request
    that runs past `timeout` (CPU-bound on hostile input, or stuck) gets its worker killed and
    replaced by the arbiter. A threaded (gthread) worker heart-beats from its main loop while a
    request thread is stuck, so its timeout never fires. `graceful_timeout` bounds how long a
    restart waits for requests in flight. The request-line/header limits make gunicorn refuse
    oversized heads before the app runs (its own HTML 400; the app never sees them).
    """
    return {
        "bind": f"{args.host}:{args.port}",
        "worker_class": "sync",
        "workers": args.workers,
        "threads": 1,
        "timeout": args.timeout,
        "graceful_timeout": args.graceful_timeout,
        "limit_request_line": _env_int("CDS_LIMIT_REQUEST_LINE", 4094),
        "limit_request_fields": _env_int("CDS_LIMIT_REQUEST_FIELDS", 100),
        "limit_request_field_size": _env_int("CDS_LIMIT_REQUEST_FIELD_SIZE", 8190),
        "preload_app": True,
        "loglevel": args.log_level.lower(),
        "accesslog": None,  # our own structured line per call replaces it
        "logconfig_dict": _json_logging(args.log_level),
    }


def _port(raw: str, name: str = "--port") -> int:
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise (argparse.ArgumentTypeError if name == "--port" else ConfigError)(
            f"{name} must be a TCP port 1-65535, got {raw!r}"
        )
    return port


def _log_level(raw: str) -> str:
    try:
        return check_log_level(raw, "--log-level")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _version() -> str:
    from cds_service import __version__
    from cds_service.knowledge import DEFAULT_CARDS_DIR

    try:
        kb = (DEFAULT_CARDS_DIR / "VERSION").read_text(encoding="utf-8").strip()
    except OSError:
        kb = "missing"
    return f"cds-service {__version__} (knowledge base {kb})"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _json_logging(level: str) -> dict[str, Any]:
    """gunicorn's own messages as JSON lines too, like the service's."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "cds_service.protocol.access_log.JsonFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json",
                                 "stream": "ext://sys.stderr"}},
        "loggers": {
            "gunicorn.error": {"handlers": ["console"], "level": level.upper(), "propagate": False},
            "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
        "root": {"handlers": ["console"], "level": level.upper()},
    }


if __name__ == "__main__":
    sys.exit(main())

"""Service configuration, read once from `CDS_*` environment variables.

Every setting has a safe default, so `create_app()` with no environment serves the built-in
knowledge base in development mode (open, no outbound FHIR calls). See README "Configuration".
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """An environment variable has a value the service cannot use."""


# Read by the `serve` command (cds_service/cli.py) rather than by Settings; listed so that a CDS_*
# variable nobody reads is caught as a typo (tests/protocol/test_settings_errors.py keeps this true).
SERVE_VARIABLES = frozenset({
    "CDS_HOST", "CDS_PORT", "CDS_WORKERS", "CDS_WORKER_TIMEOUT", "CDS_GRACEFUL_TIMEOUT",
    "CDS_LIMIT_REQUEST_LINE", "CDS_LIMIT_REQUEST_FIELDS", "CDS_LIMIT_REQUEST_FIELD_SIZE", "CDS_LOG_LEVEL",
})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Per-user data directory (XDG): state never lands in whatever directory a command runs in."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME", "").strip() or str(Path.home() / ".local" / "share")
    return Path(base) / "cds-imaging-appropriateness"


class _Recording(Mapping[str, str]):
    """The environment, remembering which variables the settings read."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env, self.read = env, set[str]()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.env[key]

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.read.add(key)
        return self.env.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.env)

    def __len__(self) -> int:
        return len(self.env)


def check_log_level(raw: str, name: str = "CDS_LOG_LEVEL") -> str:
    level = raw.strip().upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{name} must be one of {', '.join(LOG_LEVELS)}; got {raw!r}")
    return level


@dataclass(frozen=True)
class Settings:
    # "production" refuses settings that are only safe on a developer's machine (production_problems).
    environment: str = "development"
    cards_dir: Path | None = None  # None: the knowledge base shipped in the repo
    # One YAML file of a site's changes (knowledge/site.py): studies not offered, rules switched
    # off or shown as info, quiet mode and snooze per service, consult link, local study names.
    site_config: Path | None = None
    today: date | None = None  # fixes "today" for the rules (tests, replay); None: the UTC date
    public_base_url: str | None = None  # e.g. "https://cds.example.org"; None: the request's root URL
    # Reverse proxies in front of the service whose X-Forwarded-* headers are believed (ProxyFix).
    # 0: none. With trusted clients, either this or public_base_url is required (JWT `aud`).
    trust_proxy_headers: int = 0
    # FHIR servers the service may call: "host[:port]" (https only) or "http://host[:port]"
    # (http allowed, for development). No port means any port on that host.
    fhir_allowed_hosts: tuple[str, ...] = ()
    fhir_connect_timeout: float = 1.5  # seconds
    # Seconds to wait for an answer's next bytes. A server that queues queries (a database pool)
    # answers the last of a call's 9 queries after several rounds: 4 s covers 3 rounds at 1 s/query.
    fhir_read_timeout: float = 4.0
    # Seconds for all outbound FHIR calls of one hook call: 1 s/query servers need up to ~3 rounds
    # (first page + Patient, next pages, follow-up reads) plus compute (README "Sizing the FHIR timeouts").
    fhir_deadline: float = 5.0
    fhir_page_cap: int = 10  # Bundle pages followed per prefetch key
    fhir_max_workers: int = 12  # concurrent FHIR queries per hook call (>= templates: one wave)
    # Response bodies read from the FHIR server per hook call, all queries and pages together: an
    # answer that would go over it is abandoned unparsed and its data marked incomplete.
    fhir_max_bytes: int = 20 * 1024 * 1024
    feedback_db: Path = default_state_dir() / "feedback.sqlite3"
    # The shared state database of several replicas: postgresql://user:password@host:5432/db
    # (psycopg 3). None: the SQLite file feedback_db. Never printed or logged with its password.
    database_url: str | None = field(default=None, repr=False)
    database_pool_size: int = 2  # PostgreSQL connections kept per worker process (SQLite: one per thread)
    # Seconds to open a connection (PostgreSQL counts whole seconds, at least 2) / that one statement
    # may run on PostgreSQL: a dead or stuck database costs a hook call at most about these.
    database_connect_timeout: float = 2.0
    database_statement_timeout: float = 2.0
    # PostgreSQL: migrate the schema at start instead of refusing to start on an older one (SQLite,
    # the embedded default, is always migrated at start).
    database_auto_migrate: bool = False
    feedback_store_comments: bool = False  # free-text override comments may contain PHI
    # Days an audit record (one per hook call) and a card's feedback link are kept; `cds-service
    # prune` deletes older rows (run it daily). Feedback items themselves are kept.
    retention_days: int = 400
    # No nagging (issue 9.7): after an override/dismissal the same card (patient, order code, rule,
    # verdict) is not shown again for this many hours; 0: never snoozed. Red flags never are.
    snooze_hours: float = 24.0
    # Key of the HMAC that stands in for patient ids in kept state (snoozes). None: a random key per
    # process (warned about; snoozes then end at a restart and are not shared between replicas).
    state_secret: str | None = field(default=None, repr=False)
    trusted_clients: Path | None = None  # JSON file; None: open (development) mode
    # Bearer token of the governance dashboard (/admin/); None: the dashboard is off (404), except
    # in open development mode on localhost (cds_service/governance/web.py). Never logged.
    admin_token: str | None = field(default=None, repr=False)
    jwt_algorithms: tuple[str, ...] = ("ES384", "RS384")
    jwt_leeway: int = 30  # seconds of clock skew accepted on exp / iat
    jwt_max_lifetime: int = 3600  # seconds; longer-lived tokens are refused (bounds the jti cache)
    jwks_cache_seconds: int = 3600
    cors_origins: tuple[str, ...] = ("*",)
    max_body_bytes: int = 10 * 1024 * 1024
    # Input bounds (issue 10): beyond them a request is refused with 4xx, or data is skipped and the
    # answer says so. Each keeps the work of one request bounded whatever the client sends.
    max_json_depth: int = 100  # nesting of the request JSON; real FHIR stays well under 30
    max_draft_orders: int = 50  # draftOrders entries per hook call (more: 400)
    max_resources_per_key: int = 5000  # per prefetch key / FHIR search; the rest skipped (data issue)
    max_feedback_items: int = 100  # feedback items per request (more: 400)
    max_comment_chars: int = 2000  # overrideReason.userComment length (longer: 400)
    strict_responses: bool = False  # raise on a response-contract violation (tests); else drop + log
    # Usually-appropriate orders with no pitfall: rating only, no card (spares alert fatigue).
    quiet_appropriate: bool = True
    # CMS G-code of the qualified CDS mechanism for `pama-rating-qcdsm-consulted`; None: omitted.
    qcdsm_id: str | None = None
    # Root of our own FHIR extension and CodeSystem URLs (rating extension, rule and override-reason
    # codes); None: `canonical_base` of cards/texts/general.yaml (a placeholder until a site sets it).
    canonical_base: str | None = None
    # Where the checked knowledge base is kept between starts (knowledge/cache.py); None: not on
    # disk (still shared within the process). From the environment: $XDG_CACHE_HOME/cds-service.
    cache_dir: Path | None = None
    # Load the clinical text reader (spaCy/medspaCy) and the R4B validators at start instead of at
    # first use. Off: a worker starts fast and small, and the first chart with text to read pays
    # the load (about 1 s, +45 MB) once. On with `cds-service serve` (which builds the app before
    # forking): loaded once and shared copy-on-write by the workers (README, Workers and memory).
    preload_readers: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every CDS_* variable checked: a bad value or an unknown name is a one-line ConfigError."""
        env = _Recording(os.environ if environ is None else environ)
        settings = cls._read(env)
        unknown = sorted(k for k in env.env if k.startswith("CDS_") and k not in env.read | SERVE_VARIABLES)
        if unknown:
            # A misspelt CDS_TRUSTED_CLIENTS would otherwise leave the service open without a word.
            known = sorted(env.read | SERVE_VARIABLES)
            hint = difflib.get_close_matches(unknown[0], known, n=1)
            raise ConfigError(
                f"{unknown[0]} is not a setting" + (f" (did you mean {hint[0]}?)" if hint else "")
                + "; see README, Configuration"
            )
        check_log_level(env.env.get("CDS_LOG_LEVEL", "INFO"))
        problems = settings.production_problems() if settings.environment == "production" else []
        if problems:
            raise ConfigError("CDS_ENV=production: " + "; ".join(problems))
        return settings

    def production_problems(self) -> list[str]:
        """What makes these settings unfit to face a real EHR (empty: fit)."""
        problems = []
        if self.trusted_clients is None:
            problems.append("CDS_TRUSTED_CLIENTS is not set (the service would be open to anyone)")
        plain = [h for h in self.fhir_allowed_hosts if h.lower().startswith("http://")]
        if plain:
            problems.append(
                f"CDS_FHIR_ALLOWED_HOSTS allows plain http ({', '.join(plain)}): tokens would travel in clear"
            )
        if "*" in self.cors_origins:
            problems.append("CDS_CORS_ORIGINS is '*': name the EHR origins that may call from a browser")
        return problems

    @classmethod
    def _read(cls, env: Mapping[str, str]) -> Settings:
        d = cls()
        return cls(
            environment=_choice(env, "CDS_ENV", ("development", "production"), d.environment),
            cards_dir=_path(env, "CDS_CARDS_DIR", d.cards_dir),
            site_config=_path(env, "CDS_SITE_CONFIG", d.site_config),
            today=_date(env, "CDS_TODAY"),
            public_base_url=(env.get("CDS_PUBLIC_BASE_URL") or "").rstrip("/") or None,
            trust_proxy_headers=_int(env, "CDS_TRUST_PROXY_HEADERS", d.trust_proxy_headers),
            fhir_allowed_hosts=_list(env, "CDS_FHIR_ALLOWED_HOSTS", d.fhir_allowed_hosts),
            fhir_connect_timeout=_float(env, "CDS_FHIR_CONNECT_TIMEOUT", d.fhir_connect_timeout),
            fhir_read_timeout=_float(env, "CDS_FHIR_READ_TIMEOUT", d.fhir_read_timeout),
            fhir_deadline=_float(env, "CDS_FHIR_DEADLINE", d.fhir_deadline),
            fhir_page_cap=_int(env, "CDS_FHIR_PAGE_CAP", d.fhir_page_cap),
            fhir_max_workers=_int(env, "CDS_FHIR_MAX_WORKERS", d.fhir_max_workers),
            fhir_max_bytes=_int(env, "CDS_FHIR_MAX_BYTES", d.fhir_max_bytes),
            feedback_db=_path(env, "CDS_FEEDBACK_DB", d.feedback_db) or d.feedback_db,
            database_url=_database_url(env, "CDS_DATABASE_URL"),
            database_pool_size=_int(env, "CDS_DATABASE_POOL_SIZE", d.database_pool_size) or 1,
            database_connect_timeout=_float(env, "CDS_DATABASE_CONNECT_TIMEOUT", d.database_connect_timeout),
            database_statement_timeout=_float(
                env, "CDS_DATABASE_STATEMENT_TIMEOUT", d.database_statement_timeout
            ),
            database_auto_migrate=_bool(env, "CDS_DATABASE_AUTO_MIGRATE", d.database_auto_migrate),
            feedback_store_comments=_bool(env, "CDS_FEEDBACK_STORE_COMMENTS", d.feedback_store_comments),
            retention_days=_int(env, "CDS_RETENTION_DAYS", d.retention_days),
            snooze_hours=_hours(env, "CDS_SNOOZE_HOURS", d.snooze_hours),
            state_secret=_secret(env, "CDS_STATE_SECRET"),
            trusted_clients=_path(env, "CDS_TRUSTED_CLIENTS", None),
            admin_token=_token(env, "CDS_ADMIN_TOKEN"),
            jwt_algorithms=_list(env, "CDS_JWT_ALGORITHMS", d.jwt_algorithms),
            jwt_leeway=_int(env, "CDS_JWT_LEEWAY", d.jwt_leeway),
            jwt_max_lifetime=_int(env, "CDS_JWT_MAX_LIFETIME", d.jwt_max_lifetime),
            jwks_cache_seconds=_int(env, "CDS_JWKS_CACHE_SECONDS", d.jwks_cache_seconds),
            cors_origins=_list(env, "CDS_CORS_ORIGINS", d.cors_origins),
            max_body_bytes=_int(env, "CDS_MAX_BODY_BYTES", d.max_body_bytes),
            max_json_depth=_int(env, "CDS_MAX_JSON_DEPTH", d.max_json_depth),
            max_draft_orders=_int(env, "CDS_MAX_DRAFT_ORDERS", d.max_draft_orders),
            max_resources_per_key=_int(env, "CDS_MAX_RESOURCES_PER_KEY", d.max_resources_per_key),
            max_feedback_items=_int(env, "CDS_MAX_FEEDBACK_ITEMS", d.max_feedback_items),
            max_comment_chars=_int(env, "CDS_MAX_COMMENT_CHARS", d.max_comment_chars),
            strict_responses=_bool(env, "CDS_STRICT_RESPONSES", d.strict_responses),
            quiet_appropriate=_bool(env, "CDS_QUIET_APPROPRIATE", d.quiet_appropriate),
            qcdsm_id=(env.get("CDS_QCDSM_ID") or "").strip() or None,
            canonical_base=_canonical(env, "CDS_CANONICAL_BASE"),
            cache_dir=_cache_dir(env),
            preload_readers=_bool(env, "CDS_PRELOAD_READERS", d.preload_readers),
        )


def _cache_dir(env: Mapping[str, str]) -> Path | None:
    raw = env.get("CDS_CACHE_DIR")
    if raw is None:
        base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "cds-service"
    return None if raw.strip().lower() in _FALSE | {"none"} else Path(raw.strip())


def _list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None:
        return default
    return tuple(item.strip() for item in raw.replace(";", ",").split(",") if item.strip())


def _canonical(env: Mapping[str, str], name: str) -> str | None:
    raw = (env.get(name) or "").strip().rstrip("/")
    if not raw:
        return None
    if not raw.startswith(("https://", "http://")) or " " in raw:
        raise ConfigError(f"{name} must be an absolute http(s) URL, got {raw!r}")
    return raw


_DATABASE_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://", "sqlite:///")


def _database_url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.startswith(_DATABASE_SCHEMES):
        # the value itself is not echoed: it may hold a password
        raise ConfigError(f"{name} must start with postgresql:// (or sqlite:/// for a file)")
    return raw


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {raw!r}")
    return raw


def _path(env: Mapping[str, str], name: str, default: Path | None) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw) if raw else default


def _parsed(env: Mapping[str, str], name: str, convert: Callable[[str], T], what: str) -> T | None:
    """The variable converted, None when unset or blank; a value that does not convert is refused."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return convert(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from exc


def _date(env: Mapping[str, str], name: str) -> date | None:
    return _parsed(env, name, date.fromisoformat, "a date YYYY-MM-DD")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _parsed(env, name, int, "an integer")
    if value is None:
        return default
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    value = _parsed(env, name, float, "a number of seconds")
    if value is None:
        return default
    if value <= 0:
        raise ConfigError(f"{name} must be positive")
    return value


def _hours(env: Mapping[str, str], name: str, default: float) -> float:
    value = _parsed(env, name, float, "a number of hours")
    if value is None:
        return default
    if not 0 <= value <= 24 * 365:  # also refuses nan and inf
        raise ConfigError(f"{name} must be between 0 (off) and 8760 hours")
    return value


STATE_SECRET_MIN_CHARS = 32


def _secret(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if len(raw) < STATE_SECRET_MIN_CHARS:
        # a short key can be brute-forced together with the small space of patient ids
        raise ConfigError(
            f"{name} must be at least {STATE_SECRET_MIN_CHARS} characters (e.g. `openssl rand -hex 32`)"
        )
    return raw


ADMIN_TOKEN_MIN_CHARS = 16


def _token(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if len(raw) < ADMIN_TOKEN_MIN_CHARS or any(c.isspace() for c in raw):
        # a Bearer token travels in one header line; a short one can be guessed
        raise ConfigError(
            f"{name} must be at least {ADMIN_TOKEN_MIN_CHARS} characters without spaces "
            "(e.g. `openssl rand -hex 32`)"
        )
    return raw


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")

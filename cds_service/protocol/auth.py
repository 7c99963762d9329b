"""JWT authentication of CDS Clients (CDS Hooks 2.0 "Trusting CDS Clients").

Trusted clients come from a JSON file (`CDS_TRUSTED_CLIENTS`) keyed by `iss`:

    {"https://ehr.example.org": {"jwks_url": "https://ehr.example.org/jwks.json",
                                 "jku": ["https://ehr.example.org/jwks.json"],
                                 "tenants": ["hospital-a"]},
     "https://other.example.org": {"jwks": {"keys": [...]}}}

Every failure is the same bare 401 to the caller; the reason is logged, the token never is.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Float, bindparam, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cds_service.protocol import metrics
from cds_service.state import migrate, tables
from cds_service.state.db import Database, DatabaseError

log = logging.getLogger(__name__)

# Asymmetric algorithms only: the spec forbids `none` and every symmetric (HS*) algorithm.
_ASYMMETRIC = {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
_MIN_REFRESH_SECONDS = 10.0  # an unknown kid refetches a JWKS at most this often
_JWKS_TIMEOUT = (2.0, 3.0)
_NUMERIC_DATES = ("exp", "iat", "nbf")  # RFC 7519 NumericDate: a JSON number, never a string


def _jwt() -> Any:
    """PyJWT, imported when trusted clients are configured (it loads `cryptography`, ~0.25 s and
    several MB at start): an open development service never needs it."""
    return importlib.import_module("jwt")


class AuthError(Exception):
    """The call is not authenticated. The message is for the log only, never the response."""


class TrustConfigError(ValueError):
    """The trusted-clients file is missing or malformed: the service refuses to start."""


@dataclass(frozen=True)
class TrustedClient:
    iss: str
    jwks_url: str | None = None
    jwks: Mapping[str, Any] | None = None
    jku: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()


@dataclass(frozen=True)
class Caller:
    """Who made an authenticated call (stored with feedback; no secrets)."""

    iss: str
    tenant: str | None = None


def load_trusted_clients(path: Path) -> dict[str, TrustedClient]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrustConfigError(f"CDS_TRUSTED_CLIENTS {path}: cannot read JSON: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise TrustConfigError("CDS_TRUSTED_CLIENTS must map each iss to its key configuration")
    clients = {}
    for iss, entry in data.items():
        if not isinstance(entry, dict):
            raise TrustConfigError(f"trusted client {iss!r}: configuration must be an object")
        jwks_url, jwks = entry.get("jwks_url"), entry.get("jwks")
        jku = entry.get("jku", [])
        tenants = entry.get("tenants", [])
        if jwks_url is None and jwks is None and not jku:
            raise TrustConfigError(f"trusted client {iss!r}: needs 'jwks_url', 'jwks' or 'jku'")
        if jwks is not None and not (isinstance(jwks, dict) and isinstance(jwks.get("keys"), list)):
            raise TrustConfigError(f"trusted client {iss!r}: 'jwks' must be a JWK Set with 'keys'")
        if jwks_url is not None and not isinstance(jwks_url, str):
            raise TrustConfigError(f"trusted client {iss!r}: 'jwks_url' must be a URL")
        if isinstance(jku, str):
            jku = [jku]
        if not _str_list(jku) or not _str_list(tenants):
            raise TrustConfigError(f"trusted client {iss!r}: 'jku' and 'tenants' must be lists of strings")
        clients[iss] = TrustedClient(iss, jwks_url, jwks, tuple(jku), tuple(tenants))
    return clients


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check_numeric_dates(claims: Mapping[str, Any]) -> None:
    # PyJWT converts with int(), so "exp": "9999999999" would pass: RFC 7519 requires a number.
    for name in _NUMERIC_DATES:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise AuthError(f"{name} is not a JSON number")


class JwksCache:
    """JWK Sets by URL, kept for `ttl` seconds and refetched when a token names an unknown kid."""

    def __init__(
        self, ttl: float, fetch: Callable[[str], Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._fetch = fetch or _fetch_jwks
        self._clock = clock
        self._sets: dict[str, tuple[float, dict[str, dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def key(self, url: str, kid: str) -> dict[str, Any] | None:
        with self._lock:
            fetched_at, keys = self._sets.get(url, (0.0, {}))
        age = self._clock() - fetched_at
        stale = not keys or age > self._ttl
        if kid in keys and not stale:
            return keys[kid]
        if stale or age > _MIN_REFRESH_SECONDS:
            try:
                keys = _index(self._fetch(url))
            except (requests.RequestException, ValueError) as exc:
                log.warning("JWKS fetch failed (%s)", type(exc).__name__)
                return keys.get(kid)  # a stale key is better than locking every client out
            with self._lock:
                self._sets[url] = (self._clock(), keys)
        return keys.get(kid)


def _fetch_jwks(url: str) -> Mapping[str, Any]:
    response = requests.get(url, timeout=_JWKS_TIMEOUT, allow_redirects=False)
    response.raise_for_status()
    data = response.json()
    if not isinstance(data, dict):
        raise ValueError("JWKS is not an object")
    return data


def _index(jwks: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    keys = jwks.get("keys")
    return {
        k["kid"]: k for k in keys if isinstance(k, dict) and isinstance(k.get("kid"), str)
    } if isinstance(keys, list) else {}


class ReplayCache:
    """`jti` values seen, each kept until its token expires (this process only; tests)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def first_use(self, iss: str, jti: str, exp: float) -> bool:
        now = time.time()
        with self._lock:
            if len(self._seen) > 1000:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            if self._seen.get((iss, jti), 0.0) > now:
                return False
            self._seen[(iss, jti)] = exp
            return True


class DatabaseReplayCache:
    """`jti` values seen, shared by every worker and replica through the state database.

    One statement decides: INSERT of (iss, jti) that does nothing when a live row holds that pair
    (the primary key), so of two concurrent uses of a token on any replicas exactly one inserts
    (rowcount 1) and the other is a replay (rowcount 0); there is no read-then-write race. A row
    whose token has expired is taken over by the same statement (ON CONFLICT ... DO UPDATE WHERE
    exp < now). Only (iss, jti, exp) is kept: a nonce, not a credential.

    Every jti is also remembered in this process (ReplayCache). While the database cannot be
    reached that memory decides alone: guidance is never blocked by the state database (issue 13),
    and a replay to the same worker is still refused; a replay to another worker or replica within
    the token's short lifetime (CDS_JWT_MAX_LIFETIME) is the accepted risk, logged and counted in
    `cds_state_errors{operation="jti"}` so an operator sees the outage.
    """

    PRUNE_EVERY = 200  # inserts per process between deletions of expired rows

    def __init__(self, db: Database | Path) -> None:
        if isinstance(db, Path):
            db = Database(db)
            migrate.upgrade(db)
        self.db = db
        self.path = db.path
        insert = sqlite_insert if db.dialect == "sqlite" else pg_insert
        seen = tables.seen_jti
        statement = insert(seen)
        self._first_use = statement.on_conflict_do_update(
            index_elements=[seen.c.iss, seen.c.jti],
            set_={"exp": statement.excluded.exp},
            where=seen.c.exp < bindparam("now", type_=Float),
        ).execution_options(preserve_rowcount=True)  # rowcount decides: SQLAlchemy keeps it if asked
        self._prune = delete(seen).where(seen.c.exp < bindparam("now", type_=Float))
        self._inserts = 0
        self._local = ReplayCache()
        # PostgreSQL: the statement compiled once, sent on the thread's kept connection (db.hot)
        self._sql_first_use = db.compiled(self._first_use) if db.dialect == "postgresql" else None

    def first_use(self, iss: str, jti: str, exp: float) -> bool:
        now = time.time()
        fresh_here = self._local.first_use(iss, jti, exp)
        self._inserts += 1
        try:
            return self._first_use_shared(iss, jti, exp, now)
        except DatabaseError as exc:
            log.error("jti replay check on this worker only: state database unavailable (%s)",
                      type(exc).__name__)
            metrics.note_state_error("jti")
            return fresh_here

    def _first_use_shared(self, iss: str, jti: str, exp: float, now: float) -> bool:
        if self._inserts % self.PRUNE_EVERY == 0:
            self.prune()
        params = {"iss": iss, "jti": jti, "exp": exp, "now": now}
        if self._sql_first_use is not None:
            with self.db.hot() as conn, conn.cursor() as cur:
                cur.execute(self._sql_first_use, params)
                return bool(cur.rowcount == 1)
        with self.db.autocommit() as db:  # one statement decides: no transaction around it needed
            inserted = db.execute(self._first_use, params)
            return inserted.rowcount == 1

    def prune(self) -> int:
        """Forget the jti values of expired tokens (a replay of those fails on `exp` anyway)."""
        with self.db.begin() as db:
            return db.execute(self._prune, {"now": time.time()}).rowcount


@dataclass
class Authenticator:
    clients: Mapping[str, TrustedClient]
    algorithms: frozenset[str]
    leeway: int = 30
    max_lifetime: int = 3600
    jwks: JwksCache = field(default_factory=lambda: JwksCache(3600))
    replay: ReplayCache | DatabaseReplayCache = field(default_factory=ReplayCache)

    @classmethod
    def create(
        cls, clients: Mapping[str, TrustedClient], algorithms: Iterable[str], leeway: int,
        max_lifetime: int, jwks_ttl: int, replay: ReplayCache | DatabaseReplayCache | None = None,
    ) -> Authenticator:
        requested = {a.strip().upper() for a in algorithms}
        refused = requested - _ASYMMETRIC
        if refused:
            log.warning("ignoring JWT algorithms %s: only asymmetric algorithms are allowed", sorted(refused))
        allowed = frozenset(requested & _ASYMMETRIC)
        if not allowed:
            raise TrustConfigError("CDS_JWT_ALGORITHMS allows no usable algorithm")
        _jwt()  # at start, not on the first call
        return cls(clients, allowed, leeway, max_lifetime, JwksCache(jwks_ttl), replay or ReplayCache())

    def authenticate(self, authorization: str | None, audiences: Iterable[str]) -> Caller:
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthError("no bearer token")
        jwt = _jwt()
        token = authorization[len("Bearer "):].strip()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed JWT ({type(exc).__name__})") from exc
        alg, kid, jku = header.get("alg"), header.get("kid"), header.get("jku")
        if isinstance(unverified, dict):
            _check_numeric_dates(unverified)
        if alg not in self.algorithms:
            raise AuthError(f"algorithm {alg!r} not allowed")
        if not isinstance(kid, str) or not kid:
            raise AuthError("no kid in JWT header")
        iss = unverified.get("iss") if isinstance(unverified, dict) else None
        client = self.clients.get(iss) if isinstance(iss, str) else None
        if client is None:
            raise AuthError("issuer not trusted")
        jwk = self._key(client, kid, jku)
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
            claims = jwt.decode(
                token, key=key.key, algorithms=[alg], audience=list(audiences), issuer=client.iss,
                leeway=self.leeway, options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:
            raise AuthError(f"JWT rejected ({type(exc).__name__})") from exc
        exp = float(claims["exp"])
        if exp - time.time() > self.max_lifetime + self.leeway:
            raise AuthError("JWT lifetime longer than allowed")
        tenant = claims.get("tenant")
        if client.tenants and tenant not in client.tenants:
            raise AuthError("tenant not allowed")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise AuthError("jti must be a non-empty string")
        if not self.replay.first_use(client.iss, jti, exp + self.leeway):
            raise AuthError("jti replayed")
        return Caller(iss=client.iss, tenant=tenant if isinstance(tenant, str) else None)

    def _key(self, client: TrustedClient, kid: str, jku: Any) -> dict[str, Any]:
        """The issuer's key for `kid`: keys configured out of band first, the token's `jku` last.

        A `jku` header is only a hint where to fetch keys. Keys the site configured (an inline JWKS or
        `jwks_url`) are used whenever they hold the `kid`, so a client that always sends a `jku` (the
        CDS Hooks sandbox does) works behind an egress firewall. The `jku` is fetched only when no
        configured key matches, and only from the issuer's allowlist. A `jku` that is not on a
        configured allowlist is refused outright: the site declared which URLs that issuer uses.
        """
        if jku is not None and (not isinstance(jku, str) or (client.jku and jku not in client.jku)):
            raise AuthError("jku not on the issuer's allowlist")
        key = None
        if client.jwks is not None:
            key = _index(client.jwks).get(kid)
        if key is None and client.jwks_url is not None:
            key = self.jwks.key(client.jwks_url, kid)
        if key is None and jku is not None:
            if jku not in client.jku and jku != client.jwks_url:
                raise AuthError("jku not on the issuer's allowlist")
            key = self.jwks.key(jku, kid)
        if key is None:
            raise AuthError("kid not found in the issuer's JWKS")
        return key

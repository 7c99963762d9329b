"""Reads from the EHR's FHIR server: allowlisted hosts only, bearer token, timeouts, paging.

Nothing here is called for a server whose host is not in `CDS_FHIR_ALLOWED_HOSTS`: the check is
made before any connection, and again for every `next` link (a server cannot send the token on).

Every answer is streamed: the overall deadline is checked between chunks (a server that drips its
answer one byte at a time cannot hold a thread past it), every socket read waits at most until the
deadline, and the bodies of one hook call may total at most `max_bytes` (`CDS_FHIR_MAX_BYTES`), so
a huge answer is abandoned before it is parsed. An abandoned answer's connection is closed, never
returned to the pool. When the deadline passes, `cancel()` also shuts the socket of every query
still waiting for its status line and headers (which a server can drip too): nothing of a hook
call's queries outlives it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

try:
    import orjson
except ImportError:  # optional: the standard parser gives the same answers, slower
    orjson = None  # type: ignore[assignment]
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import requote_uri
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_JSON_TYPES = ("application/fhir+json", "application/json")
_CHUNK = 64 * 1024  # bytes per read: the deadline and the byte cap are checked between chunks
DEFAULT_MAX_BYTES = 20 * 1024 * 1024


_current = threading.local()  # the FhirClient whose query this thread is running, if any


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        with _watched(self):
            return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        with _watched(self):
            return super().getresponse(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


@contextlib.contextmanager
def _watched(conn: HTTPConnection) -> Iterator[None]:
    """While a query waits for the status line and headers, its client may shut the socket: the
    per-read timeout cannot end a wait for headers that arrive one byte at a time."""
    client = getattr(_current, "client", None)
    if client is None:
        yield
        return
    sent = getattr(_current, "on_sent", None)
    if sent is not None:
        sent()  # the request is on the wire: a query held back until then may start now
    client._waiting_add(conn)
    try:
        yield
    finally:
        client._waiting_discard(conn)


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


def _shared_session() -> requests.Session:
    """One connection pool per process: keep-alive (and TLS sessions) to the EHR across calls.

    Cookies are refused, so nothing one call's server sets can reach another call; the bearer
    token is a per-request header, never session state.
    """
    session = requests.Session()
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    adapter = _Adapter(pool_connections=8, pool_maxsize=32, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


SESSION = _shared_session()
_session_pid = os.getpid()
_session_lock = threading.Lock()
# Per origin (scheme, host, port): the proxies / CA bundle the environment sets for it (what
# `requests` would look up on every call: about a third of its cost per query), per process.
_ORIGIN_SETTINGS_MAX = 256
_origin_settings: dict[tuple[str, str, int], dict[str, Any]] = {}


def session() -> requests.Session:
    """This process's session. A worker forked from a process that already made calls gets a
    session of its own (sharing the parent's sockets would mix two processes' answers)."""
    global SESSION, _session_pid  # noqa: PLW0603 - one per process, replaced only after a fork
    if _session_pid != os.getpid():
        with _session_lock:
            if _session_pid != os.getpid():
                SESSION = _shared_session()
                _origin_settings.clear()
                _session_pid = os.getpid()
    return SESSION


def _send(url: str, headers: dict[str, str], timeout: tuple[float, float]) -> requests.Response:
    """GET `url` through the session's adapter, streamed, no redirects: what `SESSION.get` does,
    without its per-call work this client has no use for (cookies are refused anyway, the URL is
    ours and checked against the allowlist; the environment's settings are looked up once per
    origin). The URL is quoted exactly as `requests` quotes it."""
    current = session()
    origin = _origin(url)
    cached = _origin_settings.get(origin) if origin else None
    if cached is None:
        scheme, host, port = origin or ("https", "", 0)
        merged = current.merge_environment_settings(f"{scheme}://{host}:{port}/", {}, True, None, None)
        cached = dict(merged)
        if len(_origin_settings) >= _ORIGIN_SETTINGS_MAX:
            _origin_settings.clear()
        if origin:
            _origin_settings[origin] = cached
    settings: dict[str, Any] = cached
    request = requests.PreparedRequest()
    request.method = "GET"
    request.url = requote_uri(url)
    merged_headers: dict[str, Any] = {**current.headers, **headers}  # User-Agent, gzip
    request.headers = CaseInsensitiveDict(merged_headers)
    request.body = None
    request.hooks = {"response": []}
    return current.get_adapter(request.url).send(
        request, stream=True, timeout=timeout, verify=settings["verify"], cert=settings["cert"],
        proxies=settings["proxies"],
    )


class FhirAccessError(Exception):
    """A query could not be answered; the message names the cause, never the token."""


class FhirNotFound(FhirAccessError):
    """A read returned 404/410: the resource does not exist."""


class FhirRejected(FhirAccessError):
    """The server refused the query itself (400, 413, 414, 422, or an OperationOutcome instead of a
    Bundle): asking the same thing again will not help, asking it another way may."""


REJECTED_STATUSES = frozenset({400, 413, 414, 422})


class FhirTooLarge(FhirAccessError):
    """The answers of this hook call went over `CDS_FHIR_MAX_BYTES`: this one was abandoned unparsed."""


@dataclass(frozen=True)
class AllowedHost:
    host: str
    port: int | None  # None: any port
    http_ok: bool  # listed as "http://host": plain http allowed (development)


def parse_allowed_hosts(entries: Iterable[str]) -> tuple[AllowedHost, ...]:
    hosts = []
    for entry in entries:
        raw = entry.strip().lower()
        http_ok = raw.startswith("http://")
        if http_ok or raw.startswith("https://"):
            raw = raw.split("://", 1)[1]
        raw = raw.rstrip("/")
        host, _, port = raw.rpartition(":") if raw.count(":") == 1 else (raw, "", "")
        if not port.isdigit():
            host, port = raw, ""
        if host:
            hosts.append(AllowedHost(host=host, port=int(port) if port else None, http_ok=http_ok))
    return tuple(hosts)


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def same_origin(url: str, base_url: str) -> bool:
    """Same scheme, host and port as the fhirServer: where a `next` link may lead."""
    origin = _origin(url)
    return origin is not None and origin == _origin(base_url)


def is_allowed(url: str, allowed: Iterable[AllowedHost]) -> bool:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("https", "http") or not host or parts.username or parts.password:
        return False
    effective_port = port or (443 if scheme == "https" else 80)
    for rule in allowed:
        if rule.host != host or (rule.port is not None and rule.port != effective_port):
            continue
        if scheme == "https" or rule.http_ok:
            return True
    return False


@dataclass
class FhirClient:
    """One EHR FHIR server for the duration of one hook call."""

    base_url: str
    allowed: tuple[AllowedHost, ...]
    access_token: str | None = field(default=None, repr=False)
    connect_timeout: float = 1.5
    read_timeout: float = 4.0
    deadline: float = field(default_factory=lambda: time.monotonic() + 5.0)  # monotonic seconds
    page_cap: int = 10
    max_bytes: int = DEFAULT_MAX_BYTES  # response bodies of this hook call, all queries together
    calls: int = 0  # outbound requests made (for the log line)
    bytes_read: int = 0  # response body bytes held (abandoned answers are given back)
    # Bundle entries of Patients seen in any answer (fullUrl + resource), so the prefetch stage can
    # resolve `urn:uuid:` subjects that name the Patient's entry (cds_service.identity).
    patient_entries: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self._lock = threading.Lock()  # queries run in threads and share the byte budget
        self._cancelled = threading.Event()
        self._waiting: set[HTTPConnection] = set()  # connections waiting for status line + headers

    def cancel(self) -> None:
        """Stop every query: a transfer stops at its next chunk and closes its own connection, a
        query still waiting for headers has its socket shut under it; no new query starts."""
        with self._lock:
            self._cancelled.set()
            waiting = list(self._waiting)
        for conn in waiting:
            _shut(conn)

    def _waiting_add(self, conn: HTTPConnection) -> None:
        with self._lock:
            cancelled = self._cancelled.is_set()
            if not cancelled:
                self._waiting.add(conn)
        if cancelled:
            _shut(conn)

    def _waiting_discard(self, conn: HTTPConnection) -> None:
        with self._lock:
            self._waiting.discard(conn)

    @property
    def allowed_server(self) -> bool:
        return is_allowed(self.base_url + "/", self.allowed)

    def read(self, query: str, on_sent: Callable[[], None] | None = None) -> dict[str, Any]:
        """A single resource (`Patient/123`). Raises FhirNotFound on 404/410. `on_sent` is called
        once the request has been sent (before its answer is awaited)."""
        resource = self._get(f"{self.base_url}/{query}", on_sent)
        if resource.get("resourceType") == "OperationOutcome":
            raise FhirAccessError(f"{query.split('/')[0]} read answered with an OperationOutcome")
        return resource

    def search(self, query: str) -> tuple[list[dict[str, Any]], bool]:
        """All entries of a search, following `next` links. Returns (resources, complete)."""
        return self.follow(self._get(f"{self.base_url}/{query}"))

    def follow(self, bundle: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        """Entries of `bundle` and its following pages; complete=False when the page cap stopped us."""
        if bundle.get("resourceType") == "OperationOutcome":
            raise FhirRejected("search answered with an OperationOutcome, not a Bundle")
        if bundle.get("resourceType") != "Bundle":
            raise FhirAccessError(f"search answered with {bundle.get('resourceType')!r}, not a Bundle")
        resources, has_error = split_bundle(bundle)
        self._keep_patient_entries(bundle)
        pages = 1
        next_url = next_link(bundle)
        while next_url:
            if pages >= self.page_cap:
                return resources, False
            url = urljoin(self.base_url + "/", next_url)
            if not same_origin(url, self.base_url):
                # The token goes only to the fhirServer itself: a next page elsewhere is not read
                # (what came so far is kept; the key counts as incomplete).
                return resources, False
            page = self._get(url)
            if page.get("resourceType") != "Bundle":
                raise FhirAccessError("a next page was not a Bundle")
            page_resources, page_error = split_bundle(page)
            self._keep_patient_entries(page)
            resources.extend(page_resources)
            has_error = has_error or page_error
            pages += 1
            next_url = next_link(page)
        return resources, not has_error

    def _keep_patient_entries(self, bundle: dict[str, Any]) -> None:
        entries = bundle.get("entry")
        for entry in entries if isinstance(entries, list) else ():
            resource = entry.get("resource") if isinstance(entry, dict) else None
            is_patient = isinstance(resource, dict) and resource.get("resourceType") == "Patient"
            if is_patient and entry.get("fullUrl"):
                self.patient_entries.append(entry)  # list.append is atomic: queries run in threads

    def _get(self, url: str, on_sent: Callable[[], None] | None = None) -> dict[str, Any]:
        if not is_allowed(url, self.allowed):
            raise FhirAccessError("URL is not on an allowed FHIR host")
        remaining = self._remaining()
        headers = {"Accept": "application/fhir+json"}
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        timeout = (min(self.connect_timeout, remaining), min(self.read_timeout, remaining))
        with self._lock:
            self.calls += 1  # queries run in threads
        _current.client, _current.on_sent = self, on_sent
        try:
            # No redirects: a redirect could carry the bearer token to a host nobody allowed.
            # stream=True: the body is read below, chunk by chunk, under the deadline and the cap.
            response = _send(url, headers, timeout)
        except requests.Timeout as exc:
            raise FhirAccessError("FHIR server timed out") from exc
        except requests.RequestException as exc:
            if self._cancelled.is_set():
                raise FhirAccessError("deadline for FHIR queries passed") from exc
            raise FhirAccessError(f"FHIR server unreachable ({type(exc).__name__})") from exc
        finally:
            _current.client = _current.on_sent = None
        complete = False
        try:
            if response.status_code in (404, 410):
                raise FhirNotFound(f"FHIR server answered {response.status_code}")
            if response.status_code in REJECTED_STATUSES:
                raise FhirRejected(f"FHIR server answered {response.status_code}")
            if response.status_code != 200:
                raise FhirAccessError(f"FHIR server answered {response.status_code}")
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type and content_type not in _JSON_TYPES:
                raise FhirAccessError(f"FHIR server answered {content_type}, not FHIR JSON")
            body = self._read_body(response)
            complete = True
        finally:
            if complete:
                response.raw.release_conn()  # read to the end: the connection may be reused
            else:
                response.close()  # mid-answer or unread: close the socket, never pool it
        data = _parse(body)
        if not isinstance(data, dict):
            raise FhirAccessError("FHIR server answered JSON that is not a resource")
        return data

    def _remaining(self) -> float:
        """Seconds left before the deadline; raises when it passed or the call was cancelled."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or self._cancelled.is_set():
            raise FhirAccessError("deadline for FHIR queries passed")
        return remaining

    def _read_body(self, response: requests.Response) -> bytearray:
        """The whole body, read in chunks; raises past the deadline or over the byte budget."""
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit():
            self._reserve(int(declared))  # say no before reading a byte of an answer too big
            self._release(int(declared))
        raw = response.raw
        body = bytearray()
        try:
            while True:
                # The socket's timeout is per read: keep every read within the overall deadline.
                _set_read_timeout(raw, min(self.read_timeout, self._remaining()))
                chunk = raw.read1(_CHUNK)
                if not chunk:
                    return body
                self._reserve(len(chunk))
                body += chunk
        except FhirAccessError:
            self._abandon(body)
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # read timeout, reset, short body
            self._abandon(body)
            if isinstance(exc, (urllib3.exceptions.ReadTimeoutError, TimeoutError)):
                raise FhirAccessError("FHIR server timed out") from exc
            raise FhirAccessError(f"FHIR answer broken off ({type(exc).__name__})") from exc

    def _reserve(self, size: int) -> None:
        with self._lock:
            if self.bytes_read + size > self.max_bytes:
                raise FhirTooLarge(f"FHIR answers went over CDS_FHIR_MAX_BYTES ({self.max_bytes} bytes)")
            self.bytes_read += size

    def _abandon(self, body: bytearray) -> None:
        """Drop a partial body now and give its bytes back to the budget. Emptied in place: the
        exception's traceback (kept by the query's future) would otherwise hold it until the end."""
        self._release(len(body))
        body.clear()

    def _release(self, size: int) -> None:
        with self._lock:
            self.bytes_read -= size


def _parse(body: bytearray) -> Any:
    """Only ever a body within the cap. orjson where installed (several times faster; it refuses
    NaN/Infinity, overflow, lone surrogates and nesting beyond 1,024 by itself), else the
    standard parser with NaN/Infinity refused."""
    try:
        if orjson is not None:
            return orjson.loads(body)
        return json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise FhirAccessError("FHIR server answered invalid JSON") from exc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _shut(conn: HTTPConnection) -> None:
    """Shut a connection's socket from another thread: a read blocked on it returns at once."""
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed or never connected
            sock.shutdown(socket.SHUT_RDWR)


def _set_read_timeout(raw: Any, seconds: float) -> None:
    """Set the per-read timeout of the socket under a streamed urllib3 response, if there is one."""
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.01))


def split_bundle(bundle: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """(data resources, whether an error OperationOutcome came along) in one pass over the entries."""
    out = []
    has_error = False
    local_medications: dict[str, str] = {}  # Bundle-local fullUrl (urn:uuid:...) -> Medication/id
    entries = bundle.get("entry")
    for entry in entries if isinstance(entries, list) else ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        rtype = resource.get("resourceType")
        if rtype == "OperationOutcome":
            has_error = has_error or is_error_outcome(resource)
        elif isinstance(rtype, str):
            out.append(resource)
            full_url = entry.get("fullUrl")
            if rtype == "Medication" and isinstance(full_url, str) and full_url.startswith("urn:") \
                    and isinstance(resource.get("id"), str):
                local_medications[full_url] = f"Medication/{resource['id']}"
    if local_medications:
        out = [_with_local_medication(r, local_medications) for r in out]
    return out, has_error


def _with_local_medication(resource: dict[str, Any], local: Mapping[str, str]) -> dict[str, Any]:
    """`medicationReference` to another entry's `urn:uuid:` fullUrl, as `Medication/id` (what a
    FHIR server does on a transaction): the facts stage then finds the Medication by type and id.
    Only this one element is rewritten, on a copy; everything else is left as sent."""
    ref = resource.get("medicationReference")
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return resource
    target = local.get(ref["reference"])
    if target is None:
        return resource
    return {**resource, "medicationReference": {**ref, "reference": target}}


def bundle_resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The data resources of a searchset Bundle: OperationOutcome entries are left out."""
    return split_bundle(bundle)[0]


def is_error_outcome(resource: dict[str, Any]) -> bool:
    if resource.get("resourceType") != "OperationOutcome":
        return False
    issues = resource.get("issue")
    if not isinstance(issues, list) or not issues:
        return True  # an outcome with no issues still says the query did not succeed
    return any(isinstance(i, dict) and i.get("severity") in ("error", "fatal") for i in issues)


def next_link(bundle: dict[str, Any]) -> str | None:
    links = bundle.get("link")
    for link in links if isinstance(links, list) else ():
        url = link.get("url") if isinstance(link, dict) and link.get("relation") == "next" else None
        if isinstance(url, str):
            return url
    return None

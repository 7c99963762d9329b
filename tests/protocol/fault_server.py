"""A FHIR server that misbehaves on purpose: a real HTTP server on loopback, in a thread.

The first path segment picks the fault, so one server serves every mode: the hook's fhirServer is
`<base_url>/<mode>`. The Patient read answers normally (except in `patient404`), so the service
gets past the 412 and the fault hits the searches:

  ok          empty searchsets
  slow        searches answer after SLOW_S seconds (headers included)
  drip        searches send their headers, then one body byte every DRIP_INTERVAL_S seconds
  driphead    searches send even their status line and headers one byte at a time
  huge        searches stream HUGE_BYTES of valid JSON, generated lazily, with no Content-Length
  garbage     searches answer 200 FHIR JSON that is not JSON (the Observation search: nested 50,000 deep)
  patient404  the Patient read answers 404 with an OperationOutcome
  others      searches answer resources of another patient only
  paging      every page links to a next page, forever
  serial      one query at a time, in arrival order (a server whose searches queue): each search
              takes SERIAL_S, the Patient read none
  latency     every query (the Patient read too) takes LATENCY_S; each search has PAGES pages
  refusejoin  a `code=` list longer than JOIN_LIMIT codes is refused with 400 (shorter ones answer)
  iis404      the same refused with 404, as IIS does for a query string over its limit (404.15)
  elsewhere   searches answer one resource and a `next` link to `server.elsewhere` (another origin)

Every request is logged (`server.requests`: path, Authorization header, start and end times, and
its connection's place in the order the server accepted them), and the most queries in flight at
once is kept (`server.max_in_flight`). `server.requests` is in the order the handler threads got to
them, which the scheduler decides (under load a later connection's thread may run first); use
`server.in_arrival_order()` for the order the queries reached the server.

HTTP/1.0, one request per connection (the stdlib default): a connection the service leaves open is
then the service's doing, never an idle keep-alive. A handler stops as soon as the client hangs up,
so the server's own threads and sockets go away with the service's.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

MODES = ("ok", "slow", "drip", "driphead", "huge", "garbage", "patient404", "others", "paging", "serial",
         "latency", "refusejoin", "iis404", "elsewhere")
SERIAL_S = 0.5
LATENCY_S = 0.1  # 8 keys x 3 pages one after another: 2.4 s, past the tests' 1.5 s deadline
PAGES = 3
JOIN_LIMIT = 60  # more codes than any one template asks for, fewer than the joined query
SLOW_S = 10.0
DRIP_INTERVAL_S = 0.2
HUGE_BYTES = 60 * 1024 * 1024
OTHER_PATIENT = "someone-else"
_FHIR_JSON = "application/fhir+json"


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # a hook call opens ~8 connections at once

    def __init__(self, patient_id: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.patient_id = patient_id
        self.elsewhere = ""  # base URL the `elsewhere` mode's next links point to
        self.requests: list[Logged] = []
        self._accepted = 0  # connections accepted so far; each handler gets its connection's number
        self._arrival: dict[Any, int] = {}
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        # `serial` mode: one at a time in accept order. The turn passes over every connection in
        # that order, waiting only on one that is a `serial` query still to be answered.
        self._turn = threading.Condition()
        self._serving = 0  # arrival number whose turn it is
        self._released: set[int] = set()  # later arrival numbers that need no turn any more

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        # Runs in the serving thread, one connection after another in the kernel's accept order
        # (first come, first accepted), before the connection's handler thread exists.
        with self._lock:
            self._arrival[request] = self._accepted
            self._accepted += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            arrival = self._arrival.pop(request, None)  # a connection that never sent a request
        if arrival is not None:
            self.release_turn(arrival)
        super().shutdown_request(request)

    def in_arrival_order(self) -> list[Logged]:
        with self._lock:
            return sorted(self.requests, key=lambda r: r.arrival)

    def searches(self, mode: str) -> list[Logged]:
        return [r for r in self.requests if r.path.startswith(f"/{mode}/") and "?" in r.path]

    @contextlib.contextmanager
    def logged(self, connection: Any, path: str, authorization: str | None) -> Iterator[Logged]:
        entry = Logged(path, authorization, time.monotonic())
        with self._lock:
            entry.arrival = self._arrival.pop(connection, -1)
            self.requests.append(entry)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            yield entry
        finally:
            entry.end = time.monotonic()
            with self._lock:
                self._in_flight -= 1

    @contextlib.contextmanager
    def in_turn(self, arrival: int) -> Iterator[None]:
        with self._turn:
            self._turn.wait_for(lambda: self._serving >= arrival)
        try:
            yield
        finally:
            self.release_turn(arrival)

    def release_turn(self, arrival: int) -> None:
        with self._turn:
            if arrival >= self._serving:
                self._released.add(arrival)
            while self._serving in self._released:
                self._released.discard(self._serving)
                self._serving += 1
            self._turn.notify_all()

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, mode: str) -> str:
        assert mode in MODES, mode
        return f"{self.base_url}/{mode}"


@contextlib.contextmanager
def running(patient_id: str) -> Iterator[FaultServer]:
    server = FaultServer(patient_id)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="fault-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Logged:
    path: str
    authorization: str | None
    start: float
    end: float | None = None
    arrival: int = -1  # the connection's place in the server's accept order


class _Handler(BaseHTTPRequestHandler):
    server: FaultServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        parts = urlsplit(self.path)
        mode, _, rest = parts.path.strip("/").partition("/")
        rtype, _, rid = rest.partition("/")
        with self.server.logged(self.request, self.path, self.headers.get("Authorization")) as entry:
            if mode == "serial":
                with self.server.in_turn(entry.arrival):
                    self._answer(mode, rtype, rid, parts.query)
            else:
                self.server.release_turn(entry.arrival)
                self._answer(mode, rtype, rid, parts.query)

    def _answer(self, mode: str, rtype: str, rid: str, query: str) -> None:
        try:
            if mode == "latency":
                time.sleep(LATENCY_S)
            if mode not in MODES:
                self._json(404, _outcome("no such mode"))
            elif rid:
                self._read(mode, rtype, rid)
            else:
                self._search(mode, rtype, dict(parse_qsl(query)))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up: exactly what the service is supposed to do with us

    def _read(self, mode: str, rtype: str, rid: str) -> None:
        if rtype == "Patient" and rid == self.server.patient_id and mode != "patient404":
            patient = {"resourceType": "Patient", "id": rid, "gender": "male", "birthDate": "1950-01-01"}
            self._json(200, patient)
        else:
            self._json(404, _outcome(f"{rtype}/{rid} not found"))

    def _search(self, mode: str, rtype: str, query: dict[str, str]) -> None:
        pid = self.server.patient_id
        if mode == "slow":
            if self._client_gone(SLOW_S):
                return
        elif mode in ("drip", "driphead"):
            self._drip(headers_too=mode == "driphead")
            return
        elif mode == "huge":
            self._huge(rtype)
            return
        elif mode == "garbage":
            body = '{"a":' * 50_000 + "1" + "}" * 50_000 if rtype == "Observation" else "<html>not json{"
            self._send(200, body.encode())
            return
        elif mode == "others":
            self._json(200, _searchset([_resource(rtype, f"x{i}", OTHER_PATIENT) for i in range(3)]))
            return
        elif mode == "serial":
            if self._client_gone(SERIAL_S):  # the queue behind clears once the service hung up
                return
        elif mode == "latency":
            page = int(query.get("page", "1")) if query.get("page", "1").isdigit() else 1
            following = urlencode({**query, "page": str(page + 1)})
            next_url = f"{self.server.url(mode)}/{rtype}?{following}" if page < PAGES else None
            tag = f"{len(query.get('code', ''))}-{len(query.get('value-concept', ''))}-p{page}"
            self._json(200, _searchset(_answers(rtype, query, pid, tag), next_url))
            return
        elif mode in ("refusejoin", "iis404"):
            if len(query.get("code", "").split(",")) > JOIN_LIMIT:
                self._json(400 if mode == "refusejoin" else 404, _outcome("too many values in code"))
            else:
                self._json(200, _searchset(_answers(rtype, query, pid, "r")))
            return
        elif mode == "elsewhere":
            next_url = f"{self.server.elsewhere}/ok/{rtype}?patient={pid}&page=2"
            self._json(200, _searchset([_resource(rtype, f"{rtype}-e1", pid)], next_url))
            return
        elif mode == "paging":
            page = int(query.get("page", "1")) if query.get("page", "1").isdigit() else 1
            next_url = f"{self.server.url(mode)}/{rtype}?patient={pid}&page={page + 1}"
            self._json(200, _searchset([_resource(rtype, f"p{page}", pid)], next_url))
            return
        self._json(200, _searchset([]))

    def _drip(self, headers_too: bool) -> None:
        body = json.dumps(_searchset([])).encode() + b" " * 100_000
        if headers_too:
            head = f"HTTP/1.0 200 OK\r\nContent-Type: {_FHIR_JSON}\r\nX-Padding: {'x' * 50_000}\r\n"
            body = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        else:
            self._headers(200, len(body))
        for i in range(len(body)):
            self.wfile.write(body[i:i + 1])
            if self._client_gone(DRIP_INTERVAL_S):
                return

    def _huge(self, rtype: str) -> None:
        entry = json.dumps({"resource": _resource(rtype, "big", self.server.patient_id)}).encode() + b","
        block = entry * max(1, 64 * 1024 // len(entry))  # one block, written again and again: lazy
        self._headers(200, None)
        self.wfile.write(b'{"resourceType":"Bundle","type":"searchset","entry":[')
        for _ in range(HUGE_BYTES // len(block)):
            self.wfile.write(block)
        self.wfile.write(entry[:-1] + b"]}")

    def _client_gone(self, seconds: float) -> bool:
        """Wait up to `seconds`; True as soon as the client closed its end (readable at EOF)."""
        readable, _, _ = select.select([self.connection], [], [], seconds)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode())

    def _send(self, status: int, body: bytes) -> None:
        self._headers(status, len(body))
        self.wfile.write(body)

    def _headers(self, status: int, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", _FHIR_JSON)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()


def _outcome(message: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found",
                                                           "diagnostics": message}]}


def _searchset(resources: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset",
                              "entry": [{"resource": r} for r in resources]}
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def _answers(rtype: str, query: dict[str, str], patient_id: str, tag: str) -> list[dict[str, Any]]:
    """A search's answer: for a code-filtered search one Observation per asked code at either end
    of the list (ids unique per query and page), else one resource."""
    codes = query.get("code", "").split(",") if query.get("code") else []
    if not codes:
        return [_resource(rtype, f"{rtype}-{tag}", patient_id)]
    out = []
    for token in dict.fromkeys([codes[0], codes[-1]]):
        system, _, code = token.partition("|")
        resource = _resource(rtype, f"{rtype}-{tag}-{code}", patient_id)
        resource["code"] = {"coding": [{"system": system, "code": code}]}
        out.append(resource)
    return out


def _resource(rtype: str, rid: str, patient_id: str) -> dict[str, Any]:
    return {"resourceType": rtype, "id": rid, "subject": {"reference": f"Patient/{patient_id}"},
            "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "2857-1"}]}}


def main() -> None:  # pragma: no cover - manual use: `python -m tests.protocol.fault_server`
    with running("pat-1") as server:
        print(f"fault server on {server.base_url}; modes: {', '.join(MODES)}", flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()

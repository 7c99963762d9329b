"""A simulated FHIR R4 server for the fallback arms (issue 11 point 3): one patient's chart, served
the way a real server answers the service's templates.

- Loads a Synthea transaction Bundle as a server would (every `urn:uuid:` reference becomes
  `Type/id`), or a generated bench chart.
- Searches: `patient`/`subject`, `code` and `value-concept` (tokens `system|code`, `code` or
  `system|`, comma = OR, matched on any coding), `_include=<Type>:medication`, `_id`, `_count`
  (default page DEFAULT_PAGE_SIZE like HAPI FHIR, at most MAX_PAGE_SIZE like Medplum); other
  parameters are ignored, as lenient servers do. Pages are linked with opaque `next` URLs.
- Every query (each page, each read) answers after `delay_s`; with `slots` set, at most that many
  queries are worked on at once and the rest wait in arrival order (a server's database pool).
- Counts queries and the most in flight; every request must carry the expected bearer token.

Run alone: `python -m bench.fhir_sim --port 8092 --delay-ms 1000 [--synthea FILE]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

Resource = dict[str, Any]

DEFAULT_PAGE_SIZE = 20  # HAPI FHIR's default page size when a search has no _count
MAX_PAGE_SIZE = 1000  # Medplum's (and many servers') largest page
# Reference data beside the repository (../shared/data), not in it: absent elsewhere, the arm and its
# test fall back or skip.
SYNTHEA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea-r4"
SYNTHEA_PATIENT = "prostate-metastatic-a.json"  # long PSA series, metastatic prostate cancer


def load_transaction(path: Path) -> tuple[Resource, list[Resource]]:
    """(Patient, other resources) of a transaction Bundle, references resolved as a server does."""
    bundle = json.loads(path.read_text())
    by_full_url = {}
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") or {}
        if entry.get("fullUrl") and resource.get("id"):
            by_full_url[entry["fullUrl"]] = f"{resource['resourceType']}/{resource['id']}"
    resources = [_resolve(entry["resource"], by_full_url) for entry in bundle.get("entry") or []]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    return patient, [r for r in resources if r is not patient]


def _resolve(value: Any, refs: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        out = {k: _resolve(v, refs) for k, v in value.items() if k != "request"}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in refs:
            out["reference"] = refs[ref]
        return out
    if isinstance(value, list):
        return [_resolve(v, refs) for v in value]
    return value


def _codings(value: Any) -> list[tuple[str | None, str | None]]:
    concepts = value if isinstance(value, list) else [value]
    return [
        (c.get("system"), c.get("code"))
        for concept in concepts
        if isinstance(concept, dict)
        for c in concept.get("coding") or []
        if isinstance(c, dict)
    ]


def _token_match(codings: Iterable[tuple[str | None, str | None]], wanted: list[str]) -> bool:
    pairs = list(codings)
    for token in wanted:
        system, bar, code = token.partition("|")
        if not bar:
            system, code = None, token
        for s, c in pairs:
            if (system is None or s == system) and (not code or c == code):
                return True
    return False


_CODE_ELEMENT = {
    "Observation": "code", "Condition": "code", "Procedure": "code", "DiagnosticReport": "code",
    "MedicationRequest": "medicationCodeableConcept", "MedicationStatement": "medicationCodeableConcept",
    "MedicationAdministration": "medicationCodeableConcept",
}


class FhirSim(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a burst of concurrent connects must not overflow the backlog

    def __init__(
        self,
        patient: Resource,
        resources: list[Resource],
        *,
        delay_s: float,
        slots: int | None = None,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.patient = patient
        self.by_type: dict[str, list[Resource]] = {}
        for r in resources:
            self.by_type.setdefault(r["resourceType"], []).append(r)
        self.delay_s = delay_s
        self.token = token
        self.queries = 0
        self.max_in_flight = 0
        self.unauthorized = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._slots = slots
        self._turn = threading.Condition()
        self._tickets = self._busy = 0
        self._queue: list[int] = []

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def patient_id(self) -> str:
        return str(self.patient["id"])

    def count(self) -> int:
        return sum(len(v) for v in self.by_type.values())

    @contextlib.contextmanager
    def working(self) -> Any:
        """One query's time on the server: waits for a slot (arrival order), then holds it while the
        handler builds the answer and sleeps out the rest of `delay_s` (see `_Handler.do_GET`)."""
        with self._lock:
            self.queries += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self._slots:
                with self._turn:
                    ticket = self._tickets
                    self._tickets += 1
                    self._queue.append(ticket)
                    self._turn.wait_for(lambda: self._queue[0] == ticket and self._busy < (self._slots or 1))
                    self._queue.pop(0)
                    self._busy += 1
                    self._turn.notify_all()
            try:
                yield time.monotonic()  # the query is taken up: its `delay_s` starts
            finally:
                if self._slots:
                    with self._turn:
                        self._busy -= 1
                        self._turn.notify_all()
        finally:
            with self._lock:
                self._in_flight -= 1

    def search(self, rtype: str, params: list[tuple[str, str]]) -> list[Resource]:
        matches = list(self.by_type.get(rtype, []))
        includes: list[str] = []
        for name, value in params:
            wanted = value.split(",")
            if name in ("patient", "subject"):
                ids = {w.rpartition("/")[2] for w in wanted}
                matches = [r for r in matches if (r.get("subject") or r.get("patient") or {})
                           .get("reference", "").rpartition("/")[2] in ids]
            elif name == "_id":
                matches = [r for r in matches if r.get("id") in wanted]
            elif name == "code" and rtype in _CODE_ELEMENT:
                matches = [r for r in matches if _token_match(_codings(r.get(_CODE_ELEMENT[rtype])), wanted)]
            elif name == "value-concept" and rtype == "Observation":
                matches = [r for r in matches
                           if _token_match(_codings(r.get("valueCodeableConcept")), wanted)]
            elif name == "_include" and value.endswith(":medication"):
                includes.append(value)
        if includes:
            refs = {(r.get("medicationReference") or {}).get("reference") for r in matches}
            matches += [m for m in self.by_type.get("Medication", []) if f"Medication/{m['id']}" in refs]
        return matches


class _Handler(BaseHTTPRequestHandler):
    server: FhirSim
    protocol_version = "HTTP/1.1"  # keep-alive, as a real FHIR server offers
    disable_nagle_algorithm = True  # headers and body are two writes: no Nagle + delayed-ACK stall

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.server.token and self.headers.get("Authorization") != f"Bearer {self.server.token}":
            with self.server._lock:
                self.server.unauthorized += 1
            self._send(401, _outcome("security", "no or wrong bearer token"))
            return
        # The answer is built first and sent when `delay_s` has passed since the query was taken
        # up: each query takes `delay_s` in all, the simulator's own work included. (Building it
        # after the delay put up to ~18 ms of the bench process's CPU per hook call, the answers
        # built one at a time under its GIL, on top of the delay the arm is meant to measure.)
        with self.server.working() as started:
            status, data = self._answer()
            time.sleep(max(0.0, self.server.delay_s - (time.monotonic() - started)))
            self._write(status, data)

    def _answer(self) -> tuple[int, bytes]:
        parts = urlsplit(self.path)
        path = parts.path.strip("/").split("/")
        params = parse_qsl(parts.query, keep_blank_values=True)
        if len(path) == 2:
            rtype, rid = path
            found = self.server.patient if rtype == "Patient" and rid == self.server.patient_id else next(
                (r for r in self.server.by_type.get(rtype, []) if r.get("id") == rid), None)
            if found is None:
                return 404, _dumps(_outcome("not-found", f"{rtype}/{rid} is not known"))
            return 200, _dumps(found)
        rtype = path[0]
        paging = dict(p for p in params if p[0] in ("_count", "_offset"))
        filters = [p for p in params if p[0] not in ("_count", "_offset")]
        try:
            size = max(1, min(int(paging.get("_count", DEFAULT_PAGE_SIZE)), MAX_PAGE_SIZE))
            offset = max(0, int(paging.get("_offset", 0)))
        except ValueError:
            return 400, _dumps(_outcome("invalid", "_count and _offset must be integers"))
        matches = [self.server.patient] if rtype == "Patient" else self.server.search(rtype, filters)
        page = matches[offset: offset + size]
        bundle: Resource = {
            "resourceType": "Bundle", "type": "searchset", "total": len(matches),
            "entry": [{"fullUrl": f"{self.server.base_url}/{r['resourceType']}/{r['id']}", "resource": r,
                       "search": {"mode": "match" if r["resourceType"] == rtype else "include"}}
                      for r in page],
        }
        if offset + size < len(matches):
            query = urlencode([*filters, ("_count", str(size)), ("_offset", str(offset + size))])
            bundle["link"] = [{"relation": "next", "url": f"{self.server.base_url}/{rtype}?{query}"}]
        return 200, _dumps(bundle)

    def _send(self, status: int, body: object) -> None:
        self._write(status, _dumps(body))

    def _write(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _dumps(body: object) -> bytes:
    return json.dumps(body).encode()


def _outcome(code: str, text: str) -> Resource:
    issue = {"severity": "error", "code": code, "diagnostics": text}
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def start(server: FhirSim) -> FhirSim:
    threading.Thread(target=server.serve_forever, name="fhir-sim", daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8092)
    parser.add_argument("--delay-ms", type=float, default=1000.0)
    parser.add_argument("--slots", type=int, default=0, help="queries worked on at once (0: no limit)")
    parser.add_argument("--synthea", type=Path, default=SYNTHEA_DIR / SYNTHEA_PATIENT)
    args = parser.parse_args()
    patient, resources = load_transaction(args.synthea)
    sim = FhirSim(patient, resources, delay_s=args.delay_ms / 1000, slots=args.slots or None,
                  host=args.host, port=args.port)
    print(f"FHIR sim on {sim.base_url}: Patient/{sim.patient_id}, {sim.count()} resources, "
          f"{args.delay_ms:g} ms/query", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sim.serve_forever()


if __name__ == "__main__":
    main()

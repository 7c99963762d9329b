"""A local FHIR server stand-in for the fallback workload (no prefetch).

Answers reads and type searches from a generated chart (same filtering as the prefetch the bench
sends), sleeps a fixed delay per query to model a real EHR's FHIR latency, and pages results with
`next` links so the service's paging path is exercised. Every page is a query and pays the delay.

Run alone: `python -m bench.fhir_stub --port 8091 --resources 150`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

from bench.workloads import Chart, generate_chart, search, searchset

DEFAULT_PAGE_SIZE = 100  # used when the query has no _count (HAPI's default is 20; ours is kinder)
MAX_PAGE_SIZE = 1000


class FhirStub(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog is 5: a burst of concurrent connects (2 workers x 7 queries)
    # overflows it and the dropped SYN costs a 1 s retransmit, which is the stub's fault, not the service's
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        chart: Chart,
        delay_s: float = 0.05,
        default_page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        super().__init__(address, _Handler)
        self.chart = chart
        self.delay_s = delay_s
        self.default_page_size = default_page_size
        self.queries = 0  # counted for the report: how many queries the service made
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def count_query(self) -> None:
        with self._lock:
            self.queries += 1


class _Handler(BaseHTTPRequestHandler):
    server: FhirStub
    protocol_version = "HTTP/1.1"  # keep-alive, as a real FHIR server offers
    # headers and body go out as two writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass  # one line per query would swamp the bench output

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self.server.count_query()
        time.sleep(self.server.delay_s)
        parts = urlsplit(self.path)
        path = parts.path.strip("/")
        if path == "metadata":
            self._send(
                200,
                {
                    "resourceType": "CapabilityStatement",
                    "status": "active",
                    "kind": "instance",
                    "fhirVersion": "4.0.1",
                    "format": ["json"],
                },
            )
            return
        params = parse_qsl(parts.query, keep_blank_values=True)
        paging = {k: v for k, v in params if k in ("_count", "_offset")}
        filters = [(k, v) for k, v in params if k not in ("_count", "_offset", "_sort", "_total")]
        kind, result = search(self.server.chart, path + ("?" + urlencode(filters) if filters else ""))
        if kind == "read":
            if result is None:
                self._send(404, _outcome("not-found", f"{path} is not known"))
            else:
                self._send(200, result)
            return
        matches = result if isinstance(result, list) else []
        try:
            size = min(int(paging.get("_count", self.server.default_page_size)), MAX_PAGE_SIZE)
            offset = max(0, int(paging.get("_offset", 0)))
        except ValueError:
            self._send(400, _outcome("invalid", "_count and _offset must be integers"))
            return
        size = max(1, size)
        page = matches[offset : offset + size]
        next_url = None
        if offset + size < len(matches):
            query = urlencode([*filters, ("_count", str(size)), ("_offset", str(offset + size))])
            next_url = f"{self.server.base_url}/{path}?{query}"
        self._send(200, searchset(page, base=self.server.base_url, total=len(matches), next_url=next_url))

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _outcome(code: str, text: str) -> dict[str, object]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }


def start(
    chart: Chart,
    host: str = "127.0.0.1",
    port: int = 0,
    delay_s: float = 0.05,
    default_page_size: int = DEFAULT_PAGE_SIZE,
) -> FhirStub:
    """Serve `chart` in a background thread; `port=0` picks a free port (see `.base_url`)."""
    stub = FhirStub((host, port), chart, delay_s=delay_s, default_page_size=default_page_size)
    threading.Thread(target=stub.serve_forever, name="fhir-stub", daemon=True).start()
    return stub


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--resources", type=int, default=150)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE)
    args = parser.parse_args()
    stub = FhirStub(
        (args.host, args.port),
        generate_chart(args.resources),
        delay_s=args.delay_ms / 1000,
        default_page_size=args.page_size,
    )
    print(
        f"FHIR stub on {stub.base_url} ({args.resources} resources, {args.delay_ms:g} ms/query)", flush=True
    )
    with contextlib.suppress(KeyboardInterrupt):
        stub.serve_forever()


if __name__ == "__main__":
    main()

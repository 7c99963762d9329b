"""The load generator's bounds and accounting, against a tiny local server (counts, never timings)."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import loadgen


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    status = 200
    seen: list[bytes] = []

    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_POST(self):  # noqa: N802
        self.seen.append(self.rfile.read(int(self.headers["Content-Length"])))
        body = b'{"cards": []}'
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    def start(status):
        handler = type("H", (_Handler,), {"status": status})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/cds-services/x"

    started = []
    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def test_request_budget_is_shared_by_all_clients(server):
    result = loadgen.run(server(200), b"{}", concurrency=3, requests=25, duration_s=60, warmup=2)
    assert len(result["latencies_ms"]) == 25  # warm-up requests are not counted
    assert result["statuses"] == {"200": 25}
    assert result["errors"] == 0
    assert all(latency > 0 for latency in result["latencies_ms"])


def test_non_2xx_answers_are_errors_not_latencies(server):
    result = loadgen.run(server(500), b"{}", concurrency=1, requests=5, duration_s=60, warmup=0)
    assert result["latencies_ms"] == []
    assert result["errors"] == 5 and result["statuses"] == {"500": 5}


def test_unreachable_server_counts_transport_errors():
    result = loadgen.run(
        "http://127.0.0.1:9/cds-services/x", b"{}", concurrency=1, requests=3, duration_s=60, warmup=0
    )
    assert result["errors"] == 3 and result["latencies_ms"] == []
    assert sum(result["statuses"].values()) == 3


def test_distinct_bodies_are_each_measured_once_and_warmups_use_the_last(server):
    _Handler.seen = []
    bodies = [f'{{"n": {i}}}'.encode() for i in range(6)]
    result = loadgen.run(server(200), bodies, concurrency=2, requests=50, duration_s=60, warmup=2)
    assert len(result["latencies_ms"]) == 5  # capped: no measured body is sent twice
    warmups = [b for b in _Handler.seen if b == bodies[-1]]
    measured = [b for b in _Handler.seen if b != bodies[-1]]
    assert len(warmups) == 4
    assert sorted(measured) == sorted(bodies[:-1])


def test_cycle_sends_every_body_round_robin_with_repeats(server):
    url = server(200)
    handler = _Handler
    handler.seen.clear()
    bodies = [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    result = loadgen.run(url, bodies, concurrency=1, requests=7, duration_s=60, warmup=1, cycle=True)
    assert result["statuses"] == {"200": 7}  # the budget is not capped at the number of bodies
    warm, measured = handler.seen[:3], handler.seen[3:]
    assert sorted(warm) == sorted(bodies)  # a mix warms up on each of its bodies
    assert set(measured) == set(bodies) and len(measured) == 7

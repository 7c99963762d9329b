"""Making both gunicorn sync workers serve a call, whatever the scheduler does.

Which worker accepts a connection is up to the kernel and the scheduler: under load one worker may
take every call. A call whose head is not finished keeps the sync worker that accepted it busy
(one request at a time, reading it); connections are accepted in arrival order, so the next call
sent meanwhile must be served by the other worker.
"""

from __future__ import annotations

import socket
from pathlib import Path

HELD_PATH = "/cds-services"  # discovery: needs no body and no token (no CDS_TRUSTED_CLIENTS)


def held_call(port: int) -> socket.socket:
    """A discovery call with its head not yet finished (`finish` ends it)."""
    held = socket.create_connection(("127.0.0.1", port), timeout=30)
    held.sendall(f"GET {HELD_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode())
    return held


def finish(held: socket.socket) -> int:
    """Send the blank line that ends the held call's head; its status code."""
    with held:
        held.sendall(b"\r\n")
        answer = b""
        while chunk := held.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def served_per_worker(prom_dir: Path, name: str, labels: dict[str, str]) -> dict[str, float]:
    """A counter's value in each worker's own multiprocess sample file, by pid."""
    from prometheus_client.multiprocess import MultiProcessCollector

    out: dict[str, float] = {}
    for path in prom_dir.glob("counter_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
            for sample in metric.samples:
                if sample.name == name and sample.labels == labels:
                    out[pid] = out.get(pid, 0.0) + sample.value
    return out

"""`cds-service fhir-serve FILE`: one patient's Bundle served as a read-only FHIR R4 server.

Lets a newcomer try the path an EHR takes when it sends no prefetch (the service then reads the
chart from `fhirServer`) without an EHR: `cds-service replay FILE --no-prefetch --fhir-server URL`.
Reads and searches are answered by the same evaluator replay uses to fill prefetch
(cds_service.bundle_search), so both paths see the same data. Development only: it binds to
loopback by default, needs no token and ignores any it is sent.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from flask import Flask, Response, request

from cds_service.bundle_search import BundleStore

FHIR_JSON = "application/fhir+json"


def make_app(store: BundleStore) -> Flask:
    app = Flask("cds_service.fhir_serve")

    @app.get("/fhir/<path:path>")
    def fhir(path: str) -> Response:
        # Answered for the URL as called, so `next` links point back at this server.
        result = store.get(request.url)
        return Response(json.dumps(result.body), status=result.status, mimetype=FHIR_JSON)

    @app.get("/fhir/metadata")
    def metadata() -> Response:
        statement = {
            "resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
            "fhirVersion": "4.0.1", "format": ["json"], "date": date.today().isoformat(),
            "software": {"name": "cds-service fhir-serve (read-only, one Bundle)"},
        }
        return Response(json.dumps(statement), mimetype=FHIR_JSON)

    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cds-service fhir-serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="patient Bundle (fixtures/patients/*.json) or case file")
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback only)")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    from werkzeug.serving import run_simple

    from cds_service import replay

    try:
        loaded = replay.load(Path(args.input))
    except replay.ReplayError as exc:
        print(f"fhir-serve: {exc}", file=sys.stderr)
        return 2
    if not _is_loopback(args.host):
        print(f"fhir-serve: warning: serving a patient chart without authentication on {args.host}",
              file=sys.stderr)
    base = f"http://{args.host}:{args.port}/fhir"
    store = BundleStore(loaded.bundle, base_url=base)
    print(f"fhir-serve: {len(store.resources)} resources of Patient/{loaded.patient_id} at {base}\n"
          f"  try: cds-service replay {args.input} --no-prefetch --fhir-server {base}"
          + ("" if loaded.orders else " --order 78306")
          + f"\n  (a separately running service needs CDS_FHIR_ALLOWED_HOSTS=http://{args.host}:{args.port})",
          file=sys.stderr)
    run_simple(args.host, args.port, make_app(store), threaded=True)
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"

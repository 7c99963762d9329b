"""Profile the service in-process (Flask test client) under pyinstrument, to find hot spots.

Runs the typical and large workloads (same generated requests as `make bench`) `--iterations`
times each after a warm-up, and writes one text report per workload (default `var/profile/`).
No gunicorn and no sockets: what shows is the service's own Python time, request parsing included.

`python -m bench.profile [--iterations 50] [--workloads typical large fallback] [--out var/profile]`
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import fhir_stub
from bench.workloads import AS_OF, SIZES, build_request, generate_chart, pick_service

ROOT = Path(__file__).resolve().parents[1]


def _create_app(feedback_db: Path, allowed_hosts: tuple[str, ...]) -> Any:
    try:
        from cds_service.app import create_app
        from cds_service.config import Settings
    except ImportError as exc:  # the protocol layer has not landed in this checkout
        sys.exit(f"cannot profile: {exc}")
    return create_app(Settings(today=AS_OF, feedback_db=feedback_db, fhir_allowed_hosts=allowed_hosts))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--workloads", nargs="+", default=["typical", "large"], choices=[*SIZES, "fallback"])
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "profile")
    parser.add_argument("--html", action="store_true", help="also write pyinstrument's HTML report")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="forget cached validation verdicts and text readings before every call (a chart seen for the "
        "first time)",
    )
    args = parser.parse_args(argv)
    from pyinstrument import Profiler

    from cds_service.facts.selection import clear_verdicts
    from cds_service.facts.text import clear_cache as clear_text_cache

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cds-profile-") as tmp:
        stub = fhir_stub.start(generate_chart(SIZES["typical"]))
        try:
            app = _create_app(Path(tmp) / "feedback.sqlite3", (stub.base_url,))
            client = app.test_client()
            discovery = client.get("/cds-services")
            if discovery.status_code != 200:
                sys.exit(f"GET /cds-services answered {discovery.status_code}")
            service = pick_service(discovery.get_json())
            path = f"/cds-services/{service['id']}"
            for name in args.workloads:
                fallback = name == "fallback"
                chart = generate_chart(SIZES["typical" if fallback else name])
                body = json.dumps(
                    build_request(
                        service, chart, prefetch=not fallback, fhir_server=stub.base_url if fallback else None
                    )
                )
                for _ in range(3):  # warm-up: first-call imports and caches are not the steady state
                    warm = client.post(path, data=body, content_type="application/json")
                if warm.status_code != 200:
                    answer = warm.get_data(as_text=True)[:500]
                    sys.exit(f"{name}: the service answered {warm.status_code}: {answer}")
                profiler = Profiler(interval=0.0005)
                started = time.perf_counter()
                profiler.start()
                for _ in range(args.iterations):
                    if args.cold:
                        clear_verdicts()
                        clear_text_cache()
                    client.post(path, data=body, content_type="application/json")
                profiler.stop()
                per_call_ms = (time.perf_counter() - started) * 1000 / args.iterations
                report = args.out / f"{name}{'-cold' if args.cold else ''}.txt"
                report.write_text(profiler.output_text(unicode=True, color=False, show_all=False))
                if args.html:
                    (args.out / f"{name}.html").write_text(profiler.output_html())
                print(
                    f"{name}: {args.iterations} calls, {per_call_ms:.2f} ms/call under the profiler "
                    f"({len(body) / 1024:.0f} KiB body) -> {report}"
                )
        finally:
            stub.shutdown()
            stub.server_close()


if __name__ == "__main__":
    main()

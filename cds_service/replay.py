"""`cds-service replay`: send a fixture patient and draft orders through the service as an EHR would.

    cds-service replay fixtures/patients/<p>.json --order 78306 [--order orders/x.json]
        [--hook order-select|order-sign] [--url http://host:port]
        [--no-prefetch --fhir-server URL] [--json]
    cds-service replay fixtures/cases/<case>.json [--hook ...]

It builds a real CDS Hooks request (new hookInstance, context.userId/patientId, draftOrders,
selections), fills prefetch by reading the service's own discovery document and evaluating each
template against the bundle (`bundle_search`), or leaves prefetch out so the service must use
`fhirServer`. The request goes to a running service (`--url`) or to an in-process app whose
"today" is the bundle's timestamp date, so fixtures replay the same way every day.
Exit codes: 0 answered, 1 the service answered with an error, 2 bad input or unreachable service.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import logging
import os
import re
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cds_service import terminal
from cds_service.bundle_search import BundleStore

SERVICE_IDS = {"order-select": "imaging-appropriateness", "order-sign": "imaging-appropriateness-sign"}
CPT = "http://www.ama-assn.org/go/cpt"
PAMA_RATING_URL = "http://fhir.org/argonaut/StructureDefinition/pama-rating"
TIMEOUT = (5.0, 30.0)  # connect, read (seconds)
USER_ID = "Practitioner/replay-clinician"



@functools.cache
def catalog_codes(cards_dir: Path | None = None) -> dict[str, tuple[str, str, str]]:
    """Bare code -> (system, code, display) for every code of the procedure catalog.

    The catalog (cards/procedures.yaml, or CDS_CARDS_DIR's) is the one list of codes the service
    knows; replay accepts exactly those, displayed with the catalog's own study name (CPT
    descriptors are AMA-licensed and not stored). A bare code known in two systems is ambiguous
    and must be given as system|code.
    """
    from cds_service.knowledge import load_knowledge  # the knowledge base only when a code is used

    catalog = load_knowledge(cards_dir).catalog
    found: dict[str, list[tuple[str, str, str]]] = {}
    for proc in catalog.procedures.values():
        for c in proc.codes:
            found.setdefault(c.code, []).append((c.system, c.code, proc.display))
    return {code: hits[0] for code, hits in found.items() if len({h[0] for h in hits}) == 1}


def _cards_dir() -> Path | None:
    value = os.environ.get("CDS_CARDS_DIR", "").strip()
    return Path(value) if value else None


class ReplayError(Exception):
    """Input or transport problem: reported as one line on stderr, exit code 2."""


@dataclass
class Replay:
    """Everything needed to send one hook call."""

    bundle: dict[str, Any]
    orders: list[dict[str, Any]]
    hook: str = "order-select"
    selections: list[str] | None = None  # ServiceRequest ids; default all (order-select)
    expected: Mapping[str, Any] | None = None  # from a case file
    order_names: list[str] = field(default_factory=list)  # order file stems (case files)
    today: date | None = None  # --today; None: the bundle's timestamp date

    @property
    def patient_id(self) -> str:
        return str(patient_of(self.bundle)["id"])

    @property
    def as_of(self) -> date:
        return self.today or as_of_date(self.bundle)


# --- loading --------------------------------------------------------------------------------------

def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise ReplayError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReplayError(f"{what} is not JSON: {path} ({exc.__class__.__name__})") from None


def patient_of(bundle: Mapping[str, Any]) -> Mapping[str, Any]:
    for entry in bundle.get("entry") or []:
        res = entry.get("resource") if isinstance(entry, Mapping) else None
        if isinstance(res, Mapping) and res.get("resourceType") == "Patient" and res.get("id"):
            return res
    raise ReplayError("the bundle has no Patient resource with an id")


def as_of_date(bundle: Mapping[str, Any]) -> date:
    stamp = bundle.get("timestamp")
    if isinstance(stamp, str):
        try:
            return date.fromisoformat(stamp[:10])
        except ValueError:
            pass
    return date.today()


def load_bundle(path: Path) -> dict[str, Any]:
    data = _read_json(path, "patient file")
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise ReplayError(f"not a FHIR Bundle: {path}")
    patient_of(data)
    return data


def order_from_arg(value: str, index: int = 1) -> dict[str, Any]:
    """A draft ServiceRequest from a file path, a code of the procedure catalog, or `system|code`."""
    path = Path(value)
    if path.suffix == ".json" or path.exists():
        data = _read_json(path, "order file")
        if not isinstance(data, dict) or data.get("resourceType") != "ServiceRequest":
            raise ReplayError(f"not a ServiceRequest: {path}")
        return data
    if "|" in value:
        system, code = value.split("|", 1)
        if not system or not code:
            raise ReplayError(f"order code must be system|code: {value}")
        coding = {"system": system, "code": code}
    elif re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,19}", value) and any(ch.isdigit() for ch in value):
        known = catalog_codes(_cards_dir())
        if value not in known:
            cpt = ", ".join(sorted(c for c, (system, _, _) in known.items() if system == CPT))
            raise ReplayError(f"unknown order code: {value} (codes of the procedure catalog, e.g. CPT {cpt}; "
                              "or give system|code or a ServiceRequest file)")
        system, code, display = known[value]
        coding = {"system": system, "code": code, "display": display}
    else:
        raise ReplayError(f"unknown order: {value} (give a catalog code, system|code or a ServiceRequest "
                          "file)")
    return {"resourceType": "ServiceRequest", "id": f"replay-order-{index}", "status": "draft",
            "intent": "order", "code": {"coding": [coding]}}


def load_case(path: Path) -> Replay:
    case = _read_json(path, "case file")
    if not isinstance(case, dict) or "patient" not in case or "orders" not in case:
        raise ReplayError(f"not a case file: {path}")
    root = path.resolve().parent.parent
    bundle = load_bundle(root / "patients" / f"{case['patient']}.json")
    orders = [order_from_arg(str(root / "orders" / f"{name}.json")) for name in case["orders"]]
    by_name = {name: o.get("id") for name, o in zip(case["orders"], orders, strict=True)}
    selections = [str(by_name[n]) for n in case.get("selections", [])] or None
    hooks = case.get("hooks") or ["order-select"]
    return Replay(bundle, orders, hooks[0], selections, case.get("expected"), list(case["orders"]))


def load(path: Path) -> Replay:
    data = _read_json(path, "input file")
    if isinstance(data, dict) and "expected" in data and "patient" in data:
        return load_case(path)
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise ReplayError(f"not a FHIR Bundle or case file: {path}")
    patient_of(data)
    return Replay(data, [])


# --- building the request -------------------------------------------------------------------------

# The subject fixture orders carry ("Patient/PATIENT"): replaced by the replayed patient.
ORDER_PATIENT_PLACEHOLDER = "Patient/PATIENT"


def prepare_orders(orders: Sequence[Mapping[str, Any]], patient_id: str) -> list[dict[str, Any]]:
    """Copies of the orders with this patient as subject and unique ids, as the EHR would send them."""
    out, seen = [], set()
    for i, order in enumerate(orders, start=1):
        sr = copy.deepcopy(dict(order))
        sr["subject"] = {"reference": f"Patient/{patient_id}"}
        for res in sr.get("contained") or ():  # e.g. a contained reason Condition of a fixture order
            subject = res.get("subject") if isinstance(res, dict) else None
            if isinstance(subject, dict) and subject.get("reference") == ORDER_PATIENT_PLACEHOLDER:
                res["subject"] = {"reference": f"Patient/{patient_id}"}
        oid = sr.get("id") or f"replay-order-{i}"
        while oid in seen:
            oid = f"{oid}-{i}"
        sr["id"] = oid
        seen.add(oid)
        out.append(sr)
    return out


def build_request(replay: Replay, fhir_server: str | None = None,
                  fhir_token: str | None = None) -> dict[str, Any]:
    orders = prepare_orders(replay.orders, replay.patient_id)
    context: dict[str, Any] = {
        "userId": USER_ID,
        "patientId": replay.patient_id,
        "draftOrders": {"resourceType": "Bundle", "type": "collection",
                        "entry": [{"resource": o} for o in orders]},
    }
    if replay.hook == "order-select":
        ids = replay.selections or [o["id"] for o in orders]
        context["selections"] = [f"ServiceRequest/{i}" for i in ids]
    request: dict[str, Any] = {"hookInstance": str(uuid.uuid4()), "hook": replay.hook, "context": context}
    if fhir_server:
        request["fhirServer"] = fhir_server.rstrip("/")
        if fhir_token:
            request["fhirAuthorization"] = {"access_token": fhir_token, "token_type": "Bearer",
                                            "expires_in": 300, "scope": "patient/*.read",
                                            "subject": "cds-service"}
    return request


_TOKEN = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")


def fill_template(template: str, request: Mapping[str, Any]) -> str | None:
    """Substitute CDS Hooks 2.0 prefetch tokens; None when a token has no value (the EHR omits the key)."""
    context = request.get("context") or {}
    user = str(context.get("userId") or "")
    values = {f"context.{k}": v for k, v in context.items() if isinstance(v, str)}
    if user.startswith("Practitioner/"):
        values["userPractitionerId"] = user.split("/", 1)[1]
    if user.startswith("PractitionerRole/"):
        values["userPractitionerRoleId"] = user.split("/", 1)[1]
    missing = [m for m in _TOKEN.findall(template) if m not in values]
    if missing:
        return None
    return _TOKEN.sub(lambda m: values[m.group(1)], template)


def fill_prefetch(request: dict[str, Any], templates: Mapping[str, str],
                  store: BundleStore) -> dict[str, Any]:
    """Evaluate every discovery template against the bundle, as an EHR fills prefetch."""
    prefetch: dict[str, Any] = {}
    for key, template in templates.items():
        url = fill_template(template, request)
        if url is None:
            continue
        result = store.get(url)
        prefetch[key] = result.body if result.status == 200 else None
    request["prefetch"] = prefetch
    return request


# --- transports ------------------------------------------------------------------------------------

class InProcess:
    """The service's Flask app, built here, called through its test client."""

    def __init__(self, as_of: date, fhir_server: str | None = None, settings: Any = None,
                 quiet: bool = False):
        if quiet:  # the app's start-up warnings (open mode, no FHIR hosts) are noise in a terminal replay
            logging.getLogger("cds_service").setLevel(logging.ERROR)
        try:
            from cds_service.app import create_app
            from cds_service.config import Settings
        except ModuleNotFoundError as exc:  # the protocol layer is not in this checkout
            if exc.name not in {"cds_service.app", "cds_service.config"}:
                raise  # a broken import inside the service is a bug, not a usage error
            raise ReplayError("in-process mode needs cds_service.app; use --url") from None
        if settings is None:
            settings = Settings.from_env()
        settings = _with(settings, today=as_of)
        if fhir_server:
            settings = _allow_host(settings, fhir_server)
        self.client = create_app(settings).test_client()

    def get(self, path: str) -> tuple[int, Any]:
        resp = self.client.get(path)
        return resp.status_code, resp.get_json(silent=True)

    def post(self, path: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        resp = self.client.post(path, json=body)
        return resp.status_code, resp.get_json(silent=True)


def _with(settings: Any, **changes: Any) -> Any:
    names = {f.name for f in dataclasses.fields(settings)}
    return dataclasses.replace(settings, **{k: v for k, v in changes.items() if k in names})


def _allow_host(settings: Any, fhir_server: str) -> Any:
    """Add the replay FHIR server's host[:port] to the allowlist of an in-process service.

    A plain-http server (`cds-service fhir-serve` on localhost) is allowed as `http://host:port`:
    the allowlist takes bare hosts as https only.
    """
    current = getattr(settings, "fhir_allowed_hosts", None)
    parts = urlsplit(fhir_server)
    host = parts.netloc if parts.scheme != "http" else f"http://{parts.netloc}"
    if current is None or not host:
        return settings
    if isinstance(current, str):
        items = [h for h in re.split(r"[,\s]+", current) if h]
        return _with(settings, fhir_allowed_hosts=",".join([*items, host]))
    if host in current:
        return settings
    return _with(settings, fhir_allowed_hosts=type(current)([*current, host]))


class Remote:
    """A running service reached over HTTP."""

    def __init__(self, base_url: str):
        import requests

        self.requests = requests
        self.base = base_url.rstrip("/")

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        try:
            resp = self.requests.request(method, self.base + path, json=body, timeout=TIMEOUT)
        except self.requests.RequestException as exc:
            raise ReplayError(f"cannot reach the service at {self.base} ({exc.__class__.__name__})") from None
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, None

    def get(self, path: str) -> tuple[int, Any]:
        return self._call("GET", path)

    def post(self, path: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        return self._call("POST", path, body)


def discovery_templates(transport: Any, service_id: str) -> Mapping[str, str]:
    status, body = transport.get("/cds-services")
    if status != 200 or not isinstance(body, Mapping):
        raise ReplayError(f"discovery GET /cds-services answered {status}")
    for service in body.get("services") or []:
        if isinstance(service, Mapping) and service.get("id") == service_id:
            return service.get("prefetch") or {}
    raise ReplayError(f"the service does not offer {service_id}")


def run(replay: Replay, transport: Any, prefetch: bool = True, fhir_server: str | None = None,
        fhir_token: str | None = None) -> tuple[int, Any, dict[str, Any]]:
    """Send one hook call; returns (HTTP status, response body, the request sent)."""
    service_id = SERVICE_IDS[replay.hook]
    request = build_request(replay, fhir_server, fhir_token)
    if prefetch:
        fill_prefetch(request, discovery_templates(transport, service_id), BundleStore(replay.bundle))
    status, body = transport.post(f"/cds-services/{service_id}", request)
    return status, body, request


# --- output ------------------------------------------------------------------------------------------

def _coding_text(resource: Mapping[str, Any]) -> str:
    code = resource.get("code") or {}
    parts = [f"{c.get('code')} {c.get('display') or ''}".strip() for c in code.get("coding") or []
             if isinstance(c, Mapping) and c.get("code")]
    return "; ".join(parts) or code.get("text") or "(no code)"


def ratings(body: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """ServiceRequest id -> {"pama": code, ...extension values} from the update systemActions."""
    out: dict[str, dict[str, str]] = {}
    for action in body.get("systemActions") or []:
        res = action.get("resource") if isinstance(action, Mapping) else None
        if not isinstance(res, Mapping) or res.get("resourceType") != "ServiceRequest":
            continue
        info: dict[str, str] = {}
        for ext in _walk_extensions(res.get("extension") or []):
            url = str(ext.get("url", ""))
            value = _ext_value(ext)
            if value is None:
                continue
            if url == PAMA_RATING_URL or url.endswith("/pama-rating"):
                info["pama"] = value
            else:
                info[url.rstrip("/").rsplit("/", 1)[-1]] = value
        out[str(res.get("id"))] = info
    return out


def _walk_extensions(exts: Sequence[Any]) -> list[Mapping[str, Any]]:
    found: list[Mapping[str, Any]] = []
    for ext in exts:
        if isinstance(ext, Mapping):
            found.append(ext)
            found.extend(_walk_extensions(ext.get("extension") or []))
    return found


def _ext_value(ext: Mapping[str, Any]) -> str | None:
    for key, value in ext.items():
        if not key.startswith("value"):
            continue
        if isinstance(value, (str, int, float)):
            return str(value)
        if isinstance(value, Mapping):
            codings = value.get("coding") or []
            if codings and isinstance(codings[0], Mapping):
                return str(codings[0].get("code"))
            if "reference" in value:
                return str(value["reference"])
    return None


def render_text(
    replay: Replay, request: Mapping[str, Any], status: int, body: Any, colour: bool = False
) -> str:
    lines = [f"Patient {replay.patient_id} as of {replay.as_of.isoformat()} | hook {replay.hook} | "
             f"hookInstance {request['hookInstance']}"]
    orders = [e["resource"] for e in request["context"]["draftOrders"]["entry"]]
    for o in orders:
        lines.append(f"  order ServiceRequest/{o['id']}: {_coding_text(o)}")
    if status != 200 or not isinstance(body, Mapping):
        lines.append(f"Service answered HTTP {status}: {_outcome_text(body)}")
        return "\n".join(lines)
    cards = body.get("cards") or []
    lines.append("")
    lines.append(f"{len(cards)} card(s)" if cards else "No cards.")
    for card in cards:
        tag = terminal.indicator(str(card.get("indicator", "?")).upper(), colour)
        lines.append(f"{tag} {terminal.plain(str(card.get('summary', '')))}")
        if card.get("detail"):
            lines.extend(terminal.detail_lines(str(card["detail"])))
        for s in card.get("suggestions") or []:
            star = " (recommended)" if s.get("isRecommended") else ""
            lines.append(f"    -> suggestion: {s.get('label')}{star}")
        for link in card.get("links") or []:
            lines.append(f"    link: {link.get('label')} <{link.get('url')}>")
        src = card.get("source") or {}
        if src.get("label"):
            lines.append(f"    source: {src['label']}")
    lines.append("")
    rated = ratings(body)
    for o in orders:
        info = rated.get(o["id"])
        if info is None:
            lines.append(f"Rating ServiceRequest/{o['id']}: none")
        else:
            extra = ", ".join(f"{k}={v}" for k, v in info.items() if k != "pama")
            lines.append(f"Rating ServiceRequest/{o['id']}: PAMA {info.get('pama', '?')}"
                         + (f" ({extra})" if extra else ""))
    return "\n".join(lines)


def _outcome_text(body: Any) -> str:
    if isinstance(body, Mapping):
        issues = body.get("issue") or []
        texts = [str(i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code"))
                 for i in issues if isinstance(i, Mapping)]
        if texts:
            return "; ".join(texts)
    return "no OperationOutcome"


# --- command line ------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cds-service replay", description=__doc__.split("\n\n")[0])
    p.add_argument("input", help="patient Bundle (fixtures/patients/*.json) or case (fixtures/cases/*.json)")
    p.add_argument("--order", action="append", default=[],
                   help="a code of the procedure catalog (e.g. CPT 78306), system|code, or ServiceRequest "
                   "JSON file (repeatable)")
    p.add_argument("--hook", choices=sorted(SERVICE_IDS),
                   help="default: order-select (or the case's first hook)")
    p.add_argument("--url", help="base URL of a running service, e.g. http://127.0.0.1:8080 "
                   "(default: in-process)")
    p.add_argument("--no-prefetch", action="store_true",
                   help="send no prefetch: the service must query fhirServer")
    p.add_argument("--fhir-server", help="fhirServer to send (required with --no-prefetch)")
    p.add_argument("--fhir-token", help="bearer token to send as fhirAuthorization (never logged)")
    p.add_argument("--json", action="store_true", help="print the raw response JSON")
    p.add_argument("--today", type=_iso_date, metavar="YYYY-MM-DD",
                   help="evaluate as of this date (default: the bundle's timestamp date)")
    p.add_argument("--print-request", action="store_true",
                   help="print the hook request (prefetch filled) instead of sending it: paste it into "
                        "curl or the CDS Hooks sandbox")
    return p


def _iso_date(raw: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {raw!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(argv) if argv is not None else None)
    try:
        if args.no_prefetch and not args.fhir_server:
            raise ReplayError("--no-prefetch needs --fhir-server URL (the service must fetch the data)")
        if args.fhir_server and urlsplit(args.fhir_server).scheme not in {"http", "https"}:
            raise ReplayError(f"--fhir-server must be an http(s) URL: {args.fhir_server}")
        replay = load(Path(args.input))
        if args.order:
            replay.orders = [order_from_arg(v, i) for i, v in enumerate(args.order, start=1)]
            replay.selections, replay.expected = None, None
        if not replay.orders:
            raise ReplayError("no draft order: give --order CODE|FILE (or replay a case file)")
        if args.hook:
            replay.hook = args.hook
        replay.today = args.today
        if args.url and replay.as_of != date.today():
            # A running service rates as of its own date: say so, or a 6-week-old therapy change
            # silently becomes 10 weeks old and the card changes or disappears.
            print(f"replay: note: {args.url} rates as of its own date, not {replay.as_of.isoformat()}; "
                  f"start it with CDS_TODAY={replay.as_of.isoformat()} to match", file=sys.stderr)
        if not args.url and sys.stderr.isatty():  # building the app takes seconds: say why it waits
            print("replay: loading the knowledge base...", file=sys.stderr, flush=True)
        transport = Remote(args.url) if args.url else InProcess(replay.as_of, args.fhir_server, quiet=True)
        if args.print_request:
            request = build_request(replay, args.fhir_server, args.fhir_token)
            if not args.no_prefetch:
                templates = discovery_templates(transport, SERVICE_IDS[replay.hook])
                fill_prefetch(request, templates, BundleStore(replay.bundle))
            print(json.dumps(request, indent=2))
            return 0
        status, body, request = run(replay, transport, prefetch=not args.no_prefetch,
                                    fhir_server=args.fhir_server, fhir_token=args.fhir_token)
    except ReplayError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        print(render_text(replay, request, status, body, colour=sys.stdout.isatty()))
    if status != 200:
        print(f"replay: the service answered HTTP {status}: {_outcome_text(body)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

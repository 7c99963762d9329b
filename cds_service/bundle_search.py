"""A small FHIR REST search evaluator over one Bundle.

It answers the read and search URLs an EHR would answer for the patient in a fixture bundle:
`Type/id`, and `Type?params` with the parameters CDS Hooks prefetch templates use (`patient`/
`subject` (matched with the service's own identity rule), `code` and `value-concept` as
`system|code` lists, `status`, `clinical-status`, `category`, `intent`, a date filter, `_count`,
`_sort`, `_id`, `_include`) with `next` links for paging. Replay uses it to fill
prefetch the way an EHR would; tests and the benchmark use it to serve a FHIR server from the
same bundle. Unknown parameters are ignored, as FHIR servers do in lenient mode (recorded in
`SearchResult.ignored`), so a template never fails for a parameter we do not model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from cds_service.identity import OWN, PatientIdentity, belongs

Resource = Mapping[str, Any]

# Per resource type: the element the `date` search parameter (and _sort=date) reads.
_DATE_PATHS: dict[str, tuple[str, ...]] = {
    "Observation": ("effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued"),
    "Condition": ("onsetDateTime", "onsetPeriod.start", "recordedDate"),
    "MedicationRequest": ("authoredOn",),
    "MedicationAdministration": ("effectiveDateTime", "effectivePeriod.start"),
    "MedicationStatement": ("effectiveDateTime", "effectivePeriod.start", "dateAsserted"),
    "Procedure": ("performedDateTime", "performedPeriod.start"),
    "DiagnosticReport": ("effectiveDateTime", "effectivePeriod.start", "issued"),
    "ImagingStudy": ("started",),
    "ServiceRequest": ("authoredOn",),
    "Encounter": ("period.start",),
}
_DATE_PARAMS = {"date", "authoredon", "onset-date", "recorded-date", "effective", "issued", "started"}
# Elements holding the coded "what" of each type, for the `code` parameter.
_CODE_PATHS: dict[str, tuple[str, ...]] = {
    "MedicationRequest": ("medicationCodeableConcept",),
    "MedicationAdministration": ("medicationCodeableConcept",),
    "MedicationStatement": ("medicationCodeableConcept",),
}
# `_include=Type:param`: the reference element each search parameter follows (FHIR R4 search
# parameter definitions). Included resources come after the matches, with search.mode "include".
_INCLUDE_PATHS: dict[str, tuple[str, ...]] = {
    "medication": ("medicationReference",),
    "patient": ("subject", "patient"),
    "subject": ("subject",),
    "encounter": ("encounter", "context"),
}
DEFAULT_PAGE = 50


class SearchError(ValueError):
    """A request this evaluator cannot answer (bad path, unknown resource type)."""


@dataclass(frozen=True)
class SearchResult:
    status: int  # HTTP status the FHIR server would answer
    body: Mapping[str, Any]  # a resource, a searchset Bundle, or an OperationOutcome
    ignored: tuple[str, ...] = field(default=())  # parameters not modelled (ignored, as lenient servers do)


def _get(resource: Any, path: str) -> Any:
    node = resource
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _codings(value: Any) -> Iterable[Mapping[str, Any]]:
    concepts = value if isinstance(value, list) else [value]
    for concept in concepts:
        if isinstance(concept, Mapping):
            for coding in concept.get("coding") or []:
                if isinstance(coding, Mapping):
                    yield coding


def _token_match(value: Any, tokens: list[str]) -> bool:
    """FHIR token search: `system|code`, `code`, `|code` (no system), `system|` (any code)."""
    codings = list(_codings(value))
    plain = [value] if isinstance(value, str) else []
    for token in tokens:
        if "|" in token:
            system, code = token.split("|", 1)
            for c in codings:
                sys_ok = (c.get("system") or "") == system if system else not c.get("system")
                if sys_ok and (not code or c.get("code") == code):
                    return True
        else:
            if any(c.get("code") == token for c in codings) or token in plain:
                return True
    return False


def _date_of(resource: Resource) -> str | None:
    for path in _DATE_PATHS.get(resource.get("resourceType", ""), ()):
        value = _get(resource, path)
        if isinstance(value, str):
            return value
    return None


def _date_match(value: str | None, spec: str) -> bool:
    if value is None:
        return False
    prefixes = {"eq", "ne", "gt", "lt", "ge", "le"}
    prefix, target = (spec[:2], spec[2:]) if spec[:2] in prefixes else ("eq", spec)
    # Compare on the common precision (ISO strings order lexically at equal precision).
    n = min(len(value), len(target))
    v, t = value[:n], target[:n]
    return {"eq": v == t, "ne": v != t, "gt": v > t, "lt": v < t, "ge": v >= t, "le": v <= t}[prefix]


def _ref_matches(resource: Resource, identity: PatientIdentity) -> bool:
    # The service's own patient-identity rule (cds_service.identity): a search by patient finds
    # exactly what the service would accept as this patient's, so replay and prefetch agree.
    return belongs(resource, identity) == OWN


def _resolve_local_references(entries: list[Mapping[str, Any]]) -> list[Resource]:
    """The entries' resources, with references to another entry's `urn:uuid:`/`urn:oid:` fullUrl
    rewritten to `Type/id`, as a FHIR server does when it processes a transaction Bundle (Synthea
    and many exports reference the patient as `urn:uuid:...`; a search by patient must find them).
    """
    local = {
        e["fullUrl"]: f"{e['resource'].get('resourceType')}/{e['resource'].get('id')}"
        for e in entries
        if isinstance(e.get("fullUrl"), str) and e["fullUrl"].startswith("urn:")
        and isinstance(e["resource"].get("id"), str)
    }
    if not local:
        return [e["resource"] for e in entries]

    def rewrite(node: Any) -> Any:
        if isinstance(node, Mapping):
            out = {k: rewrite(v) for k, v in node.items()}
            ref = out.get("reference")
            if isinstance(ref, str) and ref in local:
                out["reference"] = local[ref]
            return out
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    return [rewrite(e["resource"]) for e in entries]


class BundleStore:
    """The resources of one Bundle, answerable as a FHIR server would."""

    def __init__(self, bundle: Mapping[str, Any], base_url: str = "https://fhir.example.org/r4"):
        if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
            raise SearchError("not a FHIR Bundle")
        self.base_url = base_url.rstrip("/")
        entries = [
            e for e in bundle.get("entry") or []
            if isinstance(e, Mapping) and isinstance(e.get("resource"), Mapping)
        ]
        self.resources: list[Resource] = _resolve_local_references(entries)

    def read(self, resource_type: str, resource_id: str) -> Resource | None:
        for r in self.resources:
            if r.get("resourceType") == resource_type and r.get("id") == resource_id:
                return r
        return None

    def _identity(self, patient_ref: str) -> PatientIdentity:
        wanted = patient_ref.split("/")[-1]
        return PatientIdentity.of(wanted, self.read("Patient", wanted))

    def search(self, resource_type: str, params: Iterable[tuple[str, str]]) -> SearchResult:
        items = list(params)
        matches = [r for r in self.resources if r.get("resourceType") == resource_type]
        ignored: list[str] = []
        count, offset, sort = DEFAULT_PAGE, 0, None
        includes: list[str] = []
        for raw_name, value in items:
            name, _, modifier = raw_name.partition(":")
            values = [v for v in value.split(",") if v]
            if name in {"patient", "subject"} and not modifier:
                identities = [self._identity(v) for v in values]
                matches = [r for r in matches if any(_ref_matches(r, i) for i in identities)]
            elif name == "_id":
                matches = [r for r in matches if r.get("id") in values]
            elif name == "code" and not modifier:
                paths = _CODE_PATHS.get(resource_type, ("code",))
                matches = [r for r in matches if any(_token_match(_get(r, p), values) for p in paths)]
            elif name in {"status", "intent"} and not modifier:
                matches = [r for r in matches if r.get(name) in values]
            elif name in {"clinical-status", "verification-status"}:
                element = "clinicalStatus" if name == "clinical-status" else "verificationStatus"
                matches = [r for r in matches if _token_match(r.get(element), values)]
            elif name == "value-concept" and not modifier:
                matches = [r for r in matches if _token_match(r.get("valueCodeableConcept"), values)]
            elif name == "category":
                matches = [r for r in matches if _token_match(r.get("category"), values)]
            elif name in _DATE_PARAMS:
                matches = [r for r in matches if _date_match(_date_of(r), value)]
            elif name == "_count":
                count = max(1, int(value)) if value.isdigit() else DEFAULT_PAGE
            elif name == "_offset":
                offset = int(value) if value.isdigit() else 0
            elif name == "_sort":
                sort = value
            elif name == "_include" and (param := self._include_param(resource_type, value)):
                includes.append(param)
            else:
                ignored.append(raw_name)
        if sort:
            for key in reversed(sort.split(",")):
                desc = key.startswith("-")
                # Sorting by anything but a date is rare in prefetch; ordering by date covers
                # date/authoredon/onset-date, other keys keep bundle order.
                if key.lstrip("-") in _DATE_PARAMS:
                    matches.sort(key=lambda r: _date_of(r) or "", reverse=desc)
        page = matches[offset:offset + count]
        keep = [(n, v) for n, v in items if n != "_offset"]
        links = [{"relation": "self", "url": self._url(resource_type, keep + [("_offset", str(offset))])}]
        if offset + count < len(matches):
            links.append({"relation": "next",
                          "url": self._url(resource_type, keep + [("_offset", str(offset + count))])})
        entries = [{"fullUrl": f"{self.base_url}/{r['resourceType']}/{r.get('id')}", "resource": r,
                    "search": {"mode": "match"}} for r in page]
        entries += [{"fullUrl": f"{self.base_url}/{r['resourceType']}/{r.get('id')}", "resource": r,
                     "search": {"mode": "include"}} for r in self._included(page, includes)]
        body = {
            "resourceType": "Bundle", "type": "searchset", "total": len(matches), "link": links,
            "entry": entries,
        }
        return SearchResult(200, body, tuple(ignored))

    @staticmethod
    def _include_param(resource_type: str, value: str) -> str | None:
        """The search parameter of `_include=Type:param` when we model it for this type."""
        source, _, param = value.partition(":")
        param = param.split(":", 1)[0]  # a target type suffix (Type:param:Target) narrows nothing here
        return param if source == resource_type and param in _INCLUDE_PATHS else None

    def _included(self, page: list[Resource], params: list[str]) -> list[Resource]:
        out: list[Resource] = []
        seen = {(r.get("resourceType"), r.get("id")) for r in page}
        for param in params:
            for resource in page:
                for path in _INCLUDE_PATHS[param]:
                    ref = _get(resource, path + ".reference")
                    if not isinstance(ref, str) or ref.startswith("#"):
                        continue
                    rtype, _, rid = "/".join(ref.split("/")[-2:]).partition("/")
                    target = self.read(rtype, rid) if rid else None
                    if target is not None and (rtype, rid) not in seen:
                        seen.add((rtype, rid))
                        out.append(target)
        return out

    def _url(self, resource_type: str, params: list[tuple[str, str]]) -> str:
        return f"{self.base_url}/{resource_type}?{urlencode(params, safe='|,:')}"

    def get(self, url: str) -> SearchResult:
        """Answer a relative (`Condition?patient=1`) or absolute URL under `base_url`."""
        parts = urlsplit(url)
        path = parts.path
        base_path = urlsplit(self.base_url).path
        if parts.scheme and base_path and path.startswith(base_path):
            path = path[len(base_path):]
        segments = [s for s in path.split("/") if s]
        if not segments or not segments[0][:1].isupper():
            return SearchResult(400, _outcome("invalid", f"not a FHIR read or search: {url}"))
        if len(segments) == 1:
            return self.search(segments[0], parse_qsl(parts.query, keep_blank_values=True))
        if len(segments) == 2:
            found = self.read(segments[0], segments[1])
            if found is None:
                return SearchResult(404, _outcome("not-found", f"{segments[0]}/{segments[1]} is not known"))
            return SearchResult(200, found)
        return SearchResult(400, _outcome("not-supported", f"unsupported FHIR path: {path}"))

    def responses_callback(self, request: Any) -> tuple[int, dict[str, str], str]:
        """A `responses.add_callback` handler serving this bundle as a FHIR server."""
        result = self.get(request.url)
        return result.status, {"Content-Type": "application/fhir+json"}, json.dumps(result.body)


def _outcome(code: str, text: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}]}

"""FHIR references as EHRs write them, parsed without any clinical meaning.

Used by the facts stage (to find the target of an order's reasonReference in the record or among
the order's contained resources) and by the protocol layer (to read a target the prefetch did not
bring). Forms: `#contained-id`, `Type/id`, `Type/id/_history/n`, an absolute URL ending in one of
those, and `urn:uuid:...` (a Bundle-local id: the target's `fullUrl`, which Synthea-style bundles
also use as the resource id).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_TAIL = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?/?$"
)
_UUID = "urn:uuid:"


@dataclass(frozen=True)
class Ref:
    kind: str  # "contained" | "uuid" | "relative" | "absolute"
    id: str
    type: str | None = None  # resource type; None for contained and urn:uuid references
    base: str | None = None  # the server root of an absolute reference, without the trailing slash


def parse_reference(value: Any) -> Ref | None:
    """A `Reference` element (or its `reference` string) -> Ref; None when there is no usable target.

    >>> parse_reference({"reference": "https://ehr.example.org/fhir/Condition/c1/_history/2"})
    Ref(kind='absolute', id='c1', type='Condition', base='https://ehr.example.org/fhir')
    >>> parse_reference("#reason-1").kind
    'contained'
    """
    reference = value.get("reference") if isinstance(value, dict) else value
    if not isinstance(reference, str):
        return None
    reference = reference.strip()
    if reference.startswith("#"):
        return Ref("contained", reference[1:]) if len(reference) > 1 else None
    if reference.lower().startswith(_UUID):
        rid = reference[len(_UUID) :]
        return Ref("uuid", rid) if rid else None
    m = _TAIL.search(reference)
    if m is None:
        return None
    head = reference[: m.start()]
    if not head:
        return Ref("relative", m.group("id"), m.group("type"))
    if head.lower().startswith(("http://", "https://")):
        return Ref("absolute", m.group("id"), m.group("type"), head.rstrip("/"))
    return None

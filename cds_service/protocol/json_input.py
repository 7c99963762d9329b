"""Strict, bounded JSON parsing of request bodies.

`json.loads` alone accepts what the rest of the service cannot handle safely:
- `NaN`, `Infinity`, `-Infinity` and overflowing numbers (`1e999`): echoed back they make a
  response that is not JSON (the browser's `JSON.parse` rejects the whole answer);
- nesting deep enough to exhaust the interpreter's recursion (`RecursionError`, i.e. a 500) in the
  parser or later in `copy.deepcopy` / the recursive pruning of echoed draft orders;
- lone UTF-16 surrogates (`"\\ud800"`), which are not Unicode text: SQLite, hashing and
  `str.encode` fail on them deep inside the request.
Every one of these is the client's error and answered with 400 here, before any other code runs.
All checks are linear in the body size and run at C speed (about a tenth of the parse), except
that a body with a surrogate escape at all (rare) is re-encoded once to decide exactly.

Parsing uses orjson when it is installed (issue 11: a third of the standard parser's time on a
typical chart). orjson refuses everything above by itself (NaN/Infinity, overflow, lone surrogates,
nesting beyond 1,024, invalid UTF-8); whatever it refuses is parsed again by the standard parser
below, so every refusal is answered with the same message as without orjson. One difference:
an integer beyond 64 bits (never a valid FHIR integer) parses as a float.
"""

from __future__ import annotations

import json
import math
import re
from array import array
from itertools import accumulate
from typing import Any

try:
    import orjson
except ImportError:  # optional: the standard parser gives the same answers, slower
    orjson = None  # type: ignore[assignment]

from cds_service.protocol.errors import InvalidRequest

# translate() tables: keep only quotes and brackets; then '[' '{' -> +1 and ']' '}' -> -1 (signed bytes).
_NOT_QUOTE_OR_BRACKET = bytes(b for b in range(256) if b not in b'[]{}"')
_DEPTH_TABLE = bytes(1 if b in b"[{" else 255 if b in b"]}" else 0 for b in range(256))
# A surrogate can only come from a \uD800-\uDFFF escape (the UTF-8 decode below is strict) or
# from UTF-8-encoded surrogate bytes (ED A0..BF), which that decode rejects.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (JSON numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def parse_json_body(raw: bytes, max_depth: int) -> Any:
    """Parse a request body as strict JSON; raise InvalidRequest (400) on anything unusable."""
    if orjson is not None:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the standard parser below says exactly why
        else:
            _check_depth(raw, max_depth)
            return body  # (lone surrogates, NaN, overflow: orjson refused them already)
    try:
        text = raw.decode("utf-8")  # strict: RFC 8259 requires UTF-8; rejects encoded surrogates
    except UnicodeDecodeError:
        raise InvalidRequest("The request body is not valid UTF-8") from None
    try:
        body = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidRequest(f"The request body is nested more than {max_depth} levels deep") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, huge integers (int max str digits)
        raise InvalidRequest(f"The request body is not valid JSON: {_short(exc)}") from None
    _check_depth(raw, max_depth)
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(body):
        raise InvalidRequest("The request body contains a lone UTF-16 surrogate (\\uD800-\\uDFFF escape)")
    return body


def _check_depth(raw: bytes, max_depth: int) -> None:
    depth = json_depth(raw)
    if depth > max_depth:
        raise InvalidRequest(
            f"The request body is nested {depth} levels deep; at most {max_depth} are accepted"
        )


def json_depth(raw: bytes) -> int:
    """Maximum nesting of arrays/objects in a *valid* JSON document, in linear time at C speed.

    Brackets inside strings do not count, so strings are removed first without a regex (a regex
    over 10 MB costs as much as the parse): escape pairs go first (left to right, as JSON pairs
    them), then everything but quotes and brackets; every quote left delimits a string. Removing
    `""` (an empty string, or the end of one string and the start of the next) keeps that true.
    """
    if b"\\" in raw:  # (most bodies have no escape at all: two copies of a large body saved)
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    reduced = raw.translate(None, _NOT_QUOTE_OR_BRACKET)
    reduced = reduced.replace(b'""', b"")
    if b'"' in reduced:  # strings holding brackets: keep what lies between them
        reduced = b"".join(reduced.split(b'"')[::2])
    return max(accumulate(array("b", reduced.translate(_DEPTH_TABLE))), default=0)


def _has_lone_surrogate(body: Any) -> bool:
    # Paired escapes (an emoji) were already combined by the parser; what is left is lone.
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _short(exc: ValueError) -> str:
    return str(exc)[:200]

"""Direct, cheap checks of the elements the rules read: a fast "certainly valid" before R4B.

Validating a selected resource with the fhir.resources R4B model costs 0.1-0.3 ms; on a
first-seen chart that was over 40 % of a request (issue 11). Most resources an EHR sends are
plain: codings, quantities, dates, references. `accepts` recognises exactly those plain shapes
with direct type and pattern checks (the patterns are the R4B ones, or stricter) and answers
True only when the R4B model would accept the same elements too. Anything it does not recognise
(an extension, a primitive's `_element`, an unusual datatype, a leap second, a value it cannot
vouch for) answers False, which means "ask the model", never "invalid": the model stays the
judge of everything else, so a malformed resource is still reported and never used.

The one invariant: accepts(r) implies the R4B model validates r. tests/facts/test_wellformed.py
checks it differentially against the model over fixtures, generated charts and mutations.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

Check = Callable[[Any], bool]

# R4B primitive patterns (fhir_core.types), anchored; where R4B is looser, ours is stricter
_STRING = re.compile(r"[ \r\n\t\S]+")
_CODE = re.compile(r"[^\s]+(\s[^\s]+)*")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_DATE = re.compile(_YEAR + r"(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?")
# seconds 00-59 only (a leap second is left to the model); at most 6 fraction digits
_TIME = r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+\-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
_INSTANT = re.compile(_YEAR + r"-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])" + _TIME)
_INT32 = (-(2**31), 2**31 - 1)
_MEMO_ENTRIES, _MEMO_CHARS = 4096, 256  # remembered valid URIs / codes: at most 1 MB each set


def string(v: Any) -> bool:
    # isprintable(): every character is non-whitespace or a plain space, so the pattern matches
    return type(v) is str and v != "" and (v.isprintable() or _STRING.fullmatch(v) is not None)


_known_codes: set[str] = set()  # statuses, units, LOINC codes repeat: remember the seen


def code(v: Any) -> bool:
    if type(v) is not str:
        return False
    if v in _known_codes:
        return True
    if _CODE.fullmatch(v) is None:
        return False
    if len(_known_codes) < _MEMO_ENTRIES and len(v) <= _MEMO_CHARS:
        _known_codes.add(v)
    return True


_URI = re.compile(r"\S+")
_known_uris: set[str] = set()  # code systems repeat on every coding: remember the few seen


def uri(v: Any) -> bool:
    if type(v) is not str:
        return False
    if v in _known_uris:
        return True
    if _URI.fullmatch(v) is None:
        return False
    if len(_known_uris) < _MEMO_ENTRIES and len(v) <= _MEMO_CHARS:  # bounded whatever is sent
        _known_uris.add(v)
    return True


def boolean(v: Any) -> bool:
    return type(v) is bool


def integer(v: Any) -> bool:
    return type(v) is int and _INT32[0] <= v <= _INT32[1]


def positive_int(v: Any) -> bool:
    return integer(v) and v >= 1


def decimal(v: Any) -> bool:
    # str() of an int or a finite float always matches the R4B decimal pattern (_DECIMAL)
    return type(v) is int or (type(v) is float and math.isfinite(v))


def _real_date(text: str) -> bool:
    if len(text) < 10:  # "YYYY" or "YYYY-MM": the pattern already bounds the month
        return True
    try:
        date(int(text[:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:  # 30 February
        return False
    return True


def date_time(v: Any) -> bool:
    if type(v) is not str:
        return False
    if "T" not in v:
        return _DATE.fullmatch(v) is not None and _real_date(v)
    return instant(v)


def instant(v: Any) -> bool:
    if type(v) is not str or _INSTANT.fullmatch(v) is None:
        return False
    try:
        datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _obj(fields: Mapping[str, Check], need: tuple[str, ...] = ()) -> Check:
    """A complex datatype: a non-empty JSON object whose every key is one we can check."""

    def check(v: Any) -> bool:
        if type(v) is not dict or not v:
            return False
        for key, value in v.items():
            field = fields.get(key)
            if field is None or not field(value):
                return False
        return all(k in v for k in need)

    return check


def _list(item: Check) -> Check:
    def check(v: Any) -> bool:
        return type(v) is list and len(v) > 0 and all(item(x) for x in v)

    return check


coding = _obj({"system": uri, "version": string, "code": code, "display": string, "userSelected": boolean})
codeable_concept = _obj({"coding": _list(coding), "text": string})
quantity = _obj({"value": decimal, "comparator": code, "unit": string, "system": uri, "code": code})
simple_quantity = _obj({"value": decimal, "unit": string, "system": uri, "code": code})
period = _obj({"start": date_time, "end": date_time})
reference = _obj({"reference": string, "type": uri, "display": string})
range_ = _obj({"low": simple_quantity, "high": simple_quantity})
_timing = _obj(
    {
        "code": codeable_concept,
        "repeat": _obj(
            {
                "boundsPeriod": period,
                "count": positive_int,
                "frequency": positive_int,
                "period": decimal,
                "periodUnit": code,
            }
        ),
    }
)
_dose_and_rate = _obj({"type": codeable_concept, "doseQuantity": simple_quantity})
dosage = _obj(
    {
        "sequence": integer,
        "text": string,
        "patientInstruction": string,
        "additionalInstruction": _list(codeable_concept),
        "timing": _timing,
        "asNeededBoolean": boolean,
        "site": codeable_concept,
        "route": codeable_concept,
        "method": codeable_concept,
        "doseAndRate": _list(_dose_and_rate),
    }
)
# R4B con-1 (summary or assessment) is stricter than the model: fine, the model decides the rest
_stage = _obj({"summary": codeable_concept, "assessment": _list(reference), "type": codeable_concept})
_reference_range = _obj({"low": simple_quantity, "high": simple_quantity})

# only elements R4B has on the type (a Condition has no status, a MedicationRequest no code: the
# model forbids them, so they are left to it; tests/facts/test_wellformed.py checks the lists)
_BASE: dict[str, Check] = {
    "resourceType": string,
    "id": lambda v: type(v) is str and _ID.fullmatch(v) is not None,
    "subject": reference,
}
_COMMON: dict[str, Check] = {**_BASE, "status": code, "code": codeable_concept}
_MEDICATION: dict[str, Check] = {
    **_BASE,
    "status": code,
    "medicationCodeableConcept": codeable_concept,
    "medicationReference": reference,
    # "contained" (a list of resources) is left to the model
}


_MEDICATION_CHOICE = ("medicationCodeableConcept", "medicationReference")


class Shape:
    """The checkable elements of one resource type, its required elements and choice groups."""

    def __init__(
        self, fields: Mapping[str, Check], required: tuple[str, ...], choices: tuple[tuple[str, ...], ...]
    ) -> None:
        self.fields = fields
        self.required = required
        self.choices = choices


SHAPES: Mapping[str, Shape] = {
    "Condition": Shape(
        {
            **_BASE,
            "code": codeable_concept,
            "clinicalStatus": codeable_concept,
            "verificationStatus": codeable_concept,
            "onsetDateTime": date_time,
            "onsetPeriod": period,
            "recordedDate": date_time,
            "abatementDateTime": date_time,
            "abatementPeriod": period,
            "abatementAge": quantity,
            "abatementRange": range_,
            "abatementString": string,
            "stage": _list(_stage),
        },
        required=("subject",),
        choices=(
            ("onsetDateTime", "onsetPeriod"),
            ("abatementDateTime", "abatementPeriod", "abatementAge", "abatementRange", "abatementString"),
        ),
    ),
    "Observation": Shape(
        {
            **_COMMON,
            "effectiveDateTime": date_time,
            "effectivePeriod": period,
            "effectiveInstant": instant,
            "issued": instant,
            "valueQuantity": quantity,
            "valueCodeableConcept": codeable_concept,
            "valueString": string,
            "valueInteger": integer,
            "valueBoolean": boolean,
            "interpretation": _list(codeable_concept),
            "referenceRange": _list(_reference_range),
        },
        required=("status", "code"),
        choices=(
            ("effectiveDateTime", "effectivePeriod", "effectiveInstant"),
            ("valueQuantity", "valueCodeableConcept", "valueString", "valueInteger", "valueBoolean"),
        ),
    ),
    "Procedure": Shape(
        {**_COMMON, "performedDateTime": date_time, "performedPeriod": period},
        required=("status", "subject"),
        choices=(("performedDateTime", "performedPeriod"),),
    ),
    "DiagnosticReport": Shape(
        {
            **_COMMON,
            "effectiveDateTime": date_time,
            "effectivePeriod": period,
            "issued": instant,
            "conclusion": string,
            "conclusionCode": _list(codeable_concept),
        },
        required=("status", "code"),
        choices=(("effectiveDateTime", "effectivePeriod"),),
    ),
    "MedicationRequest": Shape(
        {
            **_MEDICATION,
            "intent": code,
            "authoredOn": date_time,
            "dosageInstruction": _list(dosage),
            "doNotPerform": boolean,
        },
        required=("status", "intent", "subject"),
        choices=(("medicationCodeableConcept", "medicationReference"),),
    ),
    "MedicationAdministration": Shape(
        {**_MEDICATION, "effectiveDateTime": date_time, "effectivePeriod": period},
        required=("status", "subject"),
        choices=(_MEDICATION_CHOICE, ("effectiveDateTime", "effectivePeriod")),
    ),
    "MedicationStatement": Shape(
        {**_MEDICATION, "effectiveDateTime": date_time, "effectivePeriod": period, "dosage": _list(dosage)},
        required=("status", "subject"),
        choices=(_MEDICATION_CHOICE, ("effectiveDateTime", "effectivePeriod")),
    ),
}
# Choice groups R4B requires one of (medication[x] everywhere, effective[x] of an administration)
REQUIRED_CHOICES: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "MedicationRequest": (("medicationCodeableConcept", "medicationReference"),),
    "MedicationAdministration": (
        ("medicationCodeableConcept", "medicationReference"),
        ("effectiveDateTime", "effectivePeriod"),
    ),
    "MedicationStatement": (("medicationCodeableConcept", "medicationReference"),),
}


def accepts(rtype: str, data: Mapping[str, Any]) -> bool:
    """True: these elements are certainly valid R4B (the model need not be asked). False: not
    recognised here; the model decides."""
    shape = SHAPES.get(rtype)
    if shape is None or data.get("resourceType") != rtype:
        return False
    fields = shape.fields
    for key, value in data.items():
        check = fields.get(key)
        if check is None or not check(value):
            return False
    if not all(k in data for k in shape.required):
        return False
    for group in shape.choices:
        if sum(k in data for k in group) > 1:
            return False
    return all(any(k in data for k in group) for group in REQUIRED_CHOICES.get(rtype, ()))

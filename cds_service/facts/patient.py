"""Age and administrative sex from the Patient resource."""

from __future__ import annotations

from datetime import date

from cds_service.facts._util import parse_date
from cds_service.model import Resource


def demographics(patient: Resource | None, as_of: date) -> tuple[int | None, str | None]:
    if not patient:
        return None, None
    born = parse_date(patient.get("birthDate"))
    died = parse_date(patient.get("deceasedDateTime"))
    if died is not None and died < as_of:
        as_of = died  # age at death: a deceased patient does not keep ageing
    age = None
    if born is not None and born <= as_of:
        age = as_of.year - born.year - ((as_of.month, as_of.day) < (born.month, born.day))
    gender = patient.get("gender")
    return age, gender if isinstance(gender, str) else None

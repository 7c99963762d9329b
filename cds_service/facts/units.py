"""UCUM case-insensitive ("c/i") unit spellings -> the case-sensitive ("c/s") codes the value sets list.

UCUM is case-sensitive: `Mm` (megametre) is not `mm`, `Mg/dL` (megagram) is not `mg/dL`. For
systems that cannot keep case UCUM defines a second, case-insensitive code per unit, printed in
upper case (`ng/mL` -> `NG/ML`, `umol/L` -> `UMOL/L`; The Unified Code for Units of Measure,
unitsofmeasure.org, table column "c/i"). Lab feeds from such systems send those codes. So a unit is
folded only through this explicit table of the c/i codes of the units the value sets list
(written exactly in their c/i form: an all-upper-case string), never by lower-casing whatever
arrives: a mixed-case spelling such as `Mg/dL` or `ng/ML` stays unrecognised and is reported as
unreadable data rather than guessed at.

No PyPI library was used: `pint` is not UCUM; the UCUM parsers found (`ucumvert`, a grammar
mapped onto pint; `ucumate`, Rust bindings) add a compiled or grammar dependency for what is, for
the dozen lab units read here, a reviewed lookup table. Add a row when a value set gains a unit.
"""

from __future__ import annotations

from collections.abc import Mapping

# c/i code -> c/s code (UCUM: prefixes n->N, u->U, m->M, p->P, d->D, k->K; atoms g->G, L/l->L,
# mol->MOL, kat->KAT, min->MIN; U, [IU] and annotations {...} are unchanged).
CASE_INSENSITIVE: Mapping[str, str] = {
    "NG/ML": "ng/mL",
    "UG/L": "ug/L",
    "NMOL/L": "nmol/L",
    "PMOL/L": "pmol/L",
    "MG/DL": "mg/dL",
    "NG/DL": "ng/dL",
    "UMOL/L": "umol/L",
    "U/L": "U/L",
    "[IU]/L": "[IU]/L",
    "UKAT/L": "ukat/L",
    "ML/MIN": "mL/min",
    "ML/MIN/{1.73_M2}": "mL/min/{1.73_m2}",
}


def case_sensitive(unit: str) -> str | None:
    """The c/s code of a UCUM c/i code, or None (not a c/i code this service knows)."""
    return CASE_INSENSITIVE.get(unit.strip())

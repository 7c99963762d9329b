"""The direct checks of facts/wellformed.py: never "valid" where the R4B model says invalid.

Two kinds of tests: a differential one (every fixture resource and a generated chart, then
thousands of seeded mutations of them: wellformed.accepts(r) must imply the model validates r),
and one per element kind now checked directly: a malformed element in a resource the rules read
is still a data issue and the resource is not used.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from cds_service.facts import extract_facts, wellformed
from cds_service.facts.selection import READ_ELEMENTS, _read_part, _validate
from tests.facts.conftest import ICD, LNC, RXN, cc, condition, observation, quantity, record

ROOT = Path(__file__).resolve().parents[2]


def _resources() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("resourceType") in READ_ELEMENTS:
                found.append(value)
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for path in sorted((ROOT / "fixtures").rglob("*.json")):
        walk(json.loads(path.read_text()))
    from bench.workloads import generate_chart

    for resources in generate_chart(300).resources.values():
        found.extend(resources)
    # shapes the fixtures lack: administrations, statements, periods, ranges, dosage timing, stage
    subject = {"reference": "Patient/p1"}
    drug = cc((RXN, "42375"), text="leuprolide")
    found += [
        {"resourceType": "MedicationAdministration", "id": "ma", "status": "completed", "subject": subject,
         "medicationCodeableConcept": drug, "effectivePeriod": {"start": "2026-01-01T10:00:00+01:00"}},
        {"resourceType": "MedicationStatement", "id": "ms", "status": "active", "subject": subject,
         "medicationReference": {"reference": "Medication/m1"}, "effectiveDateTime": "2026-02",
         "dosage": [{"sequence": 1, "asNeededBoolean": False, "route": cc((ICD, "x")),
                     "timing": {"repeat": {"frequency": 1, "period": 3, "periodUnit": "mo"}},
                     "doseAndRate": [{"doseQuantity": {"value": 22.5, "unit": "mg"}}]}]},
        {"resourceType": "MedicationRequest", "id": "mr", "status": "active", "intent": "order",
         "subject": subject, "medicationCodeableConcept": drug, "doNotPerform": True,
         "authoredOn": "2026-03-04T00:00:00.123Z"},
        condition((ICD, "C61"), onset=None, onsetPeriod={"start": "2020"},
                  abatementRange={"low": {"value": 1}}, recordedDate="2020-05-06",
                  stage=[{"summary": cc((ICD, "x")), "assessment": [{"reference": "Observation/o"}]}]),
        condition((ICD, "C50.9"), abatementAge={"value": 60, "comparator": "<", "unit": "a"}),
        observation((LNC, "2857-1"), when=None, effectiveInstant="2026-01-01T00:00:00-05:00",
                    valueInteger=3, interpretation=[cc(("http://x", "H"))]),
        observation((LNC, "2857-1"), when=None, valueBoolean=True, effectivePeriod={"end": "2026-01-01"}),
    ]
    for res in found:
        for key in [k for k, v in res.items() if v is None]:
            del res[key]
    return found


NASTY: list[Any] = [
    None, True, False, 0, -1, 2**40, 1.5, float("inf"), "", " ", "x y", " x", "x ", "\x0b", "a\u2028b",
    "2024-02-30", "2024-13", "2024-01-01T10:00:00", "2024-01-01T10:00:60Z", "2024-01-01T24:00:00Z",
    "0000", "2024-01-01T10:00:00.1234567Z", "2024-01-01T10:00:00+15:00", "a" * 300, [], {}, [None],
    {"value": "x"}, [{"a": 1}], "yesterday", "5", "1e400",
]


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(resource: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    res = copy.deepcopy(_read_part(resource))
    for _ in range(rng.choice((1, 1, 2))):
        paths = _paths(res)
        path = rng.choice(paths)
        parent: Any = res
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        roll = rng.random()
        if roll < 0.6:
            parent[last] = rng.choice(NASTY)
        elif roll < 0.75 and isinstance(parent, dict):
            del parent[last]
        elif roll < 0.9 and isinstance(parent, dict):
            extra = rng.choice(("extension", "_status", "foo", "id", "effectivePeriod", "valueString"))
            parent[extra] = rng.choice([*NASTY, [{"url": "http://x", "valueString": "y"}], "2024"])
        else:
            parent[last] = [parent[last]] if not isinstance(parent[last], list) else {"x": parent[last]}
    return res


def test_accepts_only_what_the_model_validates():
    rng = random.Random(11)
    bases = _resources()
    accepted = 0
    for res in bases:
        data = _read_part(res)
        if wellformed.accepts(data["resourceType"], data):
            accepted += 1
            assert _validate(data["resourceType"], data)[0], data
    # the plain shapes EHRs send are the fast path: every base resource is recognised
    assert accepted == len(bases)
    checked = 0
    for _ in range(4000):
        data = _mutate(rng.choice(bases), rng)
        rtype = str(data.get("resourceType"))
        if rtype in wellformed.SHAPES and wellformed.accepts(rtype, data):
            checked += 1
            assert _validate(rtype, data)[0], data
    assert checked > 300  # the mutations that keep a valid shape were exercised too


def test_required_elements_and_choices_match_the_model():
    from fhir.resources.R4B import get_fhir_model_class

    for rtype, shape in wellformed.SHAPES.items():
        model = get_fhir_model_class(rtype)
        required = {f.alias or n for n, f in model.model_fields.items() if f.is_required()}
        required |= {name for name, _ in model.get_required_fields(model.model_construct())}
        read = READ_ELEMENTS[rtype]
        aliases = {f.alias or n for n, f in model.model_fields.items()}
        assert set(shape.fields) - {"resourceType"} <= aliases, rtype  # no element R4B lacks
        assert required & read <= set(shape.required) | {"resourceType"}, rtype
        for prefix, names in model.get_one_of_many_fields(model.model_construct()).items():
            in_read = tuple(n for n in names if n in read)
            if len(in_read) > 1:
                assert any(set(in_read) <= set(g) for g in shape.choices), (rtype, prefix)
            info = model.model_fields[names[0]].json_schema_extra
            if info["one_of_many_required"] and in_read:
                assert set(in_read) in [set(g) for g in wellformed.REQUIRED_CHOICES.get(rtype, ())], rtype


def _psa(value: float = 4.2, **changes: Any) -> dict[str, Any]:
    obs = observation(
        (LNC, "2857-1"), when="2026-09-01", valueQuantity=quantity(value, "ng/mL", "ng/mL"),
        referenceRange=[{"high": quantity(4, "ng/mL", "ng/mL")}],
    )
    obs["issued"] = "2026-09-01T12:00:00Z"
    obs.update(changes)
    return obs


MALFORMED_PSA = {
    "dateTime: impossible date": {"effectiveDateTime": "2026-02-30"},
    "dateTime: time without zone": {"effectiveDateTime": "2026-09-01T10:00:00"},
    "instant: date only": {"issued": "2026-09-01"},
    "quantity: value as text": {"valueQuantity": {"value": "four", "unit": "ng/mL"}},
    "quantity: value as boolean": {"valueQuantity": {"value": True, "unit": "ng/mL"}},
    "quantity: unknown element": {"valueQuantity": {"value": 4.2, "units": "ng/mL"}},
    "coding: code with inner double space": {
        "code": {"coding": [{"system": LNC, "code": "2857-1"}, {"system": LNC, "code": "a  b"}]}
    },
    "coding: coding not a list": {"code": {"coding": [{"system": LNC, "code": "2857-1"}], "text": 5}},
    "code: status with spaces": {"status": " final"},
    "reference: subject not an object": {"subject": "Patient/p1"},
    "period: start not a date": {"effectiveDateTime": None, "effectivePeriod": {"start": "soon"}},
    "choice: two effective[x]": {"effectivePeriod": {"start": "2026-09-01"}},
    "choice: two value[x]": {"valueString": "4.2"},
    "required: status missing": {"status": None},
    "id: not an id": {"id": "has space"},
    "referenceRange: bound not a quantity": {"referenceRange": [{"high": "4"}]},
    "interpretation: not a list": {"interpretation": {"text": "high"}},
}


@pytest.mark.parametrize("change", MALFORMED_PSA.values(), ids=MALFORMED_PSA.keys())
def test_malformed_element_of_a_read_observation_is_a_data_issue_and_not_used(valuesets, change):
    bad = _psa(9.9, **change)
    for key in [k for k, v in bad.items() if v is None]:
        del bad[key]
    good = _psa(1.5, effectiveDateTime="2026-01-01")
    facts = extract_facts(record(bad, good), valuesets)
    assert [m.value for m in facts.psa] == [1.5]
    assert any("could not be read" in i for i in facts.data_issues)


def test_a_plain_psa_is_read_without_asking_the_model(valuesets, monkeypatch):
    from cds_service.facts import selection

    monkeypatch.setattr(selection, "_validate", lambda *a: pytest.fail("model asked"))
    facts = extract_facts(record(_psa(4.2)), valuesets)
    assert [m.value for m in facts.psa] == [4.2] and facts.data_issues == ()


def _request(**changes: Any) -> dict[str, Any]:
    res = {"resourceType": "MedicationRequest", "id": "mr-1", "status": "active", "intent": "order",
           "subject": {"reference": "Patient/p1"}, "authoredOn": "2026-09-01",
           "medicationCodeableConcept": cc((RXN, "42375"))}
    res.update(changes)
    return {k: v for k, v in res.items() if v is not None}


MALFORMED_MEDICATION = {
    "boolean: doNotPerform not a boolean": {"doNotPerform": "perhaps"},
    "dosage: sequence not an integer": {"dosageInstruction": [{"sequence": "first"}]},
    "dosage: frequency zero": {"dosageInstruction": [{"timing": {"repeat": {"frequency": 0}}}]},
    "choice: two medication[x]": {"medicationReference": {"reference": "Medication/x"}},
    "required: intent missing": {"intent": None},
    "dateTime: authoredOn not a date": {"authoredOn": "09/01/2026"},
}


@pytest.mark.parametrize("change", MALFORMED_MEDICATION.values(), ids=MALFORMED_MEDICATION.keys())
def test_malformed_element_of_a_read_medication_is_a_data_issue_and_not_used(valuesets, change):
    facts = extract_facts(record(_request(**change)), valuesets)
    assert facts.medications == ()
    assert any("could not be read" in i for i in facts.data_issues)


def test_malformed_condition_onset_is_a_data_issue_and_not_used(valuesets):
    bad = condition((ICD, "C61"), onset="last spring")
    facts = extract_facts(record(bad), valuesets)
    assert "prostate-cancer" not in facts.concepts
    assert any("could not be read" in i for i in facts.data_issues)


def test_malformed_stage_costs_the_stage_not_the_diagnosis(valuesets):
    bad = condition((ICD, "C61"), stage=[{"summary": {"coding": {"system": ICD, "code": "x"}}}])
    facts = extract_facts(record(bad), valuesets)
    assert "prostate-cancer" in facts.concepts
    assert any("stage unreadable" in i for i in facts.data_issues)


def test_malformed_report_conclusion_is_a_data_issue_and_not_used(valuesets):
    report = {"resourceType": "DiagnosticReport", "id": "r1", "status": "final",
              "subject": {"reference": "Patient/p1"}, "code": cc((LNC, "25031-6")),
              "effectiveDateTime": "2026-09-01", "conclusion": ""}
    facts = extract_facts(record(report), valuesets)
    assert facts.imaging == ()
    assert any("could not be read" in i for i in facts.data_issues)


def test_the_remembered_uris_and_codes_stay_bounded(monkeypatch):
    """Valid URIs and codes are remembered to skip their pattern check; what a client sends must
    not grow that memory: long strings are checked every time, and the sets are capped."""
    long_system = "http://example.org/" + "x" * 10_000
    assert wellformed.uri(long_system) and long_system not in wellformed._known_uris
    assert wellformed.code("c" * 10_000) and "c" * 10_000 not in wellformed._known_codes
    monkeypatch.setattr(wellformed, "_known_codes", set())
    monkeypatch.setattr(wellformed, "_MEMO_ENTRIES", 3)
    for n in range(10):
        assert wellformed.code(f"code-{n}")
    assert len(wellformed._known_codes) == 3


def test_value_set_memo_stays_bounded(valuesets, monkeypatch):
    from cds_service.knowledge import valuesets as vs_module

    valuesets._memo.clear()
    assert valuesets.ids_for("http://loinc.org", "2857-1")  # PSA, remembered
    assert ("http://loinc.org", "2857-1") in valuesets._memo
    assert not valuesets.ids_for("http://loinc.org", "9" * 5000)  # over the code bound: not kept
    assert not valuesets.ids_for("x" * 5000, "2857-1")
    assert len(valuesets._memo) == 1
    monkeypatch.setattr(vs_module, "_MEMO_SIZE", 4)
    for n in range(10):
        valuesets.ids_for("http://loinc.org", f"{n}-0")
    assert len(valuesets._memo) <= 4
    assert valuesets.ids_for("http://loinc.org", "2857-1")  # answers are unchanged by the memo

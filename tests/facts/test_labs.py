import pytest

from cds_service.facts import extract_facts
from tests.facts.conftest import LNC, observation, quantity, record


def facts_of(valuesets, *resources):
    return extract_facts(record(*resources), valuesets)


@pytest.mark.parametrize("code", ["2857-1", "83112-3", "35741-8", "19195-7"])
def test_every_mass_psa_code_is_read(valuesets, code):
    facts = facts_of(valuesets, observation((LNC, code), valueQuantity=quantity(4.2, "ng/mL", "ng/mL")))
    assert [m.value for m in facts.psa] == [4.2]
    assert facts.psa[0].unit == "ng/mL"


@pytest.mark.parametrize(
    ("value", "unit", "ucum", "expected"),
    [
        (4.2, "ng/mL", "ng/mL", 4.2),
        (4.2, "ng/ml", None, 4.2),  # plain-text unit, no UCUM code
        (4.2, "µg/L", None, 4.2),
        (4.2, "microgram per litre", "ug/L", 4.2),  # UCUM code wins over the printed unit
        (0.1, "nmol/L", "nmol/L", 3.3),
        (60.0, "pmol/L", "pmol/L", 1.98),
    ],
)
def test_psa_units_are_converted_to_ng_per_ml(valuesets, value, unit, ucum, expected):
    facts = facts_of(valuesets, observation((LNC, "2857-1"), valueQuantity=quantity(value, unit, ucum)))
    assert facts.psa[0].value == pytest.approx(expected)


def test_molar_psa_code_uses_the_documented_conversion(valuesets):
    facts = facts_of(
        valuesets, observation((LNC, "19197-3"), valueQuantity=quantity(0.2, "nmol/L", "nmol/L"))
    )
    assert facts.psa[0].value == pytest.approx(6.6)  # 33 kDa: 1 nmol/L = 33 ng/mL


def test_psa_in_unknown_unit_is_a_data_issue_not_a_guess(valuesets):
    facts = facts_of(valuesets, observation((LNC, "2857-1"), valueQuantity=quantity(4.2, "mg/dL", "mg/dL")))
    assert facts.psa == ()
    assert any("unit not recognised" in i for i in facts.data_issues)


def test_psa_without_unit_is_not_guessed(valuesets):
    facts = facts_of(valuesets, observation((LNC, "2857-1"), valueQuantity={"value": 4.2}))
    assert facts.psa == ()
    assert facts.data_issues


def test_free_psa_and_ratio_are_skipped(valuesets):
    facts = facts_of(
        valuesets,
        observation((LNC, "10886-0"), valueQuantity=quantity(0.9, "ng/mL")),
        observation((LNC, "12841-3"), valueQuantity=quantity(20, "%")),
    )
    assert facts.psa == ()


def test_only_final_amended_corrected_count(valuesets):
    facts = facts_of(
        valuesets,
        observation((LNC, "2857-1"), status="preliminary", valueQuantity=quantity(1.0, "ng/mL")),
        observation((LNC, "2857-1"), status="entered-in-error", valueQuantity=quantity(2.0, "ng/mL")),
        observation((LNC, "2857-1"), status="amended", valueQuantity=quantity(3.0, "ng/mL")),
        observation(
            (LNC, "2857-1"), status="corrected", when="2026-10-02", valueQuantity=quantity(4.0, "ng/mL")
        ),
    )
    assert [m.value for m in facts.psa] == [3.0, 4.0]


def test_psa_series_sorted_oldest_first_and_deduplicated(valuesets):
    facts = facts_of(
        valuesets,
        observation((LNC, "2857-1"), when="2026-09-01", valueQuantity=quantity(2.0, "ng/mL")),
        observation((LNC, "2857-1"), when="2025-01-01", valueQuantity=quantity(0.5, "ng/mL")),
        # the same result sent under two codes
        observation((LNC, "83112-3"), when="2026-09-01", valueQuantity=quantity(2.0, "ng/mL")),
        observation((LNC, "2857-1"), when="2026-03-01T08:00:00Z", valueQuantity=quantity(1.1, "ng/mL")),
    )
    assert [(str(m.date), m.value) for m in facts.psa] == [
        ("2025-01-01", 0.5),
        ("2026-03-01", 1.1),
        ("2026-09-01", 2.0),
    ]


def test_reference_range_wins_over_default(valuesets):
    ranged = observation(
        (LNC, "6768-6"),
        valueQuantity=quantity(130, "U/L", "U/L"),
        referenceRange=[{"low": quantity(40, "U/L", "U/L"), "high": quantity(150, "U/L", "U/L")}],
    )
    (alp,) = facts_of(valuesets, ranged).labs["alp"]
    assert (alp.ref_low, alp.ref_high) == (40, 150)
    (default,) = facts_of(valuesets, observation((LNC, "6768-6"), valueQuantity=quantity(130, "U/L"))).labs[
        "alp"
    ]
    assert default.ref_high == 120


@pytest.mark.parametrize(
    ("code", "key", "high"), [("1920-8", "ast", 40), ("1742-6", "alt", 40), ("1975-2", "bilirubin", 1.2)]
)
def test_documented_defaults(valuesets, code, key, high):
    facts = facts_of(
        valuesets,
        observation((LNC, code), valueQuantity=quantity(1, "U/L" if key != "bilirubin" else "mg/dL")),
    )
    assert facts.labs[key][0].ref_high == high


def test_bilirubin_umol_is_converted_to_mg_per_dl(valuesets):
    facts = facts_of(
        valuesets,
        observation(
            (LNC, "1975-2"),
            valueQuantity=quantity(34.2, "umol/L", "umol/L"),
            referenceRange=[{"high": quantity(21, "umol/L", "umol/L")}],
        ),
    )
    (bili,) = facts.labs["bilirubin"]
    assert bili.value == pytest.approx(2.0, rel=1e-3)
    assert bili.ref_high == pytest.approx(1.228, rel=1e-3)
    assert bili.unit == "mg/dL"


@pytest.mark.parametrize("code", ["33914-3", "48642-3", "48643-1", "62238-1", "88293-6", "98979-8"])
def test_all_egfr_codes(valuesets, code):
    facts = facts_of(
        valuesets,
        observation((LNC, code), valueQuantity=quantity(25, "mL/min/{1.73_m2}", "mL/min/{1.73_m2}")),
    )
    assert facts.labs["egfr"][0].value == 25


def test_lab_series_oldest_first_keeps_recent_results(valuesets):
    obs = [
        observation((LNC, "33914-3"), when=f"2026-0{m}-01", valueQuantity=quantity(50 + m, "mL/min"))
        for m in range(1, 8)
    ]
    series = facts_of(valuesets, *obs).labs["egfr"]
    assert [m.value for m in series] == [55, 56, 57]  # the three most recent, oldest first


def test_psa_string_result_with_unit_is_read_but_bare_number_is_not(valuesets):
    facts = facts_of(valuesets, observation((LNC, "35741-8"), valueString="<0.01 ng/mL"))
    assert [m.value for m in facts.psa] == [0.01]
    bare = facts_of(valuesets, observation((LNC, "35741-8"), valueString="<0.01"))
    assert bare.psa == () and bare.data_issues


# --- UCUM case-insensitive spellings (cds_service.facts.units) ------------------------------------

UCUM_SYS = "http://unitsofmeasure.org"


@pytest.mark.parametrize(
    ("quantity_json", "expected"),
    [
        ({"value": 4.2, "unit": "NG/ML"}, 4.2),  # printed unit in the UCUM c/i form
        ({"value": 4.2, "system": UCUM_SYS, "code": "NG/ML"}, 4.2),  # UCUM c/i code
        ({"value": 4.2, "unit": "ng/ml"}, 4.2),
        ({"value": 4.2, "unit": "UG/L"}, 4.2),  # ug/L = ng/mL, factor 1
        ({"value": 4.2, "system": UCUM_SYS, "code": "ug/L"}, 4.2),
        ({"value": 0.1, "unit": "NMOL/L"}, 3.3),
    ],
)
def test_psa_unit_spellings_ucum_allows_give_the_same_value(valuesets, quantity_json, expected):
    facts = facts_of(valuesets, observation((LNC, "2857-1"), valueQuantity=quantity_json))
    assert [m.value for m in facts.psa] == [pytest.approx(expected)]
    assert facts.psa[0].unit == "ng/mL"
    assert not facts.data_issues


@pytest.mark.parametrize(
    "unit",
    [
        "Ng/Ml",  # mixed case: neither the c/s nor the c/i code
        "ng/ML",
        "Mg/dL",  # c/s megagram per decilitre: never folded to mg/dL
        "NG/ML/H",
        "",  # not even valid FHIR: skipped as unreadable
    ],
)
def test_units_ucum_does_not_allow_are_not_folded(valuesets, unit):
    facts = facts_of(valuesets, observation((LNC, "2857-1"), valueQuantity={"value": 4.2, "unit": unit}))
    assert facts.psa == ()
    unreadable = ("not used", "could not be read")
    assert any("PSA" in i.upper() and any(u in i for u in unreadable) for i in facts.data_issues)


def test_other_labs_read_ucum_case_insensitive_codes(valuesets):
    facts = facts_of(
        valuesets,
        observation((LNC, "1975-2"), valueQuantity={"value": 17.1, "unit": "UMOL/L"}),  # bilirubin
        observation((LNC, "6768-6"), valueQuantity={"value": 300, "unit": "U/L"}),  # ALP
        observation((LNC, "2986-8"), valueQuantity={"value": 1.0, "unit": "NMOL/L"}),  # testosterone
    )
    assert facts.labs["bilirubin"][0].value == pytest.approx(1.0, rel=1e-3)
    assert facts.labs["alp"][0].value == 300
    assert facts.labs["testosterone"][0].value == pytest.approx(28.84)


def test_case_insensitive_table_maps_onto_units_the_value_sets_list(valuesets):
    from cds_service.facts.units import CASE_INSENSITIVE

    listed = {u for vs in valuesets.sets.values() for u in vs.units}
    for ci, cs in CASE_INSENSITIVE.items():
        assert ci == ci.upper(), ci  # c/i codes are written in upper case
        assert cs in listed, f"{ci} -> {cs}: no value set lists {cs}"
        assert ci != cs or cs in {"U/L", "[IU]/L"}  # only case-free codes are their own c/i form


def test_psa_as_bare_value_string_or_without_unit_is_unreadable(valuesets):
    for value in ({"valueString": "0.4"}, {"valueQuantity": {"value": 0.4}}, {"valueString": "four"}):
        facts = facts_of(valuesets, observation((LNC, "2857-1"), **value))
        assert facts.psa == ()
        assert any(i.startswith("PSA") for i in facts.data_issues), value


def test_unreadable_lab_data_is_named_by_kind_for_the_audit(valuesets):
    # the audit keeps the kind ("labs"), never the issue text (it may quote record references)
    facts = facts_of(valuesets, observation((LNC, "2857-1"), valueQuantity=quantity(4.2, "mg/dL", "mg/dL")))
    assert facts.unreadable == ("labs",)
    clean = facts_of(valuesets, observation((LNC, "2857-1"), valueQuantity=quantity(4.2, "ng/mL", "ng/mL")))
    assert clean.unreadable == () and clean.data_issues == ()


def test_data_not_retrieved_is_named_by_prefetch_key(valuesets):
    facts = extract_facts(record(incomplete=("observations",)), valuesets)
    assert facts.unreadable == ("not-retrieved:observations",)

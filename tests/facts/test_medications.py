from datetime import date

import pytest

from cds_service.facts import extract_facts
from cds_service.protocol.fhir_client import split_bundle
from tests.facts.conftest import RXN, SCT, cc, record


def med_request(*codings, status="active", authored="2026-09-01", **extra):
    res = {
        "resourceType": "MedicationRequest",
        "id": f"m-{status}-{authored}",
        "status": status,
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "authoredOn": authored,
    }
    if codings:
        res["medicationCodeableConcept"] = cc(*codings)
    res.update(extra)
    return res


def test_clinical_drug_and_ingredient_give_the_same_fact(valuesets):
    for code in ("752899", "42375"):
        (fact,) = extract_facts(record(med_request((RXN, code))), valuesets).medications
        assert fact.ingredient == "leuprolide" and fact.classes == frozenset({"adt"})
        assert fact.start == date(2026, 9, 1) and fact.status == "active"


def test_synthea_chemotherapy_scds(valuesets):
    codes = {
        "1860480": "docetaxel",
        "1790099": "doxorubicin",
        "1734919": "cyclophosphamide",
        "583214": "paclitaxel",
        "597195": "carboplatin",
    }
    for scd, ingredient in codes.items():
        (fact,) = extract_facts(record(med_request((RXN, scd))), valuesets).medications
        assert fact.ingredient == ingredient and "chemotherapy" in fact.classes


def test_vsac_adt_clinical_drug_is_adt(valuesets):
    (fact,) = extract_facts(record(med_request((RXN, "752884"))), valuesets).medications
    assert fact.classes == frozenset({"adt"})


def test_snomed_substance(valuesets):
    (fact,) = extract_facts(record(med_request((SCT, "387003001"))), valuesets).medications
    assert fact.ingredient == "trastuzumab" and fact.classes == frozenset({"her2-targeted"})


def test_contained_medication_reference(valuesets):
    res = med_request(
        medicationReference={"reference": "#med"},
        contained=[{"resourceType": "Medication", "id": "med", "code": cc((RXN, "1307298"))}],
    )
    (fact,) = extract_facts(record(res), valuesets).medications
    assert fact.ingredient == "enzalutamide" and fact.classes == frozenset({"arpi"})


def test_referenced_medication_resource(valuesets):
    medication = {"resourceType": "Medication", "id": "abi", "code": cc((RXN, "1100072"))}
    res = med_request(medicationReference={"reference": "Medication/abi"})
    (fact,) = extract_facts(record(res, medication), valuesets).medications
    assert fact.ingredient == "abiraterone"


def test_status_filter(valuesets):
    facts = extract_facts(
        record(
            med_request((RXN, "42375"), status="cancelled"),
            med_request((RXN, "42375"), status="entered-in-error", authored="2026-01-01"),
            med_request((RXN, "42375"), status="completed", authored="2025-01-01"),
            med_request((RXN, "42375"), status="on-hold", authored="2025-06-01"),
        ),
        valuesets,
    )
    assert [m.status for m in facts.medications] == ["completed", "on-hold"]


def test_start_is_the_earliest_known_date(valuesets):
    res = med_request(
        (RXN, "42375"),
        authored="2026-09-01",
        dosageInstruction=[{"timing": {"repeat": {"boundsPeriod": {"start": "2026-08-15"}}}}],
    )
    (fact,) = extract_facts(record(res), valuesets).medications
    assert fact.start == date(2026, 8, 15)


def test_administration_and_statement(valuesets):
    admin = {
        "resourceType": "MedicationAdministration",
        "id": "a1",
        "status": "completed",
        "medicationCodeableConcept": cc((RXN, "72962")),
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2026-07-01",
    }
    statement = {
        "resourceType": "MedicationStatement",
        "id": "s1",
        "status": "active",
        "medicationCodeableConcept": cc((RXN, "10324")),
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": "2026-02-01"},
    }
    facts = extract_facts(record(admin, statement), valuesets)
    assert [(m.ingredient, m.start) for m in facts.medications] == [
        ("tamoxifen", date(2026, 2, 1)),
        ("docetaxel", date(2026, 7, 1)),
    ]


def test_unrelated_drug_is_ignored(valuesets):
    assert extract_facts(record(med_request((RXN, "313782"))), valuesets).medications == ()


# --- every encoding of the same therapy gives the same fact -----------------------------------

LEUPROLIDE_ENCODINGS = {
    "ingredient": (RXN, "42375"),
    "VSAC ADT clinical drug": (RXN, "1946519"),  # 3-Month 1.5 ML leuprolide acetate 20 MG/ML
    "SNOMED substance leuprorelin": (SCT, "397198002"),
}


def _as(rtype: str, concept_or_ref: dict, **extra) -> dict:
    res = {"resourceType": rtype, "id": f"{rtype}-1", "subject": {"reference": "Patient/p1"},
           **concept_or_ref}
    if rtype == "MedicationRequest":
        res.update(status="active", intent="order", authoredOn="2026-09-01")
    elif rtype == "MedicationAdministration":
        res.update(status="completed", effectiveDateTime="2026-09-01T10:00:00Z")
    else:
        res.update(status="active", effectivePeriod={"start": "2026-09-01"})
    res.update(extra)
    return res


def _variants(coding: tuple[str, str]) -> dict[str, tuple[dict, ...]]:
    concept = cc(coding)
    medication = {"resourceType": "Medication", "id": "drug-1", "code": concept}
    out: dict[str, tuple[dict, ...]] = {}
    for rtype in ("MedicationRequest", "MedicationAdministration", "MedicationStatement"):
        out[f"{rtype} inline"] = (_as(rtype, {"medicationCodeableConcept": concept}),)
        out[f"{rtype} contained"] = (
            _as(rtype, {"medicationReference": {"reference": "#m"},
                        "contained": [{"resourceType": "Medication", "id": "m", "code": concept}]}),
        )
        out[f"{rtype} Medication/id"] = (
            _as(rtype, {"medicationReference": {"reference": "Medication/drug-1"}}), medication)
        out[f"{rtype} absolute URL"] = (
            _as(rtype, {"medicationReference": {"reference": "https://ehr.example/fhir/Medication/drug-1"}}),
            medication,
        )
        out[f"{rtype} versioned reference"] = (
            _as(rtype, {"medicationReference": {"reference": "Medication/drug-1/_history/3"}}), medication)
        out[f"{rtype} Medication coded by its ingredient only"] = (
            _as(rtype, {"medicationReference": {"reference": "Medication/drug-2"}}),
            {"resourceType": "Medication", "id": "drug-2", "ingredient": [{"itemCodeableConcept": concept}]},
        )
    return out


@pytest.mark.parametrize("encoding", sorted(LEUPROLIDE_ENCODINGS))
def test_every_record_type_and_reference_form_gives_the_same_fact(valuesets, encoding):
    for name, resources in _variants(LEUPROLIDE_ENCODINGS[encoding]).items():
        facts = extract_facts(record(*resources), valuesets)
        assert [(m.ingredient, m.classes, m.start) for m in facts.medications] == [
            ("leuprolide", frozenset({"adt"}), date(2026, 9, 1))
        ], f"{encoding} / {name}"
        assert not facts.data_issues, name


def test_urn_uuid_medication_in_the_same_bundle_is_resolved(valuesets):
    # The protocol layer splits a prefetch Bundle; a reference to another entry's urn:uuid fullUrl
    # must still find the Medication (transaction-style exports, Synthea).
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"fullUrl": "urn:uuid:0c3f-med", "resource": {"resourceType": "Medication", "id": "0c3f-med",
                                                      "code": cc((RXN, "1307298"))}},
        {"fullUrl": "urn:uuid:9a1b-mr", "resource": _as(
            "MedicationRequest", {"medicationReference": {"reference": "urn:uuid:0c3f-med"}})},
    ]}
    resources, _ = split_bundle(bundle)
    (fact,) = extract_facts(record(*resources), valuesets).medications
    assert fact.ingredient == "enzalutamide" and fact.classes == frozenset({"arpi"})
    # the sender's own resource is left untouched
    assert bundle["entry"][1]["resource"]["medicationReference"]["reference"] == "urn:uuid:0c3f-med"


def test_a_medication_reference_that_cannot_be_resolved_is_reported(valuesets):
    unresolved = _as("MedicationRequest", {"medicationReference": {"reference": "Medication/x"}})
    facts = extract_facts(record(unresolved), valuesets)
    assert facts.medications == ()
    assert any("Medication that was not sent" in issue for issue in facts.data_issues)
    withdrawn = _as("MedicationRequest", {"medicationReference": {"reference": "Medication/x"}},
                    status="entered-in-error")
    assert not extract_facts(record(withdrawn), valuesets).data_issues


@pytest.mark.parametrize("rtype, status, kept", [
    ("MedicationRequest", "stopped", True),
    ("MedicationRequest", "unknown", True),
    ("MedicationRequest", "draft", False),
    ("MedicationRequest", "cancelled", False),
    ("MedicationRequest", "entered-in-error", False),
    ("MedicationAdministration", "in-progress", True),
    ("MedicationAdministration", "stopped", True),
    ("MedicationAdministration", "not-done", False),
    ("MedicationAdministration", "entered-in-error", False),
    ("MedicationStatement", "stopped", True),
    ("MedicationStatement", "completed", True),
    ("MedicationStatement", "not-taken", False),
    ("MedicationStatement", "intended", False),
    ("MedicationStatement", "entered-in-error", False),
])
def test_statuses_that_count(valuesets, rtype, status, kept):
    res = _as(rtype, {"medicationCodeableConcept": cc((RXN, "42375"))}, status=status)
    meds = extract_facts(record(res), valuesets).medications
    assert [m.status for m in meds] == ([status] if kept else [])


def test_orders_not_to_give_or_only_proposed_never_count(valuesets):
    concept = {"medicationCodeableConcept": cc((RXN, "42375"))}
    for extra in ({"doNotPerform": True}, {"intent": "proposal"}, {"intent": "plan"}):
        assert extract_facts(record(_as("MedicationRequest", concept, **extra)), valuesets).medications == ()
    assert extract_facts(record(_as("MedicationRequest", concept, intent="original-order")),
                         valuesets).medications


def test_vsac_chemotherapy_clinical_drugs_map_to_their_ingredient(valuesets):
    for scd, ingredient in {"1001433": "cabazitaxel", "1861411": "docetaxel", "1790095": "doxorubicin",
                            "312199": "paclitaxel", "1734917": "cyclophosphamide"}.items():
        (fact,) = extract_facts(record(med_request((RXN, scd))), valuesets).medications
        assert (fact.ingredient, fact.classes) == (ingredient, frozenset({"chemotherapy"})), scd


def test_methotrexate_is_not_chemotherapy_for_these_rules(valuesets):
    # in the VSAC chemotherapy value set, but also a rheumatology drug: left out on purpose
    assert extract_facts(record(med_request((RXN, "105585"))), valuesets).medications == ()


# --- surgical castration ------------------------------------------------------------------------

def orchiectomy(status="completed", when="2019-05-02", code="14043008"):
    return {"resourceType": "Procedure", "id": f"orch-{status}", "status": status,
            "code": cc((SCT, code)), "subject": {"reference": "Patient/p1"}, "performedDateTime": when}


def test_bilateral_orchiectomy_is_permanent_adt(valuesets):
    (fact,) = extract_facts(record(orchiectomy()), valuesets).medications
    assert fact.classes == frozenset({"adt"}) and fact.permanent
    assert fact.start == date(2019, 5, 2) and fact.label == "bilateral orchiectomy"
    assert fact.source == "Procedure/orch-completed"


@pytest.mark.parametrize("status", ["preparation", "in-progress", "not-done", "entered-in-error", "stopped"])
def test_an_orchiectomy_not_completed_is_not_castration(valuesets, status):
    assert extract_facts(record(orchiectomy(status=status)), valuesets).medications == ()


# --- the same therapy by brand, branded drug, clinical drug, ingredient or SNOMED substance -------
# Codes from the catalog's hand-listed block (cards/medications.yaml, sources codex-ctm,
# codex-ctm-bct, ch-term-substance). Each group must give one fact with the same ingredient and
# classes whichever code the EHR sent, and whichever record type carries it.

THERAPY_ENCODINGS: dict[str, tuple[str, frozenset[str], dict[str, tuple[str, str]]]] = {
    "relugolix": ("relugolix", frozenset({"adt"}), {
        "ingredient": (RXN, "2472778"),
        "SCD relugolix 120 MG Oral Tablet": (RXN, "2472783"),
        "SBD Orgovyx 120 MG Oral Tablet": (RXN, "2472789"),
        "brand Orgovyx": (RXN, "2472784"),
    }),
    "leuprolide": ("leuprolide", frozenset({"adt"}), {
        "ingredient": (RXN, "42375"),
        "precise ingredient leuprolide acetate": (RXN, "203217"),
        "SBD Lupron Depot 11.25 MG/ML (3 month)": (RXN, "1115449"),
        "SBD Eligard 30 MG/ML": (RXN, "825334"),
        "brand Lupron": (RXN, "203852"),
        "brand Eligard": (RXN, "352619"),
        "SNOMED substance leuprorelin": (SCT, "397198002"),
    }),
    "degarelix": ("degarelix", frozenset({"adt"}), {
        "ingredient": (RXN, "475230"),
        "SCD degarelix 120 MG Injection": (RXN, "828751"),
        "SBD Firmagon 120 MG Injection": (RXN, "858127"),
        "brand Firmagon": (RXN, "858122"),
        "SNOMED substance degarelix": (SCT, "441864003"),
    }),
    "triptorelin": ("triptorelin", frozenset({"adt"}), {
        "ingredient": (RXN, "38782"),
        "SBD Trelstar 22.5 MG Injection": (RXN, "905057"),
        "SNOMED substance triptorelin": (SCT, "395915003"),
    }),
    "goserelin": ("goserelin", frozenset({"adt"}), {
        "SBD Zoladex 10.8 MG Drug Implant": (RXN, "211544"),
        "brand Zoladex": (RXN, "58328"),
        "SNOMED substance goserelin": (SCT, "108771008"),
    }),
    "histrelin": ("histrelin", frozenset({"adt"}), {
        "ingredient": (RXN, "50975"),
        "SBD Vantas implant": (RXN, "1294626"),
    }),
    "abiraterone": ("abiraterone", frozenset({"arpi"}), {
        "ingredient": (RXN, "1100072"),
        "SCD abiraterone acetate 250 MG Oral Tablet": (RXN, "1100075"),
        "SBD Zytiga 500 MG Oral Tablet": (RXN, "1918044"),
        "brand Zytiga": (RXN, "1100076"),
        "SNOMED substance abiraterone": (SCT, "699678007"),
    }),
    "enzalutamide": ("enzalutamide", frozenset({"arpi"}), {
        "ingredient": (RXN, "1307298"),
        "SCD enzalutamide 40 MG Oral Capsule": (RXN, "1307303"),
        "SBD Xtandi 40 MG Oral Capsule": (RXN, "1307309"),
        "SBD Xtandi 80 MG Oral Tablet": (RXN, "2390650"),
        "brand Xtandi": (RXN, "1307304"),
        "SNOMED substance enzalutamide": (SCT, "703125003"),
    }),
    "apalutamide": ("apalutamide", frozenset({"arpi"}), {
        "ingredient": (RXN, "1999574"),
        "SCD apalutamide 60 MG Oral Tablet": (RXN, "1999581"),
        "SBD Erleada 60 MG Oral Tablet": (RXN, "1999587"),
        "brand Erleada": (RXN, "1999582"),
        "SNOMED substance apalutamide": (SCT, "766972001"),
    }),
    "darolutamide": ("darolutamide", frozenset({"arpi"}), {
        "ingredient": (RXN, "2180325"),
        "SCD darolutamide 300 MG Oral Tablet": (RXN, "2180330"),
        "SBD Nubeqa 300 MG Oral Tablet": (RXN, "2180336"),
        "brand Nubeqa": (RXN, "2180331"),
    }),
    "trastuzumab": ("trastuzumab", frozenset({"her2-targeted"}), {
        "ingredient": (RXN, "224905"),
        "SCD trastuzumab 150 MG Injection": (RXN, "1922509"),
        "SBD Herceptin 150 MG Injection": (RXN, "1922512"),
        "brand Herceptin": (RXN, "101306"),
        "biosimilar SBD Ogivri 150 MG Injection": (RXN, "2179758"),
        "biosimilar ingredient trastuzumab-dkst": (RXN, "2103478"),
        "SNOMED substance trastuzumab": (SCT, "387003001"),
    }),
    "pertuzumab": ("pertuzumab", frozenset({"her2-targeted"}), {
        "ingredient": (RXN, "1298944"),
        "SCD 14 ML pertuzumab 30 MG/ML Injection": (RXN, "1298948"),
        "SBD Perjeta 420 MG per 14 ML Injection": (RXN, "1298953"),
        "brand Perjeta": (RXN, "1298949"),
        "SNOMED substance pertuzumab": (SCT, "704226002"),
    }),
    "pembrolizumab": ("pembrolizumab", frozenset({"immunotherapy"}), {
        "ingredient": (RXN, "1547545"),
        "SCD 4 ML pembrolizumab 25 MG/ML Injection": (RXN, "1657750"),
        "SBD Keytruda 100 MG per 4 ML Injection": (RXN, "1657751"),
        "brand Keytruda": (RXN, "1547550"),
        "SNOMED substance pembrolizumab": (SCT, "716125002"),
    }),
}

_THERAPY_CASES = [(t, e) for t, (_, _, codes) in sorted(THERAPY_ENCODINGS.items()) for e in sorted(codes)]


@pytest.mark.parametrize("therapy, encoding", _THERAPY_CASES)
def test_every_code_of_a_therapy_gives_the_same_ingredient_and_class(valuesets, therapy, encoding):
    ingredient, classes, codes = THERAPY_ENCODINGS[therapy]
    (fact,) = extract_facts(record(med_request(codes[encoding])), valuesets).medications
    assert (fact.ingredient, fact.classes, fact.start) == (ingredient, classes, date(2026, 9, 1))


@pytest.mark.parametrize("encoding", ["SBD Orgovyx 120 MG Oral Tablet", "brand Orgovyx"])
def test_relugolix_by_brand_in_every_record_type_is_adt(valuesets, encoding):
    coding = THERAPY_ENCODINGS["relugolix"][2][encoding]
    for name, resources in _variants(coding).items():
        facts = extract_facts(record(*resources), valuesets)
        assert [(m.ingredient, m.classes) for m in facts.medications] == [
            ("relugolix", frozenset({"adt"}))
        ], f"{encoding} / {name}"


def test_brand_and_ingredient_codings_of_one_order_give_one_fact(valuesets):
    # all codings of a CodeableConcept are synonyms: SBD + SCD + SNOMED on one order = one therapy
    res = med_request((RXN, "1307309"), (RXN, "1307303"), (SCT, "703125003"))
    facts = extract_facts(record(res), valuesets).medications
    assert [(m.ingredient, m.classes) for m in facts] == [("enzalutamide", frozenset({"arpi"}))]


def test_phesgo_is_both_her2_agents(valuesets):
    # Phesgo = pertuzumab + trastuzumab + hyaluronidase (one injection, two HER2-targeted agents)
    facts = extract_facts(record(med_request((RXN, "2382609"))), valuesets).medications
    assert sorted((m.ingredient, m.classes) for m in facts) == [
        ("pertuzumab", frozenset({"her2-targeted"})), ("trastuzumab", frozenset({"her2-targeted"})),
    ]


@pytest.mark.parametrize("code, what", [
    ("2556799", "relugolix 40 MG / estradiol / norethindrone (Myfembree, uterine fibroids)"),
    ("2556803", "Myfembree brand"),
    ("1488617", "Lupaneta Pack (leuprolide + norethindrone, endometriosis)"),
    ("1658087", "KADCYLA 100 MG Injection (ado-trastuzumab emtansine, another agent)"),
])
def test_look_alike_products_are_not_mapped(valuesets, code, what):
    assert extract_facts(record(med_request((RXN, code))), valuesets).medications == (), what

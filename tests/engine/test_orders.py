"""Draft orders -> imaging studies: code systems, sandbox quirks, combined studies, PET tracers."""

from __future__ import annotations

import pytest

from cds_service.engine.orders import studies_to_rate
from tests.engine.builders import CPT, HCPCS, KNOWLEDGE, LOINC, SNOMED, cpt, service_request

CATALOG = KNOWLEDGE.catalog


def study_ids(*orders, hook="order-sign", selections=()):
    return [s.procedure_id for s in studies_to_rate(hook, orders, selections, CATALOG)]


@pytest.mark.parametrize(
    ("system", "code", "expected"),
    [
        (CPT, "78306", "bone-scan-whole-body"),
        (LOINC, "24587-8", "mri-brain-wwo"),
        (SNOMED, "241615005", "mri-breast-wwo"),
        (CPT, "70450", "ct-head-wo"),
        ("https://www.ama-assn.org/go/cpt", "70553", "mri-brain-wwo"),
    ],
)
def test_recognises_cpt_loinc_and_snomed_codes(system, code, expected):
    assert study_ids(service_request("o1", (system, code))) == [expected]


def test_all_codings_are_synonyms_and_display_text_is_ignored():
    order = service_request("o1", ("http://example.org/local", "BS1"), (CPT, "78306"))
    order["code"]["text"] = "MRI brain"
    assert study_ids(order) == ["bone-scan-whole-body"]


def test_non_imaging_orders_are_ignored():
    med = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "draft",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "617993"}]
        },
    }
    lab = service_request("lab", (LOINC, "2857-1"))
    assert study_ids(med, lab) == []


def test_sandbox_quirks_do_not_break_recognition():
    blank = service_request("blank", (CPT, "78306"))
    blank["code"] = {"coding": [{}]}
    single = cpt(
        "single",
        "78306",
        category={"coding": [{"system": SNOMED, "code": "363679005"}]},
        reasonCode={"coding": [{"system": SNOMED, "code": "12584003"}]},
    )
    single.pop("intent")
    assert study_ids(blank, single, "not a resource") == ["bone-scan-whole-body"]


def test_unknown_code_on_an_imaging_order_is_imaging_but_unresolved():
    knee = cpt("knee", "73721")
    [study] = studies_to_rate("order-sign", [knee], (), CATALOG)
    assert study.procedure_id is None and "not in the procedure catalog" in study.unresolved_reason


def test_order_without_id_cannot_be_rated():
    order = cpt("x", "78306")
    order.pop("id")
    assert study_ids(order) == []


def test_ct_chest_plus_ct_abdomen_pelvis_with_contrast_is_one_ct_cap_study():
    [study] = studies_to_rate("order-sign", [cpt("ch", "71260"), cpt("ap", "74177")], (), CATALOG)
    assert study.procedure_id == "ct-cap-contrast"
    assert study.references == ("ServiceRequest/ch", "ServiceRequest/ap")


def test_non_contrast_pair_and_unpaired_parts():
    assert study_ids(cpt("a", "71250"), cpt("b", "74176")) == ["ct-cap-noncontrast"]
    assert study_ids(cpt("a", "71260"), cpt("b", "74176")) == [
        "ct-chest-contrast",
        "ct-abdomen-pelvis-noncontrast",
    ]


def test_three_spine_segments_make_a_whole_spine_mri():
    assert study_ids(cpt("c", "72156"), cpt("t", "72157"), cpt("l", "72158")) == ["mri-spine-whole-wwo"]


def test_order_select_rates_the_selected_order_with_its_partner():
    [study] = studies_to_rate(
        "order-select",
        [cpt("ch", "71260"), cpt("ap", "74177"), cpt("bs", "78306")],
        ["ServiceRequest/ap"],
        CATALOG,
    )
    assert study.procedure_id == "ct-cap-contrast"
    assert [o.reference for o in study.to_rate] == ["ServiceRequest/ap"]


@pytest.mark.parametrize(
    ("orders", "expected"),
    [
        ([service_request("pet", (CPT, "78815"), (HCPCS, "A9595"))], "psma-pet-ct"),
        ([cpt("pet", "78815", orderDetail=[{"coding": [{"system": HCPCS, "code": "A9552"}]}])], "fdg-pet-ct"),
        (
            [
                cpt("pet", "78816"),
                {
                    "resourceType": "MedicationRequest",
                    "id": "rx",
                    "status": "draft",
                    "medicationCodeableConcept": {
                        "coding": [
                            {
                                "system": "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                                "code": "A9588",
                            }
                        ]
                    },
                },
            ],
            "fluciclovine-pet-ct",
        ),
        ([cpt("pet", "78815"), service_request("tr", (HCPCS, "A9593"))], "psma-pet-ct"),
    ],
)
def test_pet_tracer_is_resolved_from_codings_detail_or_companion_order(orders, expected):
    assert study_ids(*orders) == [expected]


def test_pet_without_a_coded_tracer_is_flagged_not_assumed():
    [study] = studies_to_rate("order-sign", [service_request("pet", (SNOMED, "443897008"))], (), CATALOG)
    assert study.procedure_id == "pet-ct-unspecified-tracer"
    assert study.tracer is None and "not coded" in study.unresolved_reason


def test_conflicting_tracers_are_flagged():
    order = cpt(
        "pet",
        "78815",
        orderDetail=[
            {"coding": [{"system": HCPCS, "code": "A9595"}]},
            {"coding": [{"system": HCPCS, "code": "A9552"}]},
        ],
    )
    [study] = studies_to_rate("order-sign", [order], (), CATALOG)
    assert study.procedure_id == "pet-ct-unspecified-tracer" and "conflicting" in study.unresolved_reason

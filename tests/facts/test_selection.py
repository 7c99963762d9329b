import logging

from cds_service.facts import extract_facts
from cds_service.facts.selection import select
from tests.facts.conftest import ICD, LNC, condition, observation, quantity, record


def test_invalid_selected_resource_is_skipped_with_a_log_line_and_an_issue(valuesets, caplog):
    bad = observation((LNC, "2857-1"), valueQuantity=quantity(4.2, "ng/mL"))
    bad["effectiveDateTime"] = "yesterday"  # not a FHIR dateTime
    bad["id"] = "secret-id-123"
    good = observation((LNC, "2857-1"), when="2026-01-01", valueQuantity=quantity(1.0, "ng/mL"))
    with caplog.at_level(logging.WARNING, logger="cds_service.facts.selection"):
        facts = extract_facts(record(bad, good), valuesets)
    assert [m.value for m in facts.psa] == [1.0]
    assert any("could not be read" in i for i in facts.data_issues)
    assert "Observation" in caplog.text and "secret-id-123" not in caplog.text


def test_unrelated_resources_are_not_validated(valuesets):
    # invalid but irrelevant: never validated, so no issue
    junk = {
        "resourceType": "Observation",
        "id": "x",
        "code": {"coding": [{"system": LNC, "code": "8302-2"}]},
        "effectiveDateTime": "garbage",
    }
    assert extract_facts(record(junk), valuesets).data_issues == ()


def test_selection_keeps_only_matching_resources(valuesets):
    chosen = select(
        record(
            condition((ICD, "C61")),
            condition((ICD, "J20.9")),
            observation((LNC, "2857-1"), valueQuantity=quantity(1, "ng/mL")),
            observation((LNC, "8302-2"), valueQuantity=quantity(180, "cm")),
        ),
        valuesets,
    )
    assert len(chosen.conditions) == 1 and len(chosen.observations) == 1
    assert "prostate-cancer" in chosen.conditions[0].ids


def test_snomed_code_in_loinc_system_is_not_matched_but_reported(valuesets):
    # Synthea quirk: a SNOMED code (bone pain 12584003) sent with system http://loinc.org
    res = condition((LNC, "12584003"))
    facts = extract_facts(record(res), valuesets)
    assert "bone-pain" not in facts.concepts
    assert any("labelled LOINC" in i for i in facts.data_issues)


def test_only_elements_the_rules_read_are_validated(valuesets):
    # a malformed element nobody reads (category must be a list) does not cost us the PSA value
    obs = observation((LNC, "2857-1"), valueQuantity=quantity(2.5, "ng/mL"), category="laboratory")
    facts = extract_facts(record(obs), valuesets)
    assert [m.value for m in facts.psa] == [2.5]


def test_warm_up_runs():
    from cds_service.facts import warm_up

    warm_up()


def test_a_cached_verdict_still_skips_and_logs_the_invalid_resource(valuesets, caplog):
    from cds_service.facts.selection import clear_verdicts

    clear_verdicts()
    bad = observation((LNC, "2857-1"), valueQuantity=quantity(4.2, "ng/mL"))
    bad["effectiveDateTime"] = "yesterday"
    for _ in range(2):  # the second pass answers from the verdict cache
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cds_service.facts.selection"):
            facts = extract_facts(record(bad), valuesets)
        assert facts.psa == ()
        assert any("could not be read" in i for i in facts.data_issues)
        assert "skipped invalid Observation" in caplog.text


def test_verdict_cache_is_keyed_by_content_and_bounded(valuesets, monkeypatch):
    from cds_service.facts import selection

    selection.clear_verdicts()
    monkeypatch.setattr(selection, "VERDICT_CACHE_SIZE", 2)
    good = observation((LNC, "2857-1"), when="2026-01-01", valueQuantity=quantity(1.0, "ng/mL"))
    # an extension on a read element: not a plain shape, so the model is asked (and cached)
    good["code"]["coding"][0]["extension"] = [{"url": "http://example.org/x", "valueString": "y"}]
    assert selection.is_valid(good)
    # same id, one element now malformed: a new verdict, not the cached one
    assert not selection.is_valid({**good, "effectiveDateTime": "yesterday"})
    assert selection.is_valid({**good, "id": "other"})
    assert len(selection._verdicts) == 2


def test_only_the_first_reference_range_bounds_are_validated(valuesets):
    # labs read low/high of the first range only; a malformed second range does not cost the value
    obs = observation(
        (LNC, "2857-1"),
        valueQuantity=quantity(2.5, "ng/mL"),
        referenceRange=[{"high": quantity(4, "ng/mL")}, {"high": "four"}],
    )
    facts = extract_facts(record(obs), valuesets)
    assert [m.value for m in facts.psa] == [2.5] and facts.psa[0].ref_high == 4.0


def _order(**medication):
    return {"resourceType": "MedicationRequest", "id": "mr-1", "status": "active", "intent": "order",
            "subject": {"reference": "Patient/p1"}, "authoredOn": "2026-09-01", **medication}


RXN = "http://www.nlm.nih.gov/research/umls/rxnorm"
LEUPROLIDE = {"coding": [{"system": RXN, "code": "42375"}]}


def test_medication_records_are_selected_by_the_drug_behind_their_reference(valuesets):
    chosen = select(record(
        _order(medicationReference={"reference": "Medication/d1"}),
        {"resourceType": "Medication", "id": "d1", "code": LEUPROLIDE},
    ), valuesets)
    assert [(h.resource["id"], h.ids) for h in chosen.medications] == [("mr-1", frozenset({"leuprolide"}))]


def test_odd_medication_shapes_are_not_read_and_do_not_crash(valuesets):
    # non-R4 shapes seen in sandboxes: a bare string reference, contained as an object, no reference
    odd = [
        _order(medicationReference="Medication/d1"),
        _order(medicationReference={"reference": "#m"}, contained={"resourceType": "Medication", "id": "m"}),
        _order(medicationReference={"display": "leuprolide"}),  # display is never matched
        _order(medicationCodeableConcept={"coding": {"system": RXN, "code": "42375"}}),
    ]
    for resource in odd:
        assert extract_facts(record(resource), valuesets).medications == ()

import re

import pytest

from cds_service.facts.selection import KINDS, MEDICATION_TYPES, SYMPTOM_SETS
from cds_service.knowledge import DEFAULT_CARDS_DIR
from cds_service.knowledge.valuesets import LOINC, SNOMED, load_valuesets
from cds_service.protocol.discovery import (
    PrefetchConfigError,
    load_prefetch_templates,
    prefetch_codes,
)

TOKEN = re.compile(r"\{\{([^{}]+)\}\}")
ALLOWED_TOKENS = {"context.patientId", "context.userId", "context.encounterId", "userPractitionerId",
                  "userPractitionerRoleId", "userPatientId", "userRelatedPersonId"}


def test_discovery_lists_both_services(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = {s["id"]: s for s in response.get_json()["services"]}
    assert services["imaging-appropriateness"]["hook"] == "order-select"
    assert services["imaging-appropriateness-sign"]["hook"] == "order-sign"
    for service in services.values():
        for field in ("title", "description", "usageRequirements", "prefetch"):
            assert isinstance(service[field], str | dict) and service[field], field


def test_prefetch_templates_cover_what_the_logic_reads(client):
    prefetch = client.get("/cds-services").get_json()["services"][0]["prefetch"]
    types = {query.split("?")[0].split("/")[0] for query in prefetch.values()}
    assert types == {"Patient", "Condition", "Observation", "MedicationRequest",
                     "MedicationAdministration", "MedicationStatement", "Procedure", "DiagnosticReport"}
    assert prefetch["patient"] == "Patient/{{context.patientId}}"


def test_every_medication_record_type_is_asked_for_with_its_medication():
    # A drug coded only on a referenced Medication is invisible unless the Medication comes along.
    templates = load_prefetch_templates()
    by_type = {t.resource_type: t.query for t in templates.values()}
    for rtype in MEDICATION_TYPES:
        assert f"_include={rtype}:medication" in by_type[rtype], rtype
        assert "code=" not in by_type[rtype]  # stopped and Medication-coded records are needed too


def test_every_search_template_asks_for_a_page_size(client):
    # Without `_count` a server pages at its default (often 20): a 2,000-resource chart then costs
    # one round trip per page instead of one or two (issue 11).
    prefetch = client.get("/cds-services").get_json()["services"][0]["prefetch"]
    for key, query in prefetch.items():
        if "?" in query:
            counts = re.findall(r"[?&]_count=(\d+)(?:&|$)", query)
            assert len(counts) == 1 and 100 <= int(counts[0]) <= 1000, key


def test_prefetch_tokens_are_2_0_form_only(client):
    for service in client.get("/cds-services").get_json()["services"]:
        for query in service["prefetch"].values():
            tokens = set(TOKEN.findall(query))
            assert tokens and tokens <= ALLOWED_TOKENS, query


def test_observation_templates_ask_for_the_agreed_codes():
    codes = prefetch_codes()
    for loinc in ("2857-1", "83112-3", "6768-6", "2160-0", "62238-1", "2986-8", "16112-5", "48676-1",
                  "35266-6", "21908-9"):
        assert ("http://loinc.org", loinc) in codes
    assert ("http://snomed.info/sct", "399537006") in codes
    templates = load_prefetch_templates()
    assert "code=http://loinc.org|2857-1," in templates["observations"].query


def observation_codes_read() -> set[tuple[str, str]]:
    """(system, code) of every LOINC / SNOMED CT code the facts stage selects Observations by."""
    valuesets = load_valuesets(DEFAULT_CARDS_DIR)
    return {
        (entry.system, entry.code)
        for vs in valuesets.sets.values()
        if vs.kind in KINDS["Observation"] or vs.id in SYMPTOM_SETS  # symptoms recorded as Observations
        for entry in vs.codes
        if entry.system in {LOINC, SNOMED} and entry.code and not entry.exclude
    }


def test_every_observation_code_read_is_requested_by_a_template():
    # A code no template asks for is silently missing whenever the EHR fills prefetch.
    missing = observation_codes_read() - prefetch_codes()
    assert not missing, f"add to cards/prefetch.yaml: {sorted(missing)}"


def test_templates_ask_only_for_observation_codes_something_reads():
    unread = prefetch_codes() - observation_codes_read()
    assert not unread, f"no value set reads these; remove from cards/prefetch.yaml: {sorted(unread)}"


def test_symptom_templates_ask_for_every_symptom_value_set_by_code_and_by_value():
    valuesets = load_valuesets(DEFAULT_CARDS_DIR)
    templates = load_prefetch_templates()
    by_code, by_value = templates["symptom-observations"], templates["symptom-findings"]
    symptom_codes = {
        (e.system, e.code) for set_id in SYMPTOM_SETS & set(valuesets.sets)
        for e in valuesets.sets[set_id].codes if e.system in {LOINC, SNOMED} and e.code and not e.exclude
    }
    assert set(valuesets.sets) >= SYMPTOM_SETS  # every symptom value set the facts stage reads exists
    assert set(by_code.codes) == set(by_value.codes) == symptom_codes
    assert "&code=" in by_code.query and "&value-concept=" in by_value.query
    assert "http://snomed.info/sct|102568007" in by_value.query  # leg paresis as a finding's value


def test_a_template_naming_an_unknown_value_set_is_refused(tmp_path):
    (tmp_path / "valuesets").mkdir()
    (tmp_path / "prefetch.yaml").write_text(
        "templates:\n  patient:\n    query: 'Patient/{{context.patientId}}'\n    required: true\n"
        "  s:\n    query: 'Observation?patient={{context.patientId}}'\n    valuesets: [no-such-set]\n"
    )
    with pytest.raises(PrefetchConfigError, match="no-such-set"):
        load_prefetch_templates(tmp_path)


def test_templates_with_a_1_0_style_token_are_refused(tmp_path):
    (tmp_path / "prefetch.yaml").write_text(
        "templates:\n  patient:\n    query: 'Patient/{{Patient.id}}'\n    required: true\n"
    )
    with pytest.raises(PrefetchConfigError, match="not 2.0"):
        load_prefetch_templates(tmp_path)


def test_templates_without_a_required_patient_read_are_refused(tmp_path):
    (tmp_path / "prefetch.yaml").write_text(
        "templates:\n  conditions:\n    query: 'Condition?patient={{context.patientId}}'\n"
    )
    with pytest.raises(PrefetchConfigError, match="Patient"):
        load_prefetch_templates(tmp_path)


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"

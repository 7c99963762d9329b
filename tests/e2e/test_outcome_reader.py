"""The e2e checker itself: it reads a response shaped as issue 3 specifies and fails on a wrong one."""

from __future__ import annotations

import copy
import json
import uuid

import pytest
from e2e_support import CASES_DIR, Outcome, check

PAMA = "http://fhir.org/argonaut/StructureDefinition/pama-rating"
CASE = json.loads((CASES_DIR / "prostate-bcr-post-prostatectomy-bone-scan.json").read_text())
IDS = {"bone-scan-whole-body-cpt": "bone-scan-1"}


def response(pama: str = "appropriate", pitfall: str = "low-psa-conventional-imaging-low-yield") -> dict:
    return {
        "cards": [{
            "uuid": str(uuid.uuid4()), "indicator": "warning", "summary": "Bone scan: low yield at PSA 0.4",
            "source": {"label": "x"},
            "links": [{"label": "rule", "type": "absolute", "url": f"http://svc/rules/{pitfall}"},
                      {"label": "scenario", "type": "absolute",
                       "url": "http://svc/rules/prostate-biochemical-recurrence"}],
            "suggestions": [{"uuid": str(uuid.uuid4()), "label": "PSMA PET/CT", "isRecommended": True,
                             "actions": [
                                 {"type": "delete", "description": "remove",
                                  "resourceId": ["ServiceRequest/x"]},
                                 {"type": "create", "description": "order", "resource": {
                                     "resourceType": "ServiceRequest", "status": "draft", "intent": "order",
                                     "code": {"coding": [
                                         {"system": "http://www.ama-assn.org/go/cpt", "code": "78815"},
                                         {"system": "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                                          "code": "A9595"}]}}}]}],
        }],
        "systemActions": [{"type": "update", "description": "rating", "resource": {
            "resourceType": "ServiceRequest", "id": "bone-scan-1", "extension": [
                {"url": PAMA, "valueCodeableConcept": {"coding": [{"code": pama}]}},
                {"url": "https://cds-imaging-appropriateness.org/fhir/StructureDefinition/appropriateness",
                 "extension": [{"url": "acr-category", "valueCode": "may-be-appropriate"},
                               {"url": "scenario", "valueString": "prostate-biochemical-recurrence"}]}]}}],
    }


def test_reads_ratings_rules_and_suggested_procedures():
    out = Outcome.read(response())
    assert out.ratings["bone-scan-1"]["pama"] == "appropriate"
    assert {"low-psa-conventional-imaging-low-yield", "prostate-biochemical-recurrence"} <= out.rules
    indicator, _, suggested = out.cards[0]
    assert indicator == "warning"
    assert suggested == {"psma-pet-ct"}  # CPT 78815 + HCPCS A9595 tracer


def test_matching_response_passes():
    check(CASE, IDS, 200, response())


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["systemActions"][0]["resource"]["extension"][0]["valueCodeableConcept"]["coding"][0]
     .update(code="not-appropriate"), "rated"),
    (lambda r: r["cards"][0]["links"].pop(0), "pitfall low-psa"),
    (lambda r: r["cards"][0]["links"].pop(1) and r["systemActions"][0]["resource"]["extension"].pop(1),
     "expected scenario"),
    (lambda r: r["cards"][0].update(indicator="info"), "card"),
    (lambda r: r["cards"].append(dict(r["cards"][0], uuid="x", indicator="critical", links=[
        {"url": "http://svc/rules/red-flag-cord-compression"}])), "must not fire"),
])
def test_wrong_responses_fail(mutate, message):
    body = copy.deepcopy(response())
    mutate(body)
    with pytest.raises(AssertionError, match=message):
        check(CASE, IDS, 200, body)


def test_http_error_fails():
    with pytest.raises(AssertionError, match="HTTP 500"):
        check(CASE, IDS, 500, {})

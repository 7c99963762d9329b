"""The 2.0 response contract: each rule caught, and the path from EngineResult to the wire."""

import copy

import pytest

from cds_service.model import EngineResult
from cds_service.protocol.response import ResponseContractError, build_body, enforce_contract
from cds_service.protocol.validator import prune_empty, validate_response

from .conftest import full_prefetch, hook_request, service_request

RATED_ORDER = {
    **service_request(),
    "extension": [
        {"url": "http://fhir.org/argonaut/Extension/pama-rating",
         "valueCodeableConcept": {"coding": [{"system": "http://fhir.org/argonaut/CodeSystem/pama-rating",
                                              "code": "appropriate"}]}},
        {"url": "http://fhir.org/argonaut/Extension/pama-rating-consult-id",
         "valueUri": "urn:uuid:00000000-0000-4000-8000-000000000000"},
    ],
}
ACTION = {"type": "update", "description": "Record the appropriateness rating on the order",
          "resource": RATED_ORDER}


def good_card(uuid="card-1"):
    return {
        "uuid": uuid,
        "summary": "Whole-body bone scan is usually appropriate here",
        "indicator": "info",
        "detail": "**Why:** metastatic prostate cancer on ADT with rising PSA.",
        "source": {"label": "Oncology imaging appropriateness", "url": "http://localhost/rules/r1",
                   "topic": {"system": "http://example.org/topics", "code": "r1"}},
        "suggestions": [{"label": "Order PSMA PET/CT instead", "uuid": f"{uuid}-s1", "isRecommended": True,
                         "actions": [{"type": "update", "description": "Replace the study",
                                      "resource": service_request()}]}],
        "selectionBehavior": "at-most-one",
        "overrideReasons": [{"system": "http://example.org/override", "code": "patient-preference",
                             "display": "Patient preference"}],
        "links": [{"label": "Why this rating", "url": "http://localhost/rules/r1", "type": "absolute"}],
    }


def good_body():
    return {"cards": [good_card()], "systemActions": [ACTION], "extension": {"systemActions": [ACTION]}}


def test_valid_bodies_pass():
    assert validate_response({"cards": []}) == []
    assert validate_response(good_body()) == []


def broken(mutator):
    body = copy.deepcopy(good_body())
    mutator(body)
    return body


def card(body):
    return body["cards"][0]


@pytest.mark.parametrize(
    ("mutator", "fragment"),
    [
        (lambda b: b.pop("cards"), "cards: required"),
        (lambda b: b.update(cards={}), "cards: must be an array"),
        (lambda b: b.update(other=1), "not a CDS Hooks response member"),
        (lambda b: card(b).update(detail=None), "null is not allowed"),
        (lambda b: card(b).update(detail=""), "empty string"),
        (lambda b: card(b).update(links=[]), "empty array"),
        (lambda b: card(b)["source"].update(topic={}), "empty object"),
        (lambda b: b.update(systemActions=[]), "empty array"),
        (lambda b: card(b).update(summary="x" * 140), "must be under 140"),
        (lambda b: card(b).pop("summary"), "summary: required"),
        (lambda b: card(b).update(indicator="hard-stop"), "indicator"),
        (lambda b: card(b).pop("source"), "source: required"),
        (lambda b: card(b)["source"].pop("label"), "source.label"),
        (lambda b: card(b)["source"].update(url="/rules/r1"), "absolute URL"),
        (lambda b: card(b).pop("uuid"), "cards[0].uuid"),
        (lambda b: card(b)["suggestions"][0].pop("uuid"), "suggestions[0].uuid"),
        (lambda b: card(b).pop("selectionBehavior"), "cds-resp-6"),
        (lambda b: card(b).update(selectionBehavior="all"), "selectionBehavior: must be one of"),
        (lambda b: card(b)["suggestions"].append(
            {"label": "Also", "uuid": "s2", "isRecommended": True}), "cds-resp-1"),
        (lambda b: card(b)["suggestions"][0].pop("label"), "label: required"),
        (lambda b: card(b)["suggestions"][0]["actions"][0].pop("description"), "cds-resp-5"),
        (lambda b: b["systemActions"][0].pop("description"), "cds-resp-5"),
        (lambda b: b["extension"]["systemActions"][0].pop("description"), "extension.systemActions[0]"),
        (lambda b: b["systemActions"][0].update(type="patch"), "type: must be one of"),
        (lambda b: b["systemActions"][0].pop("resource"), "resource is required"),
        (lambda b: b["systemActions"][0]["resource"].pop("id"), "update needs the id"),
        (lambda b: b["systemActions"].append({"type": "delete", "description": "Remove"}), "cds-resp-2"),
        (lambda b: b["systemActions"].append({"type": "delete", "description": "Remove",
                                              "resource": "ServiceRequest/1"}), "cds-resp-2"),
        (lambda b: card(b)["overrideReasons"][0].pop("display"), "cds-resp-4"),
        (lambda b: card(b)["links"][0].update(appContext="x"), "cds-resp-3"),
        (lambda b: card(b)["links"][0].update(type="web"), "links[0].type"),
        (lambda b: card(b)["links"][0].pop("url"), "links[0].url"),
        (lambda b: card(b)["links"][0].update(autolaunchable="yes"), "autolaunchable"),
        (lambda b: b["cards"].append(good_card()), "unique"),
        (lambda b: b["systemActions"][0]["resource"]["extension"][0]["valueCodeableConcept"]["coding"][0]
         .update(code="no-guidelines-apply"), "pama-rating"),
    ],
)
def test_each_rule_is_caught(mutator, fragment):
    problems = validate_response(broken(mutator))
    assert any(fragment in p for p in problems), problems


def test_summary_of_139_characters_is_fine():
    body = broken(lambda b: card(b).update(summary="x" * 139))
    assert validate_response(body) == []


def test_delete_with_resource_id_is_fine():
    body = broken(lambda b: b["systemActions"].append(
        {"type": "delete", "description": "Remove the order", "resourceId": "ServiceRequest/sr-1"}))
    assert validate_response(body) == []


def test_build_body_puts_actions_in_both_places_and_omits_empties():
    assert build_body(EngineResult()) == {"cards": []}
    body = build_body(EngineResult(cards=(good_card(),), system_actions=(ACTION,)))
    assert body["systemActions"] == body["extension"]["systemActions"] == [ACTION]
    assert validate_response(body) == []


def test_echoed_sandbox_orders_are_pruned_of_empty_members():
    sloppy = {**RATED_ORDER, "reasonCode": [], "code": {"coding": [{}], "text": "Bone scan"}, "note": None}
    body = build_body(EngineResult(system_actions=({**ACTION, "resource": sloppy},)))
    assert validate_response(body) == []
    resource = body["systemActions"][0]["resource"]
    assert "reasonCode" not in resource and resource["code"] == {"text": "Bone scan"}


def test_prune_keeps_false_and_zero():
    assert prune_empty({"a": False, "b": 0, "c": "", "d": [None, {}, 1]}) == {"a": False, "b": 0, "d": [1]}


def test_strict_mode_raises_and_lenient_mode_drops_only_the_offending_items():
    bad = {**good_card("bad"), "summary": "x" * 200}
    body = build_body(EngineResult(cards=(good_card("ok"), bad), system_actions=(ACTION,)))
    with pytest.raises(ResponseContractError, match="under 140"):
        enforce_contract(body, strict=True)
    fixed, problems = enforce_contract(body, strict=False)
    assert problems
    assert [c["uuid"] for c in fixed["cards"]] == ["ok"]
    assert fixed["systemActions"] == [ACTION]
    assert validate_response(fixed) == []


def test_every_response_is_checked_on_the_wire(make_app, monkeypatch):
    bad = {**good_card(), "summary": "x" * 200}
    monkeypatch.setattr("cds_service.engine.evaluate", lambda *_: EngineResult(cards=(bad,)))
    body = hook_request(prefetch=full_prefetch())
    with pytest.raises(ResponseContractError):
        make_app().test_client().post("/cds-services/imaging-appropriateness", json=body)
    lenient = make_app(strict_responses=False).test_client()
    response = lenient.post("/cds-services/imaging-appropriateness", json=body)
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}


def test_engine_cards_reach_the_client_unchanged(make_app, monkeypatch):
    result = EngineResult(cards=(good_card(),), system_actions=(ACTION,), rule_ids=("r1",))
    monkeypatch.setattr("cds_service.engine.evaluate", lambda *_: result)
    response = make_app().test_client().post("/cds-services/imaging-appropriateness",
                                             json=hook_request(prefetch=full_prefetch()))
    assert response.status_code == 200
    assert response.get_json() == good_body()

import copy
import json

import pytest

from .conftest import (
    example,
    full_prefetch,
    hook_request,
    patient,
    sandbox_request,
    service_request,
    service_url,
)

SELECT = "/cds-services/imaging-appropriateness"
SIGN = "/cds-services/imaging-appropriateness-sign"


def assert_outcome(response, status, fragment):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert fragment in body["issue"][0]["diagnostics"]
    assert "Traceback" not in response.get_data(as_text=True)


def test_spec_order_select_example_gets_200(client):
    response = client.post(SELECT, json=example("spec-order-select"))
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}  # no ServiceRequest: nothing to rate, no data needed


def test_spec_order_sign_example_gets_200(client):
    response = client.post(SIGN, json=example("spec-order-sign"))
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}


def test_argonaut_imaging_example_gets_200_with_data_from_its_fhir_server(make_app):
    import responses

    body = example("argonaut-pama-order-select")
    app = make_app(fhir_allowed_hosts=("http://hooks.smarthealthit.org:9080",))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        base = "http://hooks.smarthealthit.org:9080"
        mock.get(f"{base}/Patient/MRI-59879846", json=patient("MRI-59879846"))
        for rtype in ("Condition", "Observation", "MedicationRequest", "Procedure", "DiagnosticReport"):
            mock.get(f"{base}/{rtype}", json={"resourceType": "Bundle", "type": "searchset"})
        response = app.test_client().post(SELECT, json=body)
    assert response.status_code == 200
    assert isinstance(response.get_json()["cards"], list)


def test_sandbox_shaped_request_gets_200(client):
    response = client.post(SELECT, json=sandbox_request())
    assert response.status_code == 200
    assert isinstance(response.get_json()["cards"], list)


def test_draft_orders_are_passed_on_as_sent(make_app, monkeypatch):
    seen = {}

    def capture(request, record, knowledge, options=None):
        from cds_service.model import EngineResult

        seen["request"] = request
        return EngineResult()

    monkeypatch.setattr("cds_service.engine.evaluate", capture)
    body = sandbox_request()
    body["context"]["draftOrders"]["entry"].append({"resource": {"resourceType": "Practitioner", "id": "x"}})
    body["context"]["draftOrders"]["entry"].append({"fullUrl": "no resource"})
    response = make_app().test_client().post(SELECT, json=body)
    assert response.status_code == 200
    request = seen["request"]
    assert [r["resourceType"] for r in request.draft_orders] == ["ServiceRequest", "Practitioner"]
    sent = body["context"]["draftOrders"]["entry"][0]["resource"]
    assert request.draft_orders[0] == sent
    assert request.selections == ("ServiceRequest/example-request-id",)
    assert request.base_url == "http://localhost"
    assert request.user_id == "Practitioner/COREPRACTITIONER1"


def test_public_base_url_is_passed_to_the_engine(make_app, monkeypatch):
    from cds_service.model import EngineResult

    seen = {}

    def capture(request, _record, _knowledge, _options=None):
        seen["r"] = request
        return EngineResult()

    monkeypatch.setattr("cds_service.engine.evaluate", capture)
    app = make_app(public_base_url="https://cds.example.org")
    app.test_client().post(SELECT, json=hook_request(prefetch=full_prefetch()))
    assert seen["r"].base_url == "https://cds.example.org"


def mutate(path, value):
    body = hook_request(prefetch=full_prefetch())
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (("hook",), KeyError, "hook is required"),
        (("hook",), "order-sign", "does not match service"),
        (("hook",), 7, "hook must be a non-empty string"),
        (("hookInstance",), KeyError, "hookInstance is required"),
        (("hookInstance",), "", "hookInstance must be a non-empty string"),
        (("context",), KeyError, "context is required"),
        (("context",), [], "context is required and must be a JSON object"),
        (("context", "userId"), KeyError, "context.userId is required"),
        (("context", "patientId"), KeyError, "context.patientId is required"),
        (("context", "patientId"), "../Patient/x?", "context.patientId must be a FHIR id"),
        (("context", "draftOrders"), KeyError, "context.draftOrders is required"),
        (("context", "draftOrders"), "Bundle", "must be a FHIR Bundle"),
        (("context", "draftOrders"), {"resourceType": "ServiceRequest"}, "must be a Bundle"),
        (("context", "draftOrders", "entry"), {"resource": {}}, "entry must be an array"),
        (("context", "selections"), KeyError, "context.selections is required"),
        (("context", "selections"), "ServiceRequest/sr-1", "must be an array"),
        (("context", "selections"), ["ServiceRequest/nowhere"], "is not in context.draftOrders"),
    ],
)
def test_invalid_requests_get_400_saying_what_is_wrong(client, path, value, fragment):
    assert_outcome(client.post(SELECT, json=mutate(path, value)), 400, fragment)


def test_body_that_is_not_an_object_gets_400(client):
    assert_outcome(client.post(SELECT, json=["order-select"]), 400, "JSON object")


def test_malformed_json_gets_400(client):
    response = client.post(SELECT, data="{not json", content_type="application/json")
    assert_outcome(response, 400, "not valid JSON")


def test_non_json_content_type_gets_415(client):
    response = client.post(SELECT, data="hook=order-select", content_type="application/x-www-form-urlencoded")
    assert_outcome(response, 415, "application/json")


def test_unknown_service_gets_404(client):
    assert_outcome(client.post("/cds-services/nope", json=hook_request()), 404, "nope")


def test_wrong_method_gets_405(client):
    response = client.get(SELECT)
    assert_outcome(response, 405, "not allowed")
    assert "POST" in response.headers["Allow"]


def test_body_over_the_limit_gets_413(make_app):
    client = make_app(max_body_bytes=2048).test_client()
    body = hook_request(prefetch=full_prefetch())
    body["context"]["draftOrders"]["entry"][0]["resource"]["note"] = [{"text": "x" * 4096}]
    response = client.post(SELECT, data=json.dumps(body), content_type="application/json")
    assert_outcome(response, 413, "too large")


def test_selections_may_be_absolute_references(client):
    body = hook_request(prefetch=full_prefetch())
    body["context"]["selections"] = ["https://ehr.example.org/fhir/ServiceRequest/sr-1"]
    assert client.post(SELECT, json=body).status_code == 200


def test_order_sign_ignores_selections_and_non_draft_status(client):
    body = hook_request("order-sign", prefetch=full_prefetch())
    body["context"]["draftOrders"]["entry"][0]["resource"]["status"] = "active"  # re-signed
    body["context"]["selections"] = ["ServiceRequest/elsewhere"]
    assert client.post(SIGN, json=body).status_code == 200


def test_unknown_members_and_extensions_are_ignored(client):
    body = hook_request(prefetch=full_prefetch(), extension={"org.example.x": {"a": 1}}, unexpected=True)
    assert client.post(SELECT, json=body).status_code == 200


def test_application_fhir_json_is_accepted(client):
    body = hook_request(prefetch=full_prefetch())
    response = client.post(SELECT, data=json.dumps(body), content_type="application/fhir+json; charset=utf-8")
    assert response.status_code == 200


def test_unexpected_error_is_500_outcome_without_trace(make_app, monkeypatch, caplog):
    def broken(*_):
        raise RuntimeError("engine bug with secret detail")

    monkeypatch.setattr("cds_service.engine.evaluate", broken)
    response = make_app().test_client().post(SELECT, json=hook_request(prefetch=full_prefetch()))
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert "secret detail" not in text and "Traceback" not in text
    assert response.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_every_example_answer_is_an_object_with_cards(client, hook):
    body = hook_request(hook, prefetch=full_prefetch())
    body["context"]["draftOrders"]["entry"].append({"resource": copy.deepcopy(service_request("sr-2"))})
    response = client.post(service_url(hook), json=body)
    assert response.status_code == 200
    assert isinstance(response.get_json()["cards"], list)


def _leaf_paths(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield path + (key,)
            yield from _leaf_paths(item, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield path + (i,)
            yield from _leaf_paths(item, path + (i,))


def test_no_malformed_member_anywhere_causes_a_5xx(client):
    """Replace every member of a sandbox-shaped request, one at a time, with odd JSON values."""
    template = sandbox_request()
    template["fhirServer"] = "https://evil.example.com/fhir"  # never called: not allowed
    odd_values = (None, 0, "", [], {"resourceType": 1})
    statuses = set()
    for path in _leaf_paths(template):
        for odd in odd_values:
            body = copy.deepcopy(template)
            target = body
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = odd
            response = client.post(SELECT, json=body)
            assert response.status_code in (200, 400, 412), (path, odd, response.get_data(as_text=True))
            statuses.add(response.status_code)
    assert statuses == {200, 400, 412}

import time

import pytest
import responses

from cds_service.protocol.fhir_client import (
    FhirAccessError,
    FhirClient,
    FhirNotFound,
    is_allowed,
    parse_allowed_hosts,
)

ALLOWED = parse_allowed_hosts(["fhir.example.org", "ehr.example.org:8443", "http://localhost:8081"])


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://fhir.example.org/r4", True),
        ("https://FHIR.example.org:9443/r4", True),  # no port listed: any port
        ("http://fhir.example.org/r4", False),  # https only unless listed with http://
        ("https://ehr.example.org:8443/fhir", True),
        ("https://ehr.example.org/fhir", False),  # port listed: only that port
        ("http://localhost:8081/fhir", True),
        ("http://localhost:8082/fhir", False),
        ("https://fhir.example.org.evil.com/r4", False),
        ("https://user:pw@fhir.example.org/r4", False),
        ("ftp://fhir.example.org/r4", False),
        ("fhir.example.org/r4", False),
        ("https://[::1/", False),
    ],
)
def test_allowlist(url, ok):
    assert is_allowed(url, ALLOWED) is ok


def test_empty_allowlist_allows_nothing():
    assert not is_allowed("https://fhir.example.org/", ())


def client(**kwargs):
    defaults = {"base_url": "https://fhir.example.org/r4/", "allowed": ALLOWED, "access_token": "tok"}
    return FhirClient(**{**defaults, **kwargs})


@responses.activate
def test_read_sends_bearer_token_and_accept_header():
    responses.get("https://fhir.example.org/r4/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    assert client().read("Patient/p1")["id"] == "p1"
    headers = responses.calls[0].request.headers
    assert headers["Authorization"] == "Bearer tok"
    assert headers["Accept"] == "application/fhir+json"


def test_token_is_not_in_repr():
    assert "tok" not in repr(client(access_token="tok-secret-value"))


@responses.activate
def test_read_404_is_not_found():
    responses.get("https://fhir.example.org/r4/Patient/p1", status=404)
    with pytest.raises(FhirNotFound):
        client().read("Patient/p1")


@responses.activate
def test_redirects_are_not_followed():
    responses.get("https://fhir.example.org/r4/Patient/p1", status=302,
                  headers={"Location": "https://evil.example.com/Patient/p1"})
    with pytest.raises(FhirAccessError, match="302"):
        client().read("Patient/p1")
    assert len(responses.calls) == 1


@responses.activate
def test_non_json_answer_is_an_error():
    url = "https://fhir.example.org/r4/Condition?patient=p1"
    responses.get(url, body="<html/>", content_type="text/html")
    with pytest.raises(FhirAccessError, match="text/html"):
        client().search("Condition?patient=p1")


@responses.activate
def test_search_answered_with_an_outcome_is_an_error():
    responses.get("https://fhir.example.org/r4/Condition?patient=p1",
                  json={"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]})
    with pytest.raises(FhirAccessError):
        client().search("Condition?patient=p1")


def test_passed_deadline_makes_no_call():
    with responses.RequestsMock() as mock, pytest.raises(FhirAccessError, match="deadline"):
        client(deadline=time.monotonic() - 1).read("Patient/p1")
    assert len(mock.calls) == 0


def test_disallowed_base_makes_no_call():
    with responses.RequestsMock() as mock:
        c = client(base_url="https://other.example.org/fhir")
        assert not c.allowed_server
        with pytest.raises(FhirAccessError, match="allowed"):
            c.read("Patient/p1")
    assert len(mock.calls) == 0


@responses.activate
def test_cookies_set_by_one_server_are_never_sent_again():
    responses.get("https://fhir.example.org/r4/Patient/p1", json={"resourceType": "Patient", "id": "p1"},
                  headers={"Set-Cookie": "session=abc; Path=/"})
    responses.get("https://fhir.example.org/r4/Patient/p2", json={"resourceType": "Patient", "id": "p2"})
    client().read("Patient/p1")
    client(access_token="other").read("Patient/p2")
    assert "Cookie" not in responses.calls[1].request.headers


@responses.activate
def test_error_outcome_inside_a_page_marks_the_search_incomplete():
    url = "https://fhir.example.org/r4/Condition?patient=p1"
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "too-costly"}]}
    responses.get(url, json={"resourceType": "Bundle", "entry": [
        {"resource": {"resourceType": "Condition", "id": "c1"}}, {"resource": outcome}]})
    resources, complete = client().search("Condition?patient=p1")
    assert [r["id"] for r in resources] == ["c1"] and complete is False


@responses.activate
def test_answer_over_the_byte_cap_is_abandoned():
    from cds_service.protocol.fhir_client import FhirTooLarge

    body = '{"resourceType": "Patient", "id": "p1", "note": "' + "x" * 5000 + '"}'
    responses.get("https://fhir.example.org/r4/Patient/p1", body=body, content_type="application/fhir+json")
    with pytest.raises(FhirTooLarge, match="CDS_FHIR_MAX_BYTES"):
        client(max_bytes=1000).read("Patient/p1")
    assert client(max_bytes=len(body)).read("Patient/p1")["id"] == "p1"


@responses.activate
def test_byte_cap_is_shared_by_the_calls_of_one_client_and_abandoned_bytes_are_given_back():
    from cds_service.protocol.fhir_client import FhirTooLarge

    small = '{"resourceType": "Patient", "id": "p1"}'
    big = '{"resourceType": "Patient", "id": "p2", "note": "' + "x" * 5000 + '"}'
    responses.get("https://fhir.example.org/r4/Patient/p1", body=small, content_type="application/fhir+json")
    responses.get("https://fhir.example.org/r4/Patient/p2", body=big, content_type="application/fhir+json")
    c = client(max_bytes=len(small) * 2 + 10)
    c.read("Patient/p1")
    with pytest.raises(FhirTooLarge):
        c.read("Patient/p2")
    assert c.bytes_read == len(small)  # the abandoned answer no longer counts
    c.read("Patient/p1")
    with pytest.raises(FhirTooLarge):
        c.read("Patient/p1")  # three small answers are over the call's budget


@responses.activate
@pytest.mark.parametrize("body", ['{"resourceType": "Patient", "id": "p1", "x": NaN}',
                                  '{"a":' * 5000 + "1" + "}" * 5000, "[1, 2]"])
def test_non_finite_numbers_absurd_nesting_and_non_resources_are_invalid(body):
    responses.get("https://fhir.example.org/r4/Patient/p1", body=body, content_type="application/fhir+json")
    with pytest.raises(FhirAccessError, match="JSON"):
        client().read("Patient/p1")


def test_cancelled_client_makes_no_call():
    c = client()
    c.cancel()
    with responses.RequestsMock() as mock, pytest.raises(FhirAccessError, match="deadline"):
        c.read("Patient/p1")
    assert len(mock.calls) == 0

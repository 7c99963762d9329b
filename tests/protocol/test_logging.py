import json
import logging

import responses

from cds_service.model import EngineResult
from cds_service.protocol.access_log import JsonFormatter

from .conftest import BASE, FHIR, PATIENT_ID, full_prefetch, hook_request

SELECT = "/cds-services/imaging-appropriateness"


def access_lines(caplog):
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "cds_service.access"]


def test_one_structured_line_per_call(client, caplog, monkeypatch):
    monkeypatch.setattr("cds_service.engine.evaluate",
                        lambda *_: EngineResult(rule_ids=("flare-phenomenon", "prostate-mhspc")))
    body = hook_request(prefetch=full_prefetch())
    with caplog.at_level(logging.INFO):
        client.post(SELECT, json=body)
    lines = access_lines(caplog)
    assert len(lines) == 1
    line = lines[0]
    assert line["event"] == "cds_call"
    assert line["hookInstance"] == body["hookInstance"]
    assert line["service"] == "imaging-appropriateness"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float)
    assert line["rule_ids"] == ["flare-phenomenon", "prostate-mhspc"]


def test_errors_are_logged_with_status(client, caplog):
    with caplog.at_level(logging.INFO):
        client.post(SELECT, json={"hook": "order-select", "hookInstance": "h-1"})
    line = access_lines(caplog)[0]
    assert line["status"] == 400 and line["hookInstance"] == "h-1" and "context" in line["error"]


def test_no_tokens_jwts_names_or_patient_ids_in_any_log(make_app, trusted_file, signer, caplog):
    client = make_app(trusted_clients=trusted_file).test_client()
    prefetch = full_prefetch()
    prefetch["patient"]["name"] = [{"family": "Zyxwvutson", "given": ["Quentin"]}]
    del prefetch["conditions"]
    body = hook_request(prefetch=prefetch)
    body["fhirServer"] = FHIR
    body["fhirAuthorization"] = {"access_token": "AT-very-secret-123", "token_type": "Bearer",
                                 "expires_in": 300, "scope": "patient/*.read", "subject": "svc"}
    jwt_header = signer.auth(f"{BASE}{SELECT}")
    with caplog.at_level(logging.DEBUG), responses.RequestsMock() as mock:
        mock.get(f"{FHIR}/Condition", status=500)
        assert client.post(SELECT, json=body, headers=jwt_header).status_code == 200
        client.post(SELECT, json=body, headers=jwt_header)  # replayed jti -> 401, logged
    text = "\n".join(r.getMessage() for r in caplog.records)
    secrets = ("AT-very-secret-123", jwt_header["Authorization"][7:], "Zyxwvutson", "Quentin", PATIENT_ID)
    for secret in secrets:
        assert secret not in text
    assert [line["status"] for line in access_lines(caplog)] == [200, 401]
    assert access_lines(caplog)[1]["auth"] == "jti replayed"


def test_json_formatter_merges_structured_messages():
    message = '{"event":"cds_call"}'
    record = logging.LogRecord("cds_service.access", logging.INFO, __file__, 1, message, None, None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["event"] == "cds_call" and entry["level"] == "info"
    plain = logging.LogRecord("x", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    assert json.loads(JsonFormatter().format(plain))["message"] == "hello world"


def test_log_timestamps_are_utc_with_milliseconds():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    record.created = 1796000000.123456  # 2026-11-30T...: any instant, rendered in UTC whatever TZ is
    assert json.loads(JsonFormatter().format(record))["ts"] == "2026-11-30T00:53:20.123Z"

SANDBOX = "https://sandbox.cds-hooks.org"


def preflight(client, origin, path="/cds-services/imaging-appropriateness"):
    return client.options(path, headers={
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    })


def test_preflight_in_development_allows_any_origin(client):
    response = preflight(client, SANDBOX)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed


def test_configured_origin_is_echoed_and_others_get_no_cors_headers(make_app):
    client = make_app(cors_origins=(SANDBOX, "http://localhost:8080")).test_client()
    ok = preflight(client, SANDBOX)
    assert ok.headers["Access-Control-Allow-Origin"] == SANDBOX
    assert "Origin" in ok.headers["Vary"]
    other = preflight(client, "https://evil.example.com")
    assert "Access-Control-Allow-Origin" not in other.headers
    actual = client.get("/cds-services", headers={"Origin": "http://localhost:8080"})
    assert actual.status_code == 200
    assert actual.headers["Access-Control-Allow-Origin"] == "http://localhost:8080"


def test_actual_requests_carry_cors_headers(client):
    response = client.get("/cds-services", headers={"Origin": SANDBOX})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_preflight_for_feedback_and_discovery(client):
    for path in ("/cds-services", "/cds-services/imaging-appropriateness/feedback"):
        assert preflight(client, SANDBOX, path).headers["Access-Control-Allow-Origin"] == "*"


def test_no_origin_no_cors_headers(client):
    assert "Access-Control-Allow-Origin" not in client.get("/cds-services").headers

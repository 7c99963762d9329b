"""GET /openapi.json: the hand-written description is served, public, and matches the service."""

from cds_service.protocol.discovery import SERVICES

from .conftest import BASE, Signer, full_prefetch, hook_request


def test_openapi_is_served_as_json_without_a_token(make_app, trusted_file):
    secured = make_app(trusted_clients=trusted_file).test_client()
    response = secured.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    doc = response.get_json()
    assert doc["openapi"].startswith("3.")
    assert secured.get("/cds-services").status_code == 401  # discovery still needs one


def test_openapi_covers_every_endpoint_and_service(client):
    doc = client.get("/openapi.json").get_json()
    assert {"/cds-services", "/cds-services/{service_id}", "/cds-services/{service_id}/feedback",
            "/rules/{rule_id}", "/healthz", "/openapi.json"} <= set(doc["paths"])
    ids = doc["components"]["parameters"]["ServiceId"]["schema"]["enum"]
    assert sorted(ids) == sorted(s.id for s in SERVICES)
    hooks = doc["components"]["schemas"]["HookRequest"]["properties"]["hook"]["enum"]
    assert sorted(hooks) == sorted({s.hook for s in SERVICES})


def test_openapi_describes_every_dashboard_table(client):
    from cds_service.governance.queries import TABLES

    doc = client.get("/openapi.json").get_json()
    assert {"/admin/", "/admin/api/{table}", "/admin/{table}.csv"} <= set(doc["paths"])
    tables = doc["components"]["parameters"]["AdminTable"]["schema"]["enum"]
    assert tables == [t.name for t in TABLES]
    services = doc["components"]["parameters"]["AdminService"]["schema"]["enum"]
    assert services == ["all", *(s.id for s in SERVICES)]


def test_example_request_matches_the_described_required_members(client):
    doc = client.get("/openapi.json").get_json()
    required = doc["components"]["schemas"]["HookRequest"]["required"]
    body = hook_request(prefetch=full_prefetch())
    assert all(key in body for key in required)
    context_required = doc["components"]["schemas"]["OrderContext"]["required"]
    assert all(key in body["context"] for key in context_required)


def test_signed_call_matches_the_security_scheme(make_app, trusted_file, signer: Signer):
    secured = make_app(trusted_clients=trusted_file).test_client()
    doc = secured.get("/openapi.json").get_json()
    assert doc["components"]["securitySchemes"]["cdsClientJwt"]["scheme"] == "bearer"
    headers = signer.auth(f"{BASE}/cds-services")
    assert secured.get("/cds-services", headers=headers).status_code == 200

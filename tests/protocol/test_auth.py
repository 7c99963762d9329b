"""JWT authentication: the happy paths (incl. the sandbox's early iat) and every failure mode."""

import json
import time

import pytest
import responses

from cds_service.protocol.auth import (
    Authenticator,
    AuthError,
    JwksCache,
    TrustConfigError,
    load_trusted_clients,
)

from .conftest import BASE, Signer, full_prefetch, hook_request, sandbox_request

DISCOVERY = f"{BASE}/cds-services"
SELECT = f"{BASE}/cds-services/imaging-appropriateness"


@pytest.fixture
def secured(make_app, trusted_file):
    return make_app(trusted_clients=trusted_file).test_client()


def call(client, headers=None):
    return client.post("/cds-services/imaging-appropriateness", json=hook_request(prefetch=full_prefetch()),
                       headers=headers or {})


def assert_bare_401(response):
    assert response.status_code == 401
    assert response.get_data() == b""


def test_valid_es384_jwt_is_accepted(secured, signer):
    assert call(secured, signer.auth(SELECT)).status_code == 200
    assert secured.get("/cds-services", headers=signer.auth(DISCOVERY)).status_code == 200


def test_sandbox_iat_half_a_second_in_the_future_is_accepted(secured, signer):
    assert call(secured, signer.auth(SELECT, iat=time.time() + 0.5)).status_code == 200


def test_sandbox_shaped_call_with_its_jwt_style_is_accepted(make_app, tmp_path):
    """ES384, kid + jku header, iat half a second ahead, no tenant: as the CDS Hooks sandbox signs."""
    sandbox = Signer(iss="https://sandbox.cds-hooks.org", kid="44823f3d-0b01-4a6c-a80e-b9d3e8a7226f")
    jku = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
    path = tmp_path / "t.json"
    path.write_text(json.dumps({sandbox.iss: {"jku": [jku]}}))
    client = make_app(trusted_clients=path).test_client()
    with responses.RequestsMock() as mock:
        mock.get(jku, json=sandbox.jwks)
        headers = sandbox.auth(SELECT, headers={"jku": jku}, iat=time.time() + 0.5)
        response = client.post(SELECT, json=sandbox_request(), headers=headers)
    assert response.status_code == 200
    assert isinstance(response.get_json()["cards"], list)


SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"


def _sandbox_client(make_app, tmp_path, entry):
    sandbox = Signer(iss="https://sandbox.cds-hooks.org", kid="44823f3d-0b01-4a6c-a80e-b9d3e8a7226f")
    path = tmp_path / "t.json"
    path.write_text(json.dumps({sandbox.iss: entry(sandbox)}))
    return sandbox, make_app(trusted_clients=path).test_client()


@pytest.mark.parametrize("jku_list", [[], [SANDBOX_JKU]], ids=["no-jku-list", "jku-on-list"])
def test_inline_jwks_is_used_for_a_sandbox_token_offline(make_app, tmp_path, jku_list):
    """Behind an egress firewall: the sandbox always sends a jku, the site configured its JWKS inline.

    The configured key matches the kid, so nothing is fetched (RequestsMock fails any HTTP call).
    """
    sandbox, client = _sandbox_client(make_app, tmp_path, lambda s: {"jwks": s.jwks, "jku": jku_list})
    with responses.RequestsMock() as mock:
        headers = sandbox.auth(SELECT, headers={"jku": SANDBOX_JKU}, iat=time.time() + 0.5)
        assert client.post(SELECT, json=sandbox_request(), headers=headers).status_code == 200
        assert client.get("/cds-services", headers=sandbox.auth(DISCOVERY, headers={"jku": SANDBOX_JKU})
                          ).status_code == 200
        assert not mock.calls


def test_jku_is_fetched_only_when_no_configured_key_matches_the_kid(make_app, tmp_path):
    other = Signer(kid="rotated-away")
    sandbox, client = _sandbox_client(
        make_app, tmp_path, lambda s: {"jwks": other.jwks, "jku": [SANDBOX_JKU]}
    )
    with responses.RequestsMock() as mock:
        mock.get(SANDBOX_JKU, json=sandbox.jwks)
        headers = sandbox.auth(SELECT, headers={"jku": SANDBOX_JKU})
        assert client.post(SELECT, json=sandbox_request(), headers=headers).status_code == 200
        assert [c.request.url for c in mock.calls] == [SANDBOX_JKU]


def test_a_jku_off_a_configured_allowlist_is_refused_even_with_an_inline_key(make_app, tmp_path):
    sandbox, client = _sandbox_client(
        make_app, tmp_path, lambda s: {"jwks": s.jwks, "jku": ["https://ehr.example.org/jwks.json"]}
    )
    with responses.RequestsMock() as mock:
        headers = sandbox.auth(SELECT, headers={"jku": "https://attacker.example.com/jwks.json"})
        assert_bare_401(client.post(SELECT, json=sandbox_request(), headers=headers))
        assert not mock.calls


def test_an_unlisted_jku_is_never_fetched_when_no_configured_key_matches(make_app, tmp_path):
    other = Signer(kid="someone-else")
    sandbox, client = _sandbox_client(make_app, tmp_path, lambda s: {"jwks": other.jwks})
    with responses.RequestsMock() as mock:
        headers = sandbox.auth(SELECT, headers={"jku": "https://attacker.example.com/jwks.json"})
        assert_bare_401(client.post(SELECT, json=sandbox_request(), headers=headers))
        assert not mock.calls


def test_aud_may_be_a_list(secured, signer):
    assert call(secured, signer.auth(SELECT, aud=["https://other", SELECT])).status_code == 200


def test_extra_claims_are_tolerated(secured, signer):
    assert call(secured, signer.auth(SELECT, sub="ehr-client", nbf=int(time.time()) - 5)).status_code == 200


def test_missing_header_is_401(secured):
    assert_bare_401(call(secured))
    assert_bare_401(secured.get("/cds-services"))


def test_health_and_preflight_need_no_token(secured):
    assert secured.get("/healthz").status_code == 200
    preflight = secured.options("/cds-services/imaging-appropriateness",
                                headers={"Origin": "https://sandbox.cds-hooks.org",
                                         "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200


@pytest.mark.parametrize(
    "bad",
    [
        "Basic dXNlcjpwdw==",
        "Bearer not-a-jwt",
        "Bearer ",
    ],
)
def test_malformed_authorization_is_401(secured, bad):
    assert_bare_401(call(secured, {"Authorization": bad}))


def test_wrong_audience_is_401(secured, signer):
    assert_bare_401(call(secured, signer.auth("https://elsewhere.example.org/cds-services/x")))
    assert_bare_401(call(secured, signer.auth(DISCOVERY)))  # discovery's aud on a service call


def test_missing_claims_are_401(secured, signer):
    for claim in ("exp", "iat", "jti", "aud"):
        assert_bare_401(call(secured, signer.auth(SELECT, **{claim: None})))


def test_expired_is_401(secured, signer):
    now = time.time()
    assert_bare_401(call(secured, signer.auth(SELECT, iat=now - 600, exp=now - 120)))


def test_issued_in_the_future_beyond_skew_is_401(secured, signer):
    assert_bare_401(call(secured, signer.auth(SELECT, iat=time.time() + 600, exp=time.time() + 900)))


def test_lifetime_over_an_hour_is_401(secured, signer):
    assert_bare_401(call(secured, signer.auth(SELECT, exp=time.time() + 7200)))


def test_replayed_jti_is_401(secured, signer):
    headers = signer.auth(SELECT, jti="once-only")
    assert call(secured, headers).status_code == 200
    assert_bare_401(call(secured, headers))


def test_replay_to_another_worker_is_401(make_app, trusted_file, signer):
    worker_a = make_app(trusted_clients=trusted_file).test_client()
    worker_b = make_app(trusted_clients=trusted_file).test_client()  # same database file
    headers = signer.auth(SELECT)
    assert call(worker_a, headers).status_code == 200
    assert_bare_401(call(worker_b, headers))


def test_untrusted_issuer_is_401(secured):
    stranger = Signer(iss="https://stranger.example.org")
    assert_bare_401(call(secured, stranger.auth(SELECT)))


def test_wrong_key_with_known_kid_is_401(secured, signer):
    impostor = Signer(iss=signer.iss, kid=signer.kid)
    assert_bare_401(call(secured, impostor.auth(SELECT)))


def test_unknown_kid_is_401(secured, signer):
    assert_bare_401(call(secured, signer.auth(SELECT, headers={"kid": "other-kid"})))


def test_missing_kid_is_401(secured, signer):
    import jwt as pyjwt

    token = pyjwt.encode({"iss": signer.iss, "aud": SELECT, "iat": int(time.time()),
                          "exp": int(time.time()) + 60, "jti": "k"}, signer.private, algorithm="ES384")
    assert_bare_401(call(secured, {"Authorization": f"Bearer {token}"}))


def test_alg_none_is_401(secured, signer):
    import jwt as pyjwt

    token = pyjwt.encode({"iss": signer.iss, "aud": SELECT, "iat": int(time.time()),
                          "exp": int(time.time()) + 60, "jti": "n"}, None, algorithm="none",
                         headers={"kid": signer.kid})
    assert_bare_401(call(secured, {"Authorization": f"Bearer {token}"}))


def test_hs256_is_401_even_if_configured(make_app, tmp_path, signer):
    import jwt as pyjwt

    secret = "shared-secret-at-least-32-bytes-long!!"
    path = tmp_path / "hs.json"
    jwk = {"kty": "oct", "kid": "hs", "k": "c2hhcmVkLXNlY3JldC1hdC1sZWFzdC0zMi1ieXRlcy1sb25nISE"}
    path.write_text(json.dumps({signer.iss: {"jwks": {"keys": [jwk]}}}))
    client = make_app(trusted_clients=path, jwt_algorithms=("HS256", "ES384")).test_client()
    token = pyjwt.encode({"iss": signer.iss, "aud": SELECT, "iat": int(time.time()),
                          "exp": int(time.time()) + 60, "jti": "h"}, secret, algorithm="HS256",
                         headers={"kid": "hs"})
    assert_bare_401(call(client, {"Authorization": f"Bearer {token}"}))


def test_rs384_is_accepted_and_es256_only_when_configured(make_app, tmp_path):
    rsa_signer, es256 = Signer(iss="https://rsa.example.org", alg="RS384"), Signer(alg="ES256")
    path = tmp_path / "t.json"
    path.write_text(json.dumps({rsa_signer.iss: {"jwks": rsa_signer.jwks}, es256.iss: {"jwks": es256.jwks}}))
    default = make_app(trusted_clients=path).test_client()
    assert call(default, rsa_signer.auth(SELECT)).status_code == 200
    assert_bare_401(call(default, es256.auth(SELECT)))
    widened = make_app(trusted_clients=path, jwt_algorithms=("ES384", "RS384", "ES256")).test_client()
    assert call(widened, es256.auth(SELECT)).status_code == 200


def test_tenant_allowlist(make_app, tmp_path, signer):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({signer.iss: {"jwks": signer.jwks, "tenants": ["hospital-a"]}}))
    client = make_app(trusted_clients=path).test_client()
    assert call(client, signer.auth(SELECT, tenant="hospital-a")).status_code == 200
    assert_bare_401(call(client, signer.auth(SELECT, tenant="hospital-b")))
    assert_bare_401(call(client, signer.auth(SELECT)))


def test_jku_must_be_on_the_issuers_allowlist(make_app, tmp_path, signer):
    jku = "https://ehr.example.org/.well-known/jwks.json"
    path = tmp_path / "t.json"
    path.write_text(json.dumps({signer.iss: {"jku": [jku]}}))
    client = make_app(trusted_clients=path).test_client()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(jku, json=signer.jwks)
        mock.get("https://attacker.example.com/jwks.json", json=signer.jwks)
        assert call(client, signer.auth(SELECT, headers={"jku": jku})).status_code == 200
        bad = signer.auth(SELECT, headers={"jku": "https://attacker.example.com/jwks.json"})
        assert_bare_401(call(client, bad))
        assert all("attacker" not in c.request.url for c in mock.calls)


def test_jwks_url_is_cached_and_refreshed_on_unknown_kid(make_app, tmp_path, signer):
    url = "https://ehr.example.org/jwks.json"
    path = tmp_path / "t.json"
    path.write_text(json.dumps({signer.iss: {"jwks_url": url}}))
    client = make_app(trusted_clients=path).test_client()
    rotated = Signer(iss=signer.iss, kid="key-2")
    with responses.RequestsMock() as mock:
        mock.get(url, json=signer.jwks)
        assert call(client, signer.auth(SELECT)).status_code == 200
        assert call(client, signer.auth(SELECT)).status_code == 200
        assert len(mock.calls) == 1  # cached
    clock = [1000.0]
    auth = Authenticator.create(load_trusted_clients(path), ["ES384"], 30, 3600, 3600)
    auth.jwks = JwksCache(3600, clock=lambda: clock[0])
    with responses.RequestsMock() as mock:
        mock.get(url, json=signer.jwks)
        auth.authenticate(f"Bearer {signer.token(SELECT)}", [SELECT])
        mock.replace(responses.GET, url, json={"keys": [signer.jwk, rotated.jwk]})
        auth.authenticate(f"Bearer {signer.token(SELECT)}", [SELECT])
        assert len(mock.calls) == 1
        clock[0] += 60  # past the refresh floor, well inside the cache lifetime
        auth.authenticate(f"Bearer {rotated.token(SELECT)}", [SELECT])
        assert len(mock.calls) == 2
        with pytest.raises(AuthError, match="kid"):
            auth.authenticate(f"Bearer {Signer(iss=signer.iss, kid='key-3').token(SELECT)}", [SELECT])
        assert len(mock.calls) == 2  # unknown kids cannot make it refetch in a loop


def test_auth_error_messages_never_contain_the_token(signer, trusted_file):
    auth = Authenticator.create(load_trusted_clients(trusted_file), ["ES384"], 30, 3600, 3600)
    token = signer.token("https://wrong")
    with pytest.raises(AuthError) as info:
        auth.authenticate(f"Bearer {token}", [SELECT])
    assert token not in str(info.value)


@pytest.mark.parametrize(
    "content",
    ["not json", "{}", '{"iss": "x"}', '{"iss": {}}', '{"iss": {"jwks": {"nokeys": 1}}}',
     '{"iss": {"jwks_url": "u", "tenants": "a"}}'],
)
def test_bad_trusted_clients_file_refuses_to_start(make_app, tmp_path, content):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(TrustConfigError):
        make_app(trusted_clients=path)


def test_open_mode_warns_at_start(make_app, caplog):
    with caplog.at_level("WARNING"):
        make_app()
    assert "OPEN" in caplog.text


# --- issue 10, point 5: the expected `aud` never comes from the request --------------------------

EVIL = "http://evil.example/cds-services/imaging-appropriateness"


def test_token_for_another_host_sent_with_that_host_is_401(secured, signer):
    """The attack: mint for http://evil.example and send `Host: evil.example`."""
    assert_bare_401(call(secured, {**signer.auth(EVIL), "Host": "evil.example"}))
    assert call(secured, signer.auth(SELECT)).status_code == 200  # the configured URL still works


def test_forwarded_headers_are_ignored_without_trusted_proxies(secured, signer):
    spoofed = "https://localhost/cds-services/imaging-appropriateness"
    headers = {**signer.auth(spoofed), "X-Forwarded-Proto": "https", "X-Forwarded-Host": "localhost"}
    assert_bare_401(call(secured, headers))
    headers = {**signer.auth(EVIL), "X-Forwarded-Host": "evil.example"}
    assert_bare_401(call(secured, headers))


def test_trusted_clients_without_public_url_refuse_to_start(make_app, trusted_file):
    from cds_service.config import ConfigError

    with pytest.raises(ConfigError, match="CDS_PUBLIC_BASE_URL") as info:
        make_app(trusted_clients=trusted_file, public_base_url=None)
    assert "CDS_TRUST_PROXY_HEADERS" in str(info.value)
    make_app(public_base_url=None)  # open (development) mode needs no public URL


def test_refusal_reaches_the_cli(monkeypatch, tmp_path, trusted_file, capsys):
    from cds_service import cli

    monkeypatch.setenv("CDS_FEEDBACK_DB", str(tmp_path / "fb.sqlite3"))
    monkeypatch.setenv("CDS_TRUSTED_CLIENTS", str(trusted_file))
    monkeypatch.delenv("CDS_PUBLIC_BASE_URL", raising=False)
    monkeypatch.delenv("CDS_TRUST_PROXY_HEADERS", raising=False)
    assert cli.main(["check"]) == 2
    assert "CDS_PUBLIC_BASE_URL" in capsys.readouterr().err


def test_explicit_trusted_proxy_count_derives_aud_from_the_proxy_headers(make_app, trusted_file, signer):
    """Behind one proxy that sets X-Forwarded-*: the public URL is what the proxy says."""
    client = make_app(trusted_clients=trusted_file, public_base_url=None, trust_proxy_headers=1).test_client()
    public = "https://cds.example.org/cds-services/imaging-appropriateness"
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "cds.example.org",
               "X-Forwarded-For": "10.0.0.9"}
    assert call(client, {**signer.auth(public), **proxied}).status_code == 200
    # a client-supplied header before the proxy's own is not believed (only the last hop is trusted)
    spoofing = {**proxied, "X-Forwarded-Host": "evil.example, cds.example.org"}
    assert_bare_401(call(client, {**signer.auth(EVIL.replace("http:", "https:")), **spoofing}))


def test_public_base_url_wins_over_proxy_headers(make_app, trusted_file, signer):
    client = make_app(trusted_clients=trusted_file, public_base_url="https://cds.example.org",
                      trust_proxy_headers=1).test_client()
    evil = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil.example"}
    assert_bare_401(call(client, {**signer.auth(EVIL), **evil}))
    public = "https://cds.example.org/cds-services/imaging-appropriateness"
    assert call(client, {**signer.auth(public), **evil}).status_code == 200


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("kind", ["numeric string", "bool", "null-like object"])
def test_numeric_date_claims_must_be_json_numbers(secured, signer, claim, kind):
    now = int(time.time())
    good = {"exp": now + 300, "iat": now, "nbf": now - 5}[claim]
    value = {"numeric string": str(good), "bool": True, "null-like object": {"v": good}}[kind]
    assert_bare_401(call(secured, signer.auth(SELECT, **{claim: value})))


def test_exp_as_string_is_401_even_when_far_in_the_future(secured, signer):
    assert_bare_401(call(secured, signer.auth(SELECT, exp=str(int(time.time()) + 300))))
    # a float is a JSON number
    assert call(secured, signer.auth(SELECT, exp=time.time() + 300.5)).status_code == 200


def test_jti_store_keeps_one_connection_per_thread_and_process(tmp_path):
    """Issue 11: the jti store is off the hot path like the card index (a kept WAL connection per
    thread and process), and still catches a replay across threads and forked workers."""
    import os
    import threading

    from cds_service.protocol.auth import DatabaseReplayCache

    cache = DatabaseReplayCache(tmp_path / "jti.sqlite3")
    exp = time.time() + 300
    with cache.db.connect() as first, cache.db.connect() as second:
        assert first is second  # kept, not reopened per call
        assert first.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert first.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(cache.first_use("iss", "same", exp)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    pid = os.fork()
    if pid == 0:  # a forked worker opens its own connection and sees the parent's jti
        os._exit(0 if not cache.first_use("iss", "same", exp) and cache.first_use("iss", "new", exp) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not cache.first_use("iss", "new", exp)  # the child's insert is visible here

"""OAuth2 token flows against the real authorisation server, over HTTP: client secret (post and
basic), private_key_jwt (SMART Backend Services, EC and RSA keys), scopes, expiry, revocation,
rotation, and the operators' command."""

from __future__ import annotations

import hashlib
import random
import time
import uuid

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from fhir_server.auth.__main__ import main as auth_command
from fhir_server.synthetic.generator import make_laboratories

LAB_A, LAB_B = make_laboratories(random.Random(4), 2)


def outcome_codes(response) -> list[str]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return [i["code"] for i in body["issue"]]


# -- client secret ---------------------------------------------------------------------------------
@pytest.mark.parametrize("basic", [False, True], ids=["client_secret_post", "client_secret_basic"])
def test_client_secret_gets_a_short_lived_bearer_token(secured, basic):
    client_id, secret = secured.register(LAB_A)
    response = secured.token_response(client_id, secret, basic=basic)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    token = response.json()
    assert token["token_type"] == "Bearer" and token["expires_in"] == 300
    assert token["scope"] == "system/*.read system/*.write"
    session = secured.session(token["access_token"])
    assert session.get("Observation").status_code == 200
    # only a hash of the token is stored, and never the secret
    stored = secured.store.db["_tokens"].find_one({"client": client_id})
    assert stored["_id"] == hashlib.sha256(token["access_token"].encode()).hexdigest()
    assert token["access_token"] not in str(stored)
    client = secured.store.db["_clients"].find_one({"_id": client_id})
    assert secret not in str(client) and client["secret"].startswith("scrypt$")


def test_wrong_or_unknown_credentials_are_refused(secured):
    client_id, secret = secured.register(LAB_A)
    wrong = secured.token_response(client_id, secret + "x")
    assert wrong.status_code in (400, 401) and wrong.json()["error"] == "invalid_client"
    basic = secured.token_response(client_id, "nope", basic=True)
    assert basic.status_code == 401 and basic.json()["error"] == "invalid_client"
    unknown = secured.token_response("no-such-client", secret)
    assert unknown.status_code in (400, 401) and unknown.json()["error"] == "invalid_client"
    grant = requests.post(
        secured.token_url, data={"grant_type": "password", "client_id": client_id, "client_secret": secret}, timeout=30
    )
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"


def test_requested_scopes_must_be_registered_ones(secured):
    client_id, secret = secured.register(LAB_A, scope="system/Observation.read system/DiagnosticReport.*")
    narrower = secured.token_response(client_id, secret, scope="system/Observation.read")
    assert narrower.status_code == 200 and narrower.json()["scope"] == "system/Observation.read"
    v2 = secured.token_response(client_id, secret, scope="system/DiagnosticReport.rs")
    assert v2.status_code == 200
    for scope in ("system/Observation.write", "system/*.read", "system/Patient.read", "openid", "system/Obs"):
        refused = secured.token_response(client_id, secret, scope=scope)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope", scope


# -- private_key_jwt (SMART Backend Services) ------------------------------------------------------
def assertion(key, client_id: str, audience: str, alg: str, **claims) -> str:
    now = int(time.time())
    payload = {"iss": client_id, "sub": client_id, "aud": audience, "exp": now + 240, "jti": uuid.uuid4().hex, **claims}
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, payload, key, algorithms=[alg])


def jwt_token_response(secured, signed: str, scope="system/*.read"):
    return requests.post(
        secured.token_url,
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": signed,
        },
        timeout=30,
    )


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_private_key_jwt(secured, alg):
    key = ECKey.generate_key("P-384") if alg == "ES384" else RSAKey.generate_key(2048)
    key.ensure_kid()
    public = KeySet([key]).as_dict(private=False)
    client_id, secret = secured.register(LAB_A, jwks=public)
    assert secret is None
    signed = assertion(key, client_id, secured.token_url, alg)
    response = jwt_token_response(secured, signed)
    assert response.status_code == 200, response.text
    assert secured.session(response.json()["access_token"]).get("DiagnosticReport").status_code == 200
    # an assertion is used once
    replay = jwt_token_response(secured, signed)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_client"
    # signed by another key, for another audience, or expiring too late: refused
    other = ECKey.generate_key("P-384") if alg == "ES384" else RSAKey.generate_key(2048)
    other.ensure_kid()
    for bad in (
        assertion(other, client_id, secured.token_url, alg),
        assertion(key, client_id, "https://elsewhere.example/token", alg),
        assertion(key, client_id, secured.token_url, alg, exp=int(time.time()) + 3600),
    ):
        refused = jwt_token_response(secured, bad)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_client", refused.text
    # a JWK client has no secret to use
    assert secured.token_response(client_id, "anything").status_code in (400, 401)


def test_secret_client_cannot_use_a_jwt_assertion(secured):
    key = ECKey.generate_key("P-384")
    key.ensure_kid()
    client_id, _ = secured.register(LAB_A)
    refused = jwt_token_response(secured, assertion(key, client_id, secured.token_url, "ES384"))
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_client"


def test_smart_configuration(secured):
    response = requests.get(f"{secured.base_url}/.well-known/smart-configuration", timeout=30)
    assert response.status_code == 200
    config = response.json()
    assert config["token_endpoint"] == secured.token_url
    assert "private_key_jwt" in config["token_endpoint_auth_methods_supported"]
    assert "ES384" in config["token_endpoint_auth_signing_alg_values_supported"]


# -- the FHIR API refuses requests without a valid token -------------------------------------------
def test_every_endpoint_but_metadata_needs_a_token(secured):
    anonymous = secured.session(None)
    assert anonymous.get("metadata").status_code == 200
    for method, url in [
        ("GET", "Patient"),
        ("GET", "Observation/abc"),
        ("POST", ""),
        ("GET", "_history"),
        ("GET", "Observation/abc/_history/1"),
        ("POST", "Observation"),
        ("DELETE", "Observation/abc"),
        ("GET", "ValueSet/$expand"),
        ("POST", "Patient/_search"),
    ]:
        response = anonymous.request(method, url, data=b"{}" if method == "POST" else None)
        assert response.status_code == 401, (method, url, response.text)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert outcome_codes(response) == ["login"]
    garbage = secured.session("not-a-token").get("Patient")
    assert garbage.status_code == 401 and 'error="invalid_token"' in garbage.headers["WWW-Authenticate"]
    basic = anonymous.get("Patient", auth=("user", "password"))
    assert basic.status_code == 401


def test_expired_tokens_are_refused(secured_factory):
    server = secured_factory(token_lifetime=1)
    client_id, secret = server.register(LAB_A)
    response = server.token_response(client_id, secret)
    assert response.json()["expires_in"] == 1
    session = server.session(response.json()["access_token"])
    assert session.get("Observation").status_code == 200
    time.sleep(1.2)
    expired = session.get("Observation")
    assert expired.status_code == 401
    assert "expired" in expired.json()["issue"][0]["diagnostics"]
    assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]


# -- the operators' command ------------------------------------------------------------------------
@pytest.fixture
def command(secured, monkeypatch, capsys):
    monkeypatch.setenv("MONGODB_URI", secured.settings.mongodb_uri)
    monkeypatch.setenv("MONGODB_DB", secured.settings.mongodb_db)

    def run(*argv) -> str:
        assert auth_command(list(argv)) == 0
        return capsys.readouterr().out

    return run


def _field(output: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith(name + ":"))


def test_register_list_rotate_revoke(secured, command):
    site = LAB_B.sites[0].finess
    out = command("clients", "register", "--name", "LIS B", "--org", LAB_B.finess, "--site", site)
    client_id, secret = _field(out, "client_id"), _field(out, "client_secret")
    listing = command("clients", "list")
    assert client_id in listing and site in listing and secret not in listing
    token = secured.token(client_id, secret)
    session = secured.session(token)
    assert session.get("Patient").status_code == 200

    rotated = _field(command("clients", "rotate", client_id), "client_secret")
    assert rotated != secret
    assert secured.token_response(client_id, secret).status_code in (400, 401)  # the old secret is gone
    assert secured.token_response(client_id, rotated).status_code == 200
    assert session.get("Patient").status_code == 200  # tokens already issued live on

    command("clients", "revoke", client_id)
    refused = session.get("Patient")
    assert refused.status_code == 401 and "revoked" in refused.json()["issue"][0]["diagnostics"]
    assert secured.token_response(client_id, rotated).status_code in (400, 401)
    assert "revoked" in command("clients", "list")


def test_register_refuses_bad_input(secured, command):
    with pytest.raises(SystemExit):
        command("clients", "register", "--name", "x", "--org", "123456789", "--site", LAB_A.sites[0].finess)
    with pytest.raises(SystemExit):
        command("clients", "register", "--name", "x", "--org", LAB_A.finess)  # no site
    with pytest.raises(SystemExit):
        command(
            "clients",
            "register",
            "--name",
            "x",
            "--org",
            LAB_A.finess,
            "--site",
            LAB_A.sites[0].finess,
            "--scope",
            "patient/*.read",
        )
    out = command(
        "clients",
        "register",
        "--name",
        "Santé publique",
        "--role",
        "public-health",
        "--scope",
        "system/*.read system/AuditEvent.read",
    )
    assert _field(out, "client_id")


def test_capability_statement_says_where_tokens_come_from(secured):
    import requests

    statement = requests.get(f"{secured.base_url}/metadata", timeout=30).json()
    security = statement["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    token_url = security["extension"][0]["extension"][0]["valueUri"]
    assert token_url == secured.token_url
    assert requests.post(token_url, data={"grant_type": "client_credentials"}, timeout=30).status_code in (400, 401)

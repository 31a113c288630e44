"""The OAuth2 authorisation server (authlib): client credentials grant at POST /oauth/token.

Clients authenticate with their secret (client_secret_basic, client_secret_post) or, as SMART
Backend Services ask, with a JWT signed by their private key (private_key_jwt, RFC 7523: the
client registered its public JWK set; RS384 and ES384 as SMART requires, RS256/ES256 accepted).
Tokens are opaque random strings, short-lived (settings.token_lifetime), stored as a hash with a
snapshot of the principal. SMART discovery is at /fhir/.well-known/smart-configuration.
"""

from __future__ import annotations

import time

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, InvalidClientError, InvalidScopeError
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from flask import Blueprint, current_app, jsonify
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ..settings import Settings
from ..storage.accounts import Accounts, verify_secret
from .principal import Principal
from .scopes import ScopeError, Scopes, parse

ASSERTION_ALGORITHMS = ["RS384", "ES384", "RS256", "ES256", "PS384", "PS256"]
MAX_ASSERTION_LIFETIME = 300  # SMART: exp no more than five minutes in the future


class Client(ClientMixin):
    def __init__(self, doc: dict):
        self.doc = doc

    def get_client_id(self):
        return self.doc["_id"]

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope):
        """The scope granted: the one requested (checked by the grant), else all the client may have."""
        return " ".join((scope or "").split()) or self.doc.get("scope", "")

    def check_redirect_uri(self, redirect_uri):
        return False

    def check_client_secret(self, client_secret):
        return verify_secret(client_secret, self.doc.get("secret"))

    def check_endpoint_auth_method(self, method, endpoint):
        return method in self.doc.get("auth", ())

    def check_response_type(self, response_type):
        return False

    def check_grant_type(self, grant_type):
        return grant_type == "client_credentials"


class ClientCredentials(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]

    def validate_requested_scope(self):
        """Every requested scope must be a SMART scope the client was registered with."""
        requested = self.request.payload.scope
        if not requested:
            return
        try:
            wanted = Scopes(requested)
        except ScopeError as exc:
            raise InvalidScopeError(str(exc)) from None
        if not parse(self.client.doc.get("scope", "")).covers(wanted):
            raise InvalidScopeError(f"The client may not have the scope '{requested}'")


class PrivateKeyJWT(JWTBearerClientAssertion):
    """private_key_jwt client authentication (RFC 7523, SMART Backend Services)."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, accounts: Accounts, audiences: list[str]):
        super().__init__(validate_jti=True, leeway=60)
        self.accounts = accounts
        self.audiences = audiences

    def get_audiences(self):
        return self.audiences

    def resolve_client_public_key(self, client):
        jwks = client.doc.get("jwks")
        if not jwks:
            raise InvalidClientError(description="The client has no registered public key")
        return KeySet.import_key_set(jwks)

    def process_assertion_claims(self, assertion, resolve_key):
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(description=getattr(exc, "description", None) or str(exc)) from None
        self.verify_claims(token.claims)
        exp = token.claims.get("exp")
        if isinstance(exp, (int, float)) and exp > time.time() + MAX_ASSERTION_LIFETIME + self.leeway:
            raise InvalidClientError(description="The assertion expires more than five minutes from now")
        return token.claims

    def validate_jti(self, claims, jti):
        return self.accounts.use_jti(str(claims.get("sub")), str(jti), claims.get("exp"))


def create_authorization_server(app, accounts: Accounts, settings: Settings) -> AuthorizationServer:
    app.config.setdefault("OAUTH2_TOKEN_EXPIRES_IN", {"client_credentials": settings.token_lifetime})

    def query_client(client_id):
        doc = accounts.client(client_id) if isinstance(client_id, str) else None
        return Client(doc) if doc and doc.get("active") else None

    def save_token(token, request):
        client = request.client.doc
        principal = Principal.for_client(client, token.get("scope") or "")
        accounts.save_token(
            token["access_token"],
            client["_id"],
            token.get("scope") or "",
            int(token.get("expires_in") or settings.token_lifetime),
            principal.to_doc(),
        )

    server = AuthorizationServer(app, query_client=query_client, save_token=save_token)
    server.register_client_auth_method("private_key_jwt", PrivateKeyJWT(accounts, _audiences(settings)))
    server.register_grant(ClientCredentials)
    return server


def _audiences(settings: Settings) -> list[str]:
    """SMART: the assertion's aud is the token endpoint URL."""
    return [settings.token_endpoint]


def blueprint(server: AuthorizationServer, settings: Settings) -> Blueprint:
    bp = Blueprint("oauth", __name__)

    @bp.post("/oauth/token")
    def token():
        return server.create_token_response()

    @bp.get("/fhir/.well-known/smart-configuration")
    def smart_configuration():
        return jsonify(
            {
                "token_endpoint": settings.token_endpoint,
                "token_endpoint_auth_methods_supported": ClientCredentials.TOKEN_ENDPOINT_AUTH_METHODS,
                "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
                "grant_types_supported": ["client_credentials"],
                "scopes_supported": ["system/*.read", "system/*.write", "system/*.cruds", "system/AuditEvent.read"],
                "capabilities": [
                    "client-confidential-symmetric",
                    "client-confidential-asymmetric",
                    "permission-v1",
                    "permission-v2",
                ],
            }
        )

    return bp


def accounts_of(app=None) -> Accounts:
    return (app or current_app).extensions["sidep.accounts"]

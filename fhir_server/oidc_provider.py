"""A real, local OpenID Connect provider in the manner of FranceConnect, for tests and development.

Built on authlib's authorisation server (authorisation code grant, PKCE S256 required, the OpenID
Connect code extension with a required nonce) and served by werkzeug on a real socket in a thread:

- discovery `{issuer}/.well-known/openid-configuration` and the signing keys (`/jwks`, ES256);
- `/authorize`: a plain HTML form (no script) to pick one of the configured users, or refuse;
  a browser, a headless browser or `requests` following the form all work;
- `/token`: `client_secret_post` and `client_secret_basic`; the ID token carries `sub`, the
  `nonce` of the request and the `acr` asked (`acr_values`), or the user's own `acr` when the
  user dict sets one (to try a provider answering a lower level);
- `/userinfo`: the FranceConnect claims of the user the access token was given for, as a signed
  JWT (`application/jwt`), as FranceConnect v2 answers;
- `/logout` (end session): checks `id_token_hint` and the registered `post_logout_redirect_uri`,
  then redirects there with `state`.

Users are dicts of FranceConnect claims: `sub`, `given_name` (space-separated given names),
`family_name` (birth name), `birthdate`, `gender`, `birthplace`, `birthcountry` (optional `acr`).
Everything is kept in memory: a provider lives as long as its test or its development run.
"""

from __future__ import annotations

import html
import secrets
import threading
import time
from dataclasses import dataclass, field

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, InvalidRequestError, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, jsonify, redirect, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from werkzeug.serving import WSGIRequestHandler, make_server

ALGORITHM = "ES256"
ACR_LEVELS = ("eidas1", "eidas2", "eidas3")
USER_CLAIMS = ("given_name", "family_name", "birthdate", "gender", "birthplace", "birthcountry")
CODE_LIFETIME = 60  # seconds an authorisation code may wait for its exchange
ACCESS_TOKEN_LIFETIME = 60  # FranceConnect's userinfo is read right after the login


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope):
        return scope

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret):
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return endpoint != "token" or method in ("client_secret_post", "client_secret_basic")

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type == "authorization_code"


@dataclass
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    sub: str
    nonce: str | None
    acr: str
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def get_nonce(self):
        return self.nonce

    def get_auth_time(self):
        return self.auth_time

    def get_acr(self):
        return self.acr

    def get_amr(self):
        return None

    def is_expired(self):
        return self.auth_time + CODE_LIFETIME < time.time()


def _granted_acr(asked: str | None, user: dict) -> str:
    """The user's own `acr` if the user dict forces one, else the first level asked we know."""
    if user.get("acr"):
        return user["acr"]
    for value in (asked or "").split():
        if value in ACR_LEVELS:
            return value
    return ACR_LEVELS[0]


class QuietRequestHandler(WSGIRequestHandler):
    """No access log: request lines carry codes, nonces and ID tokens."""

    def log_request(self, code="-", size="-"):
        pass


class Provider:
    """A running provider: `.issuer`, `.stop()`. `signing_key`, `id_token_lifetime` and
    `signed_userinfo` may be changed while it runs (a key the JWKS does not publish, tokens
    already expired, userinfo as plain JSON)."""

    def __init__(self, users, client: Client):
        self.users = {user["sub"]: dict(user) for user in users}
        self.client = client
        self.published_key = ECKey.generate_key("P-256", {"kid": secrets.token_hex(8), "use": "sig", "alg": ALGORITHM})
        self.signing_key = self.published_key
        self.id_token_lifetime = 60
        self.signed_userinfo = True  # FranceConnect v2 signs it; False: plain JSON, as v1 did
        self.codes: dict[str, AuthorizationCode] = {}
        self.access_tokens: dict[str, dict] = {}
        self.used_nonces: set[str] = set()
        self.logouts: list[str] = []  # sub of each session ended at the provider
        self.issuer = ""
        self._server = None

    def sign(self, claims: dict) -> str:
        return jwt.encode({"alg": ALGORITHM, "kid": self.signing_key.kid}, claims, self.signing_key, [ALGORITHM])

    def serve(self) -> "Provider":
        self._server = make_server("127.0.0.1", 0, build_app(self), threaded=True, request_handler=QuietRequestHandler)
        self.issuer = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def start_oidc_provider(
    users: list[dict],
    client_id: str,
    client_secret: str,
    redirect_uris: list[str],
    post_logout_redirect_uris: list[str],
) -> Provider:
    """A provider serving on 127.0.0.1 (a free port) until `.stop()`."""
    client = Client(client_id, client_secret, list(redirect_uris), list(post_logout_redirect_uris))
    return Provider(users, client).serve()


# -- the authorisation server: authlib's grants on the provider's memory ----------------------------


class S256Required(CodeChallenge):
    """PKCE for every client, S256 only (authlib requires it of public clients alone)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE with code_challenge_method=S256 is required")
        super().validate_code_challenge(grant, redirect_uri)


def _code_grant(provider: Provider):
    class CodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

        def save_authorization_code(self, code, req):
            data = req.payload.data
            provider.codes[code] = AuthorizationCode(
                code=code,
                client_id=req.client.client_id,
                redirect_uri=req.payload.redirect_uri,
                scope=req.payload.scope,
                sub=req.user["sub"],
                nonce=data.get("nonce"),
                acr=_granted_acr(data.get("acr_values"), req.user),
                code_challenge=data.get("code_challenge"),
                code_challenge_method=data.get("code_challenge_method"),
            )
            if data.get("nonce"):
                provider.used_nonces.add(data["nonce"])

        def query_authorization_code(self, code, client):
            found = provider.codes.get(code)
            return found if found and found.client_id == client.client_id and not found.is_expired() else None

        def delete_authorization_code(self, authorization_code):
            provider.codes.pop(authorization_code.code, None)

        def authenticate_user(self, authorization_code):
            return provider.users.get(authorization_code.sub)

    return CodeGrant


def _openid_extension(provider: Provider):
    class FranceConnectIdToken(OpenIDCode):
        def resolve_client_private_key(self, client):
            return provider.signing_key

        def get_client_algorithm(self, client):
            return ALGORITHM

        def get_encode_header(self, client):
            return {"alg": ALGORITHM, "kid": provider.signing_key.kid}

        def get_client_claims(self, client):
            now = int(time.time())
            return {
                "iss": provider.issuer,
                "aud": client.client_id,
                "iat": now,
                "exp": now + provider.id_token_lifetime,
            }

        def exists_nonce(self, nonce, req):
            return nonce in provider.used_nonces

        def generate_user_info(self, user, scope):
            return UserInfo(sub=user["sub"])  # the identity itself is read at userinfo

    return FranceConnectIdToken(require_nonce=True)


def _authorization_server(app: Flask, provider: Provider) -> AuthorizationServer:
    def query_client(client_id):
        return provider.client if client_id == provider.client.client_id else None

    def save_token(token, req):
        provider.access_tokens[token["access_token"]] = {
            "sub": req.user["sub"],
            "scope": token.get("scope", ""),
            "expires": time.time() + ACCESS_TOKEN_LIFETIME,
        }

    app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"authorization_code": ACCESS_TOKEN_LIFETIME}
    server = AuthorizationServer(app, query_client=query_client, save_token=save_token)
    server.register_grant(_code_grant(provider), [S256Required(), _openid_extension(provider)])
    return server


# -- the HTTP endpoints ------------------------------------------------------------------------------


def build_app(provider: Provider) -> Flask:
    app = Flask(__name__)
    server = _authorization_server(app, provider)

    @app.get("/.well-known/openid-configuration")
    def discovery():
        base = provider.issuer
        return jsonify(
            issuer=base,
            authorization_endpoint=f"{base}/authorize",
            token_endpoint=f"{base}/token",
            userinfo_endpoint=f"{base}/userinfo",
            jwks_uri=f"{base}/jwks",
            end_session_endpoint=f"{base}/logout",
            response_types_supported=["code"],
            grant_types_supported=["authorization_code"],
            subject_types_supported=["public"],
            scopes_supported=["openid", *USER_CLAIMS],
            claims_supported=["sub", *USER_CLAIMS],
            acr_values_supported=list(ACR_LEVELS),
            id_token_signing_alg_values_supported=[ALGORITHM],
            userinfo_signing_alg_values_supported=[ALGORITHM],
            token_endpoint_auth_methods_supported=["client_secret_post", "client_secret_basic"],
            code_challenge_methods_supported=["S256"],
            prompt_values_supported=["login"],
        )

    @app.get("/jwks")
    def jwks():
        return jsonify(keys=[provider.published_key.as_dict(private=False)])

    @app.route("/authorize", methods=["GET", "POST"])
    def authorize():
        try:
            grant = server.get_consent_grant(end_user=None)
        except OAuth2Error as error:
            return _page("Requête refusée", f"<p>{html.escape(error.error)}</p>"), 400
        if request.method == "POST" and request.form.get("action") == "refuse":
            return server.create_authorization_response(grant=grant, grant_user=None)
        user = provider.users.get(request.form.get("user", "")) if request.method == "POST" else None
        if user is not None:
            return server.create_authorization_response(grant=grant, grant_user=user)
        return _login_page(provider, request.full_path)

    @app.post("/token")
    def token():
        return server.create_token_response()

    @app.get("/userinfo")
    def userinfo():
        granted = provider.access_tokens.get(_bearer())
        if granted is None or granted["expires"] < time.time():
            return jsonify(error="invalid_token"), 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        user = provider.users[granted["sub"]]
        scopes = granted["scope"].split()
        claims = {"sub": user["sub"], "iss": provider.issuer, "aud": provider.client.client_id}
        claims.update({name: user[name] for name in USER_CLAIMS if name in scopes and name in user})
        if not provider.signed_userinfo:
            return jsonify({k: v for k, v in claims.items() if k not in ("iss", "aud")})
        return provider.sign(claims), 200, {"Content-Type": "application/jwt"}

    @app.get("/logout")
    def end_session():
        target = request.args.get("post_logout_redirect_uri", "")
        if target not in provider.client.post_logout_redirect_uris:
            return _page("Déconnexion refusée", "<p>Adresse de retour inconnue.</p>"), 400
        try:
            hint = jwt.decode(request.args.get("id_token_hint", ""), provider.published_key, [ALGORITHM])
        except (JoseError, ValueError):
            return _page("Déconnexion refusée", "<p>id_token_hint invalide.</p>"), 400
        provider.logouts.append(hint.claims.get("sub", ""))
        state = request.args.get("state")
        return redirect(f"{target}{'&' if '?' in target else '?'}state={state}" if state else target)

    return app


def _bearer() -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="fr"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def _login_page(provider: Provider, action: str) -> str:
    """The form posts back to the very request (its query carries the authorisation request)."""
    choices = "".join(
        f'<p><label><input type="radio" id="user-{i}" name="user" value="{html.escape(sub)}"'
        f'{" checked" if i == 0 else ""}> '
        f"{html.escape(user.get('given_name', ''))} {html.escape(user.get('family_name', ''))}</label></p>"
        for i, (sub, user) in enumerate(provider.users.items())
    )
    form = (
        f'<form method="post" action="{html.escape(action)}">{choices}'
        '<button type="submit" id="login" name="action" value="login">Se connecter</button> '
        '<button type="submit" id="refuse" name="action" value="refuse">Annuler</button></form>'
    )
    return _page("Fournisseur d'identité de développement", form)

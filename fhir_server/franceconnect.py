"""FranceConnect login for the citizen portal: an OpenID Connect client (authlib, joserfc).

The authorisation code flow, as FranceConnect's partner documentation asks it:

1. `authorization_url` draws `state`, `nonce` and a PKCE verifier (S256), keeps them in the
   caller's session dict under `PENDING` and sends the browser to the provider with
   `acr_values` (FRANCECONNECT_ACR), the identity scopes and `prompt=login`;
2. `finish` takes the callback's arguments: refuses an `error=...`, a `state` that is not the
   pending one (or no pending login: a callback replayed), exchanges the code at the token
   endpoint with the verifier, verifies the ID token's signature against the provider's JWKS
   (fetched again once for an unknown key: the provider rotated its keys), its `iss`, `aud`,
   `exp`, `iat`, `nonce` and `acr` (at least the level asked), then reads userinfo at once
   (FranceConnect serves it only right after the login) — a signed JWT verified the same way, or
   plain JSON — and returns the `Identity`; the ID token is kept under `ID_TOKEN` for the logout;
3. `logout_url` ends the session at the provider too (`end_session_endpoint`, `id_token_hint`,
   a fresh `state`, `post_logout_redirect_uri`); `logout_finished` checks that state on return.

Any refusal raises `LoginRefused(reason)`: the reason is a short code for logs and for choosing
the message shown, never a token or a personal value. No issuer configured: FranceConnect is
not offered (`FranceConnect.offered(settings)` is False).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import date
from urllib.parse import urlencode

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, JoseError, MissingClaimError
from joserfc.jwk import KeySet

PENDING = "franceconnect_pending"  # session key of the login under way (state, nonce, verifier)
ID_TOKEN = "franceconnect_id_token"  # session key of the ID token, the logout's id_token_hint
LOGOUT_STATE = "franceconnect_logout_state"
ACR_LEVELS = ("eidas1", "eidas2", "eidas3")  # eIDAS levels, lowest first
SIGNING_ALGORITHMS = ("ES256", "RS256")  # FranceConnect signs with these; never "none" nor HS*
RANDOM_BYTES = 32  # state and nonce: 43 URL-safe characters each; the PKCE verifier: 86


class LoginRefused(Exception):
    """The login did not give a trustworthy identity; `reason` says why (no personal value)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Identity:
    """The identity FranceConnect certifies (the civil status, pivot identity)."""

    given_names: list[str]  # in order; FranceConnect sends them space-separated
    family_name: str  # the birth name
    birthdate: date  # unknown parts come as -01 (a presumed date)
    gender: str  # male | female
    birthplace: str  # INSEE (COG) code of the commune; empty when born abroad
    birthcountry: str  # COG code of the country, 99100 = France
    sub: str  # the pseudonymous subject, per client


class FranceConnect:
    def __init__(self, settings):
        self.issuer = settings.franceconnect_issuer
        self.client_id = settings.franceconnect_client_id
        self.client_secret = settings.franceconnect_client_secret
        self.acr = settings.franceconnect_acr
        self.scopes = settings.franceconnect_scopes
        self.timeout = settings.franceconnect_timeout
        self.clock_skew = settings.franceconnect_clock_skew
        self._metadata: dict | None = None
        self._keys: KeySet | None = None

    @staticmethod
    def offered(settings) -> bool:
        return bool(settings.franceconnect_issuer and settings.franceconnect_client_id)

    # -- 1. to the provider ------------------------------------------------------------------------
    def authorization_url(self, session: dict, redirect_uri: str) -> str:
        state, nonce = secrets.token_urlsafe(RANDOM_BYTES), secrets.token_urlsafe(RANDOM_BYTES)
        verifier = secrets.token_urlsafe(2 * RANDOM_BYTES)
        url, _ = self._oauth(redirect_uri).create_authorization_url(
            self.metadata["authorization_endpoint"],
            state=state,
            code_verifier=verifier,
            nonce=nonce,
            acr_values=self.acr,
            prompt="login",
        )
        session[PENDING] = {"state": state, "nonce": nonce, "verifier": verifier, "redirect_uri": redirect_uri}
        return url

    # -- 2. back from the provider -----------------------------------------------------------------
    def finish(self, session: dict, callback_args: dict, redirect_uri: str) -> Identity:
        pending = session.pop(PENDING, None)  # one callback per login: a replay finds nothing
        if not pending:
            raise LoginRefused("no-login-pending")
        if callback_args.get("error"):
            raise LoginRefused(f"provider-error:{_code(callback_args['error'])}")
        if not hmac.compare_digest(str(callback_args.get("state", "")), pending["state"]):
            raise LoginRefused("state")
        if not callback_args.get("code"):
            raise LoginRefused("no-code")
        if redirect_uri != pending["redirect_uri"]:
            raise LoginRefused("redirect-uri")
        token = self._exchange(callback_args["code"], pending.get("verifier"), redirect_uri)
        claims = self._verified_id_token(token.get("id_token"), pending["nonce"])
        identity = self._identity(self._userinfo(token.get("access_token")), claims["sub"])
        session[ID_TOKEN] = token["id_token"]
        return identity

    def _exchange(self, code: str, verifier: str | None, redirect_uri: str) -> dict:
        if not verifier:
            raise LoginRefused("no-pkce-verifier")
        try:
            return self._oauth(redirect_uri).fetch_token(
                self.metadata["token_endpoint"],
                grant_type="authorization_code",
                code=code,
                code_verifier=verifier,
                timeout=self.timeout,
            )
        except OAuthError as error:
            raise LoginRefused(f"token-endpoint:{_code(error.error)}") from None
        except (requests.RequestException, ValueError):
            raise LoginRefused("token-endpoint") from None

    def _verified_id_token(self, id_token: str | None, nonce: str) -> dict:
        if not id_token:
            raise LoginRefused("no-id-token")
        claims = self._verified_jwt(id_token, "id-token")
        registry = jwt.JWTClaimsRegistry(
            leeway=self.clock_skew,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.client_id},
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
            nonce={"essential": True, "value": nonce},
            acr={"essential": True, "values": self._acceptable_acr()},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise LoginRefused("id-token-expired") from None
        except MissingClaimError as error:
            raise LoginRefused(f"id-token-missing:{error.description}") from None
        except JoseError as error:
            raise LoginRefused(f"id-token-claim:{_code(str(error.description or error.error))}") from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.client_id:  # OIDC Core 3.1.3.7 (4, 5)
            raise LoginRefused("id-token-claim:azp")
        return claims

    def _acceptable_acr(self) -> list[str]:
        """The level asked and the higher ones (an eidas2 login satisfies an eidas1 request)."""
        if self.acr not in ACR_LEVELS:
            return [self.acr]
        return list(ACR_LEVELS[ACR_LEVELS.index(self.acr) :])

    def _userinfo(self, access_token: str | None) -> dict:
        if not access_token:
            raise LoginRefused("no-access-token")
        try:
            response = requests.get(
                self.metadata["userinfo_endpoint"],
                headers={"Authorization": f"Bearer {access_token}"},
                timeout=self.timeout,
            )
        except requests.RequestException:
            raise LoginRefused("userinfo") from None
        if response.status_code != 200:
            raise LoginRefused(f"userinfo:{response.status_code}")
        if response.headers.get("Content-Type", "").split(";")[0].strip() == "application/jwt":
            claims = self._verified_jwt(response.text.strip(), "userinfo")
            if claims.get("iss", self.issuer) != self.issuer or self.client_id not in _audiences(claims):
                raise LoginRefused("userinfo-claim:iss-aud")
            return claims
        try:
            claims = response.json()
        except ValueError:
            raise LoginRefused("userinfo-format") from None
        if not isinstance(claims, dict):
            raise LoginRefused("userinfo-format")
        return claims

    def _identity(self, userinfo: dict, sub: str) -> Identity:
        if userinfo.get("sub") != sub:  # OIDC Core 5.3.2: else the answer is not about this login
            raise LoginRefused("userinfo-sub")
        try:
            return Identity(
                given_names=str(userinfo["given_name"]).split(),
                family_name=str(userinfo["family_name"]),
                birthdate=date.fromisoformat(str(userinfo["birthdate"])),
                gender=str(userinfo["gender"]),
                birthplace=str(userinfo.get("birthplace") or ""),
                birthcountry=str(userinfo["birthcountry"]),
                sub=sub,
            )
        except (KeyError, ValueError):
            raise LoginRefused("userinfo-claims") from None

    # -- 3. logout ---------------------------------------------------------------------------------
    def logout_url(self, session: dict, post_logout_redirect_uri: str) -> str | None:
        """The provider's end-session URL, or None when there is no FranceConnect session (or the
        provider has no end-session endpoint): the portal then only clears its own session."""
        id_token = session.pop(ID_TOKEN, None)
        endpoint = self.metadata.get("end_session_endpoint") if id_token else None
        if not endpoint:
            return None
        state = secrets.token_urlsafe(RANDOM_BYTES)
        session[LOGOUT_STATE] = state
        query = urlencode(
            {"id_token_hint": id_token, "state": state, "post_logout_redirect_uri": post_logout_redirect_uri}
        )
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    @staticmethod
    def logout_finished(session: dict, callback_args: dict) -> bool:
        """Did the provider send back the state of our logout (not someone else's link)?"""
        expected = session.pop(LOGOUT_STATE, None)
        return bool(expected) and hmac.compare_digest(str(callback_args.get("state", "")), expected)

    # -- the provider's metadata and keys ----------------------------------------------------------
    @property
    def metadata(self) -> dict:
        if self._metadata is None:
            document = self._get_json(f"{self.issuer}/.well-known/openid-configuration", "discovery")
            if document.get("issuer") != self.issuer:  # OIDC Discovery 4.3
                raise LoginRefused("discovery-issuer")
            self._metadata = document
        return self._metadata

    def _verified_jwt(self, token: str, what: str) -> dict:
        allowed = [a for a in self.metadata.get("id_token_signing_alg_values_supported", []) if a in SIGNING_ALGORITHMS]
        for refresh in (False, True):
            keys = self._key_set(refresh)
            try:
                return jwt.decode(token, keys, algorithms=allowed or list(SIGNING_ALGORITHMS)).claims
            except JoseError as error:
                if error.error == "bad_signature" or refresh:
                    raise LoginRefused(f"{what}-signature") from None
                # an unknown key id: the provider may have rotated its keys since we read them
        raise LoginRefused(f"{what}-signature")  # pragma: no cover (the loop always returns or raises)

    def _key_set(self, refresh: bool) -> KeySet:
        if self._keys is None or refresh:
            try:
                self._keys = KeySet.import_key_set(self._get_json(self.metadata["jwks_uri"], "jwks"))
            except (JoseError, ValueError, TypeError, KeyError):
                raise LoginRefused("jwks") from None
        return self._keys

    def _get_json(self, url: str, what: str) -> dict:
        try:
            response = requests.get(url, timeout=self.timeout)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError):
            raise LoginRefused(what) from None
        if not isinstance(document, dict):
            raise LoginRefused(what)
        return document

    def _oauth(self, redirect_uri: str) -> OAuth2Session:
        methods = self.metadata.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
        return OAuth2Session(
            self.client_id,
            self.client_secret,
            scope=self.scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_post"
            if "client_secret_post" in methods
            else "client_secret_basic",
        )


def _audiences(claims: dict) -> list:
    aud = claims.get("aud", [])
    return aud if isinstance(aud, list) else [aud]


def _code(text: object) -> str:
    """A provider's error code, cut to what a code looks like (it is logged)."""
    return "".join(c for c in str(text)[:40] if c.isalnum() or c in "_-.") or "unknown"

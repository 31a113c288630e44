"""Software clients and their access tokens in MongoDB.

- `_clients`: one document per OAuth2 client: the organisation it is bound to (FINESS juridique and
  its FINESS géographique sites), its role and allowed scopes, how it authenticates (a secret,
  stored as a salted scrypt hash, or a public JWK set for private_key_jwt), active or revoked.
- `_tokens`: one document per access token, keyed by the SHA-256 of the token (the token itself is
  never stored), with its expiry and a snapshot of the principal it stands for, so that checking a
  token is one read by `_id`. Revoking a client deletes its tokens: they fail at once.
- `_jti`: the `jti` of the JWT client assertions already used (replay protection), until they expire.

Web users (professionals, operators) will live beside clients with the same principal fields.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from .mongo import client_for

CLIENTS = "_clients"
TOKENS = "_tokens"
JTI = "_jti"
SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **SCRYPT)
    return "scrypt${n}${r}${p}$".format(**SCRYPT) + "$".join(base64.b64encode(part).decode() for part in (salt, digest))


def verify_secret(secret: str, stored: str | None) -> bool:
    if not stored or not secret:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            secret.encode(), salt=base64.b64decode(salt), dklen=len(expected), n=int(n), r=int(r), p=int(p)
        )
    except (ValueError, TypeError):
        return False
    return scheme == "scrypt" and hmac.compare_digest(actual, expected)


def token_key(token: str) -> str:
    """Tokens are 42 random characters: a plain SHA-256 is enough to keep them out of the database."""
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    def __init__(self, db):
        self.db = db
        self.clients = db[CLIENTS]
        self.tokens = db[TOKENS]
        self.jti = db[JTI]

    @classmethod
    def connect(cls, uri: str, db_name: str) -> "Accounts":
        return cls(client_for(uri)[db_name])

    def ensure_indexes(self) -> None:
        self.tokens.create_index([("client", ASCENDING)])
        self.tokens.create_index([("exp", ASCENDING)], expireAfterSeconds=0)
        self.jti.create_index([("exp", ASCENDING)], expireAfterSeconds=0)
        self.clients.create_index([("org", ASCENDING)])

    # -- clients ---------------------------------------------------------------------------
    def register_client(
        self,
        name: str,
        organisation: str | None,
        sites: list[str],
        scope: str,
        role: str = "laboratory",
        jwks: dict | None = None,
        organisation_name: str | None = None,
    ) -> tuple[dict, str | None]:
        """Store a new client; returns (its document, its secret or None for a JWK client)."""
        client_id = secrets.token_hex(10)
        secret = None if jwks else secrets.token_urlsafe(32)
        doc = {
            "_id": client_id,
            "name": name,
            "org": organisation,
            "org_name": organisation_name,
            "sites": list(sites),
            "role": role,
            "scope": scope,
            "auth": ["private_key_jwt"] if jwks else ["client_secret_basic", "client_secret_post"],
            "secret": hash_secret(secret) if secret else None,
            "jwks": jwks,
            "active": True,
            "created": utc_now(),
        }
        self.clients.insert_one(doc)
        return doc, secret

    def client(self, client_id: str) -> dict | None:
        return self.clients.find_one({"_id": client_id})

    def list_clients(self) -> list[dict]:
        return list(self.clients.find({}, {"secret": 0}).sort([("created", ASCENDING)]))

    def rotate_secret(self, client_id: str) -> str | None:
        """A new secret replaces the old one (tokens already issued live on until they expire)."""
        secret = secrets.token_urlsafe(32)
        result = self.clients.update_one(
            {"_id": client_id, "active": True, "jwks": None},
            {"$set": {"secret": hash_secret(secret), "rotated": utc_now()}},
        )
        return secret if result.matched_count else None

    def set_jwks(self, client_id: str, jwks: dict) -> bool:
        result = self.clients.update_one(
            {"_id": client_id, "active": True}, {"$set": {"jwks": jwks, "rotated": utc_now()}}
        )
        return bool(result.matched_count)

    def revoke_client(self, client_id: str) -> bool:
        """The client can no longer get tokens, and the tokens it holds fail from now on."""
        result = self.clients.update_one({"_id": client_id}, {"$set": {"active": False, "revoked": utc_now()}})
        self.tokens.delete_many({"client": client_id})
        return bool(result.matched_count)

    # -- tokens ----------------------------------------------------------------------------
    def save_token(self, token: str, client_id: str, scope: str, lifetime: int, principal: dict) -> None:
        self.tokens.insert_one(
            {
                "_id": token_key(token),
                "client": client_id,
                "scope": scope,
                "exp": utc_now() + timedelta(seconds=lifetime),
                "principal": principal,
            }
        )

    def token(self, token: str) -> dict | None:
        """The token's document (one read by _id), or None when unknown or revoked."""
        return self.tokens.find_one({"_id": token_key(token)})

    def use_jti(self, client_id: str, jti: str, expires: Any) -> bool:
        """False when this assertion id was used before (a replayed assertion)."""
        try:
            exp = datetime.fromtimestamp(float(expires), UTC).replace(tzinfo=None)
        except (TypeError, ValueError, OverflowError):
            exp = utc_now() + timedelta(minutes=10)
        try:
            self.jti.insert_one({"_id": f"{client_id}:{jti}", "exp": exp})
        except DuplicateKeyError:
            return False
        return True

"""Professional web users and their web sessions in MongoDB (the web UI, standing in for Pro Santé
Connect: a password and a TOTP second factor, RFC 6238).

- `_users`: one document per user, keyed by login: name, role, organisation (FINESS juridique, its
  sites) or RPPS number, the password as a salted scrypt hash (the same scheme as client secrets),
  the TOTP secret (base32) and the last time step accepted (a code is never accepted twice), and the
  browsers it trusts (`devices`: SHA-256 of each device cookie, with its end of validity).
- `_login_failures`: consecutive failed logins per (account, client) pair, keyed by a SHA-256 of
  both (neither the login typed nor the client is stored in clear), with `locked_until` once the
  pair reached the lock-out limit; a TTL index forgets them. The client is a trusted browser (its
  device cookie) or, for any other client, its address (fhir_server/web/throttle.py): an attacker
  who fails on someone's account locks out his own pair, not the professional on a browser they
  used before, nor from another address. Unknown logins are counted the same way, so that a lock-out
  says nothing of whether an account exists.
- `_web_sessions`: one document per signed-in browser, keyed by the SHA-256 of the session cookie
  (the cookie value itself is never stored), with a snapshot of the principal, the CSRF token of its
  forms, its idle expiry (`exp`, sliding) and its absolute end (`end`). A TTL index removes expired
  ones; a read checks both dates anyway (the TTL monitor runs once a minute).
"""

from __future__ import annotations

import calendar
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from .accounts import hash_secret, utc_now, verify_secret
from .mongo import client_for

USERS = "_users"
SESSIONS = "_web_sessions"
FAILURES = "_login_failures"
_DUMMY_HASH = hash_secret(secrets.token_urlsafe(16))  # unknown logins cost the same scrypt as known ones


@dataclass(frozen=True)
class Lockout:
    """`limit` consecutive failed logins (wrong password or wrong code) of one (account, client)
    pair lock that pair for `duration` (an operator may unlock the account sooner)."""

    limit: int = 5
    duration: timedelta = timedelta(minutes=15)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def account_key(login: str) -> str:
    """What the lock-out and the throttles know of a login typed in the form."""
    return _digest("account", login)


class UserExists(ValueError):
    pass


def session_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    def __init__(self, db):
        self.db = db
        self.users = db[USERS]
        self.sessions = db[SESSIONS]
        self.failures = db[FAILURES]

    @classmethod
    def connect(cls, uri: str, db_name: str) -> "Users":
        return cls(client_for(uri)[db_name])

    def ensure_indexes(self) -> None:
        self.sessions.create_index([("exp", ASCENDING)], expireAfterSeconds=0)
        self.sessions.create_index([("user", ASCENDING)])
        self.users.create_index([("org", ASCENDING)])
        self.failures.create_index([("exp", ASCENDING)], expireAfterSeconds=0)
        self.failures.create_index([("account", ASCENDING)])

    # -- users -----------------------------------------------------------------------------
    def create_user(
        self,
        login: str,
        password: str,
        name: str,
        role: str,
        organisation: str | None = None,
        sites: list[str] | None = None,
        rpps: str | None = None,
        organisation_name: str | None = None,
        totp_secret: str | None = None,
    ) -> dict:
        """Store a new user; returns its document (with the TOTP secret, to provision the app once)."""
        import pyotp

        doc = {
            "_id": login,
            "name": name,
            "role": role,
            "org": organisation,
            "org_name": organisation_name,
            "sites": list(sites or []),
            "rpps": rpps,
            "password": hash_secret(password),
            "totp": totp_secret or pyotp.random_base32(),
            "totp_step": None,
            "devices": [],
            "active": True,
            "created": utc_now(),
        }
        try:
            self.users.insert_one(doc)
        except DuplicateKeyError:
            raise UserExists(login) from None
        return doc

    def user(self, login: str) -> dict | None:
        return self.users.find_one({"_id": login})

    def list_users(self) -> list[dict]:
        return list(self.users.find({}, {"password": 0, "totp": 0}).sort([("created", ASCENDING)]))

    def set_password(self, login: str, password: str) -> bool:
        """A new password; the browsers the account trusted are forgotten (the old one may be known)."""
        result = self.users.update_one({"_id": login}, {"$set": {"password": hash_secret(password), "devices": []}})
        return bool(result.matched_count)

    def set_active(self, login: str, active: bool) -> bool:
        change = {"active": active} if active else {"active": False, "devices": []}
        result = self.users.update_one({"_id": login}, {"$set": change})
        if not active:
            self.sessions.delete_many({"user": login})
        return bool(result.matched_count)

    def delete_user(self, login: str) -> None:
        self.users.delete_one({"_id": login})
        self.sessions.delete_many({"user": login})
        self.failures.delete_many({"account": account_key(login)})

    def unlock(self, login: str) -> bool:
        """Clear the lock-outs (and failure counts) of every client of this account."""
        self.failures.delete_many({"account": account_key(login)})
        return self.users.count_documents({"_id": login}, limit=1) > 0

    def locked_clients(self, login: str) -> int:
        """How many clients are locked out of this account now."""
        return self.failures.count_documents({"account": account_key(login), "locked_until": {"$gt": utc_now()}})

    # -- login -----------------------------------------------------------------------------
    def authenticate(
        self, login: str, password: str, code: str, client: str = "", lockout: Lockout = Lockout()
    ) -> tuple[str, dict | None]:
        """('ok', user) | ('locked', None) | ('refused', None), for the `client` (a trusted browser
        or an address, see fhir_server/web/throttle.py) trying this login. Both factors are checked
        before answering, a failure does not say which one failed, and an unknown or disabled login
        takes the same path (the same scrypt, the same failure count and lock-out) as a wrong password."""
        import pyotp

        now = utc_now()
        pair = _digest("pair", login, client)
        counted = self.failures.find_one({"_id": pair})
        if counted and counted.get("locked_until") and counted["locked_until"] > now:
            return "locked", None
        user = self.user(login) if login else None
        known = bool(user and user.get("active"))
        user = user if known else None
        # one scrypt whatever the case (unknown login, empty password): the same cost for every refusal
        matched = verify_secret(password or "\x00", user["password"] if user else _DUMMY_HASH)
        if user and password and matched:
            step = _accepted_step(pyotp.TOTP(user["totp"]), (code or "").strip(), user.get("totp_step"))
            # compare-and-set on the step: two logins racing with the same code, only one wins
            won = step is not None and self.users.find_one_and_update(
                {"_id": login, "$or": [{"totp_step": None}, {"totp_step": {"$lt": step}}]},
                {"$set": {"totp_step": step, "last_login": now}},
                return_document=ReturnDocument.AFTER,
            )
            if won:
                self.failures.delete_one({"_id": pair})
                return "ok", won
        return self._failed(pair, login, now, lockout), None

    def _failed(self, pair: str, login: str, now, lockout: Lockout) -> str:
        failed = self.failures.find_one_and_update(
            {"_id": pair},
            {"$inc": {"failed": 1}, "$set": {"account": account_key(login), "exp": now + lockout.duration}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        if failed["failed"] < lockout.limit:
            return "refused"
        until = now + lockout.duration
        self.failures.update_one({"_id": pair}, {"$set": {"failed": 0, "locked_until": until, "exp": until}})
        return "locked"

    # -- trusted browsers (device cookies) -----------------------------------------------------
    def trusts_device(self, login: str, token: str) -> bool:
        """Whether this device cookie is one a browser got when it logged in to this account."""
        if not (login and token):
            return False
        user = self.users.find_one({"_id": login}, {"devices": 1, "active": 1})
        key, now = session_key(token), utc_now()
        return bool(
            user
            and user.get("active")
            and any(d.get("k") == key and (d.get("until") or now) > now for d in user.get("devices") or [])
        )

    def trust_device(self, login: str, token: str, replaced: str | None, lifetime: timedelta, keep: int) -> None:
        """Remember a browser that just logged in (its new device cookie, instead of the one it sent)."""
        user = self.users.find_one({"_id": login}, {"devices": 1}) or {}
        now, gone = utc_now(), session_key(replaced) if replaced else None
        devices = [d for d in user.get("devices") or [] if (d.get("until") or now) > now and d.get("k") != gone]
        devices.append({"k": session_key(token), "until": now + lifetime})
        self.users.update_one({"_id": login}, {"$set": {"devices": devices[-keep:] if keep > 0 else []}})

    # -- web sessions ----------------------------------------------------------------------
    def create_session(self, login: str, principal: dict, idle: timedelta, absolute: timedelta) -> tuple[str, dict]:
        """A new session; returns (the cookie value, the session document)."""
        token = secrets.token_urlsafe(32)
        now = utc_now()
        doc = {
            "_id": session_key(token),
            "user": login,
            "principal": principal,
            "csrf": secrets.token_urlsafe(24),
            "created": now,
            "exp": min(now + idle, now + absolute),
            "end": now + absolute,
        }
        self.sessions.insert_one(doc)
        return token, doc

    def session(self, token: str, idle: timedelta) -> dict | None:
        """The live session for this cookie value, its idle expiry pushed back; None when expired."""
        if not token:
            return None
        now = utc_now()
        key = session_key(token)
        doc = self.sessions.find_one({"_id": key})
        if doc is None or doc["exp"] <= now or doc["end"] <= now:
            if doc is not None:
                self.sessions.delete_one({"_id": key})
            return None
        exp = min(now + idle, doc["end"])
        if exp - doc["exp"] > timedelta(seconds=30):  # not a write on every click
            self.sessions.update_one({"_id": key}, {"$set": {"exp": exp}})
            doc["exp"] = exp
        return doc

    def end_session(self, token: str) -> None:
        if token:
            self.sessions.delete_one({"_id": session_key(token)})


def _accepted_step(totp, code: str, last_step: int | None) -> int | None:
    """The time step the code belongs to (now, or one step either side for clock drift), unless it
    was already used: RFC 6238 section 5.2 asks that a code be accepted once."""
    if not (code.isdigit() and len(code) == totp.digits):
        return None
    current = calendar.timegm(utc_now().timetuple()) // totp.interval
    for step in (current, current - 1, current + 1):
        if secrets.compare_digest(totp.generate_otp(step), code):
            return step if last_step is None or step > last_step else None
    return None

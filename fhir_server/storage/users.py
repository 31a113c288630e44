"""Professional web users and their web sessions in MongoDB (the web UI, standing in for Pro Santé
Connect: a password and a TOTP second factor, RFC 6238).

- `_users`: one document per user, keyed by login: name, role, organisation (FINESS juridique, its
  sites) or RPPS number, the password as a salted scrypt hash (the same scheme as client secrets),
  the TOTP secret (base32) and the last time step accepted (a code is never accepted twice), the
  count of consecutive failed logins and, after LOCKOUT_LIMIT of them, `locked_until`.
- `_web_sessions`: one document per signed-in browser, keyed by the SHA-256 of the session cookie
  (the cookie value itself is never stored), with a snapshot of the principal, the CSRF token of its
  forms, its idle expiry (`exp`, sliding) and its absolute end (`end`). A TTL index removes expired
  ones; a read checks both dates anyway (the TTL monitor runs once a minute).
"""
from __future__ import annotations

import calendar
import hashlib
import secrets
from datetime import timedelta

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from .accounts import hash_secret, utc_now, verify_secret
from .mongo import client_for

USERS = "_users"
SESSIONS = "_web_sessions"
LOCKOUT_LIMIT = 5  # consecutive failed logins (wrong password or wrong code) before the account locks
LOCKOUT_DURATION = timedelta(minutes=15)  # how long it stays locked (an operator may unlock it sooner)
_DUMMY_HASH = hash_secret(secrets.token_urlsafe(16))  # unknown logins cost the same scrypt as known ones


class UserExists(ValueError):
    pass


def session_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    def __init__(self, db):
        self.db = db
        self.users = db[USERS]
        self.sessions = db[SESSIONS]

    @classmethod
    def connect(cls, uri: str, db_name: str) -> "Users":
        return cls(client_for(uri)[db_name])

    def ensure_indexes(self) -> None:
        self.sessions.create_index([("exp", ASCENDING)], expireAfterSeconds=0)
        self.sessions.create_index([("user", ASCENDING)])
        self.users.create_index([("org", ASCENDING)])

    # -- users -----------------------------------------------------------------------------
    def create_user(self, login: str, password: str, name: str, role: str, organisation: str | None = None,
                    sites: list[str] | None = None, rpps: str | None = None,
                    organisation_name: str | None = None, totp_secret: str | None = None) -> dict:
        """Store a new user; returns its document (with the TOTP secret, to provision the app once)."""
        import pyotp

        doc = {"_id": login, "name": name, "role": role, "org": organisation, "org_name": organisation_name,
               "sites": list(sites or []), "rpps": rpps, "password": hash_secret(password),
               "totp": totp_secret or pyotp.random_base32(), "totp_step": None, "failed": 0,
               "locked_until": None, "active": True, "created": utc_now()}
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
        result = self.users.update_one({"_id": login}, {"$set": {"password": hash_secret(password)}})
        return bool(result.matched_count)

    def set_active(self, login: str, active: bool) -> bool:
        result = self.users.update_one({"_id": login}, {"$set": {"active": active}})
        if not active:
            self.sessions.delete_many({"user": login})
        return bool(result.matched_count)

    def delete_user(self, login: str) -> None:
        self.users.delete_one({"_id": login})
        self.sessions.delete_many({"user": login})

    def unlock(self, login: str) -> bool:
        result = self.users.update_one({"_id": login}, {"$set": {"failed": 0, "locked_until": None}})
        return bool(result.matched_count)

    # -- login -----------------------------------------------------------------------------
    def authenticate(self, login: str, password: str, code: str) -> tuple[str, dict | None]:
        """('ok', user) | ('locked', user) | ('refused', user or None). Both factors are checked
        before answering, and a failure does not say which one failed."""
        import pyotp

        user = self.user(login) if login else None
        now = utc_now()
        if user is None or not user.get("active"):
            verify_secret(password or "x", _DUMMY_HASH)
            return "refused", None
        if user.get("locked_until") and user["locked_until"] > now:
            return "locked", user
        password_ok = verify_secret(password or "", user.get("password"))
        step = _accepted_step(pyotp.TOTP(user["totp"]), (code or "").strip(), user.get("totp_step"))
        if password_ok and step is not None:
            # compare-and-set on the step: two logins racing with the same code, only one wins
            won = self.users.find_one_and_update(
                {"_id": login, "$or": [{"totp_step": None}, {"totp_step": {"$lt": step}}]},
                {"$set": {"totp_step": step, "failed": 0, "locked_until": None, "last_login": now}},
                return_document=ReturnDocument.AFTER)
            if won is not None:
                return "ok", won
        failed = self.users.find_one_and_update({"_id": login}, {"$inc": {"failed": 1}},
                                                return_document=ReturnDocument.AFTER)
        if failed and failed["failed"] >= LOCKOUT_LIMIT:
            self.users.update_one({"_id": login}, {"$set": {"locked_until": now + LOCKOUT_DURATION, "failed": 0}})
            return "locked", failed
        return "refused", failed

    # -- web sessions ----------------------------------------------------------------------
    def create_session(self, login: str, principal: dict, idle: timedelta, absolute: timedelta) -> tuple[str, dict]:
        """A new session; returns (the cookie value, the session document)."""
        token = secrets.token_urlsafe(32)
        now = utc_now()
        doc = {"_id": session_key(token), "user": login, "principal": principal, "csrf": secrets.token_urlsafe(24),
               "created": now, "exp": min(now + idle, now + absolute), "end": now + absolute}
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

"""The citizen portal's session, apart from the professionals' one (fhir_server/web/session.py).

- Its cookie (`sidep_portail`, Path=/portail, HttpOnly, SameSite=Lax, Secure when the public base
  URL is https) holds an opaque random value; only its SHA-256 is stored
  (storage/portal_sessions.py). A session ends PORTAL_SESSION_MINUTES after its last request.
- A session starts with the first page that has a form: every form carries the session's CSRF
  token, checked on every POST (400 when missing or wrong).
- It follows the sign-in steps (the deep link's hash, the birth date confirmed), then
  `sign_in(patients, method)` makes it a signed-in one under a new cookie value (no session
  fixation); `current()` is the signed-in person, `sign_out()` ends it.
- The language (`?lang=fr|en` on any page) is kept in its own cookie, so that it outlives sessions.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import abort, current_app, g, request

from ..storage.accounts import utc_now
from ..storage.portal_sessions import PortalSessionRecord, PortalSessions
from .messages import DEFAULT, LANGUAGES

COOKIE = "sidep_portail"
LANG_COOKIE = "sidep_portail_lang"
PATH = "/portail"
METHODS = ("deep-link", "franceconnect")
LANG_COOKIE_DAYS = 365


@dataclass(frozen=True)
class PortalSession:
    patients: list[str]  # Patient ids the person may see
    method: str  # "deep-link" | "franceconnect"
    signed_in: datetime  # naive UTC
    link: str | None = None  # for a deep link: the link's hash


def sessions() -> PortalSessions:
    return current_app.extensions["sidep.portal.sessions"]


def lifetime() -> timedelta:
    return timedelta(minutes=current_app.config["SETTINGS"].portal_session_minutes)


def secure_cookies() -> bool:
    return current_app.config["SETTINGS"].base_url.lower().startswith("https://")


# -- each request ----------------------------------------------------------------------------------
def load() -> None:
    """Before every portal request: the live session of the cookie, if any, kept alive."""
    g.portal_record = sessions().live(request.cookies.get(COOKIE, ""))
    g.portal_cookie = None  # a new cookie value to send back
    g.portal_had_cookie = bool(request.cookies.get(COOKIE))
    if g.portal_record is not None:
        sessions().touch(g.portal_record, utc_now() + lifetime())


def record() -> PortalSessionRecord:
    """This request's session, started now if there is none (its cookie goes with the answer)."""
    if g.get("portal_record") is None:
        g.portal_cookie, g.portal_record = sessions().start(utc_now() + lifetime())
    return g.portal_record


def save(response) -> None:
    """After every portal request: the session's cookie when it is new, the language's when chosen."""
    if g.get("portal_cookie"):
        response.set_cookie(COOKIE, g.portal_cookie, path=PATH, httponly=True, samesite="Lax", secure=secure_cookies())
    elif g.get("portal_clear"):
        response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="Lax", secure=secure_cookies())
    chosen = request.args.get("lang")
    if chosen in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE,
            chosen,
            max_age=LANG_COOKIE_DAYS * 86400,
            path=PATH,
            httponly=True,
            samesite="Lax",
            secure=secure_cookies(),
        )


def expired() -> bool:
    """Did the browser bring a session cookie that is no longer live?"""
    return bool(g.get("portal_had_cookie")) and g.get("portal_record") is None


def language() -> str:
    for chosen in (request.args.get("lang"), request.cookies.get(LANG_COOKIE)):
        if chosen in LANGUAGES:
            return chosen
    return DEFAULT


# -- CSRF ------------------------------------------------------------------------------------------
def csrf_token() -> str:
    return record().csrf


def check_csrf() -> None:
    """Every POST carries its form's token, which is the session's (400 otherwise)."""
    if request.method != "POST":
        return
    sent = request.form.get("csrf_token", "")
    session = g.get("portal_record")
    if not (sent and session is not None and secrets.compare_digest(sent, session.csrf)):
        abort(400)


# -- the sign-in steps -----------------------------------------------------------------------------
def begin_link(link_hash: str) -> None:
    """A deep link was opened: the steps start again for it (nothing of another link is kept)."""
    session = record()
    sessions().update(session, link=link_hash, birth_confirmed=False)
    session.link, session.birth_confirmed = link_hash, False


def pending_link() -> str | None:
    session = g.get("portal_record")
    return session.link if session is not None else None


def confirm_birth() -> None:
    session = record()
    sessions().update(session, birth_confirmed=True)
    session.birth_confirmed = True


def birth_confirmed() -> bool:
    session = g.get("portal_record")
    return bool(session is not None and session.link and session.birth_confirmed)


# -- the interface other sign-in methods use -------------------------------------------------------
def sign_in(patients: list[str], method: str, oidc: dict | None = None) -> None:
    """The person is signed in and may see the results of `patients` (Patient ids). The session
    gets a new cookie value; a deep link's hash stays with it (to know which link was used), and
    `oidc` what a later logout at the provider needs."""
    if method not in METHODS:
        raise ValueError(f"sign-in method {method!r} is not one of {', '.join(METHODS)}")
    previous = g.get("portal_record")
    link = previous.link if previous is not None and method == "deep-link" else None
    if previous is not None:
        sessions().end(previous)
    g.portal_cookie, g.portal_record = sessions().start(
        utc_now() + lifetime(),
        link=link,
        patients=list(patients),
        method=method,
        signed_in=utc_now(),
        oidc=dict(oidc or {}),
    )


def oidc() -> dict:
    """A copy of what the OpenID Connect client keeps in this session (`save_oidc` to keep changes)."""
    session = g.get("portal_record")
    return dict(session.oidc or {}) if session is not None else {}


def save_oidc(values: dict) -> None:
    session = record()
    sessions().update(session, oidc=dict(values))
    session.oidc = dict(values)


def current() -> PortalSession | None:
    session = g.get("portal_record")
    if session is None or not session.signed_in or not session.method:
        return None
    return PortalSession(list(session.patients), session.method, session.signed_in, session.link)


def sign_out() -> None:
    session = g.get("portal_record")
    if session is not None:
        sessions().end(session)
    g.portal_record, g.portal_cookie, g.portal_clear = None, None, True

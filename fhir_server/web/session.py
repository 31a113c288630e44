"""Web sessions: the signed-in professional becomes `flask.g.principal`, a `Principal` of kind
"user", exactly like a bearer token makes one of kind "client"; authorisation (the store's access
hook, the write hooks) and audit then run the same code for both.

- The session cookie is an opaque random value (only its SHA-256 is stored, storage/users.py):
  HttpOnly, SameSite=Lax, Path=/ui, Secure when the public base URL is https.
- Sessions expire after IDLE minutes without a request and, at the latest, ABSOLUTE hours after login.
- Every form carries a CSRF token: the session's own once signed in; before login, a double-submit
  cookie (the login form's token must equal a cookie the page set).
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from functools import wraps

from flask import abort, current_app, g, redirect, request, url_for

from ..auth.principal import ROLE_LABORATORY, ROLE_OPERATOR, ROLE_PUBLIC_HEALTH, Principal
from ..auth.scopes import parse
from ..storage.users import Users

COOKIE = "sidep_session"
LOGIN_CSRF_COOKIE = "sidep_login_csrf"
PATH = "/ui"
IDLE = timedelta(minutes=30)
ABSOLUTE = timedelta(hours=12)

ROLE_PHARMACIST, ROLE_NURSE, ROLE_DOCTOR = "pharmacist", "nurse", "doctor"
USER_ROLES = (ROLE_LABORATORY, ROLE_PHARMACIST, ROLE_NURSE, ROLE_DOCTOR, ROLE_PUBLIC_HEALTH, ROLE_OPERATOR)
ROLE_LABELS = {
    ROLE_LABORATORY: "Personnel de laboratoire",
    ROLE_PHARMACIST: "Pharmacien(ne)",
    ROLE_NURSE: "Infirmier(ère)",
    ROLE_DOCTOR: "Médecin",
    ROLE_PUBLIC_HEALTH: "Agent de santé publique",
    ROLE_OPERATOR: "Opérateur de la plateforme",
}
PROFESSIONALS = frozenset({ROLE_PHARMACIST, ROLE_NURSE, ROLE_DOCTOR})  # enter rapid antigen test results
RESULT_READERS = PROFESSIONALS | {ROLE_LABORATORY, ROLE_PUBLIC_HEALTH}
RESULT_WRITERS = PROFESSIONALS | {ROLE_LABORATORY}  # correct identity and contact details
# SMART scopes a web user's principal carries, by role (user/ context: a person, not a system)
SCOPES = {ROLE_PUBLIC_HEALTH: "user/*.read", ROLE_OPERATOR: "user/*.read"}
DEFAULT_SCOPE = "user/*.read user/*.write"


def users() -> Users:
    return current_app.extensions["sidep.users"]


def idle() -> timedelta:
    return timedelta(seconds=int(current_app.config["SETTINGS"].extra.get("web_session_idle", IDLE.total_seconds())))


def secure_cookies() -> bool:
    return current_app.config["SETTINGS"].base_url.lower().startswith("https://")


def principal_for(user: dict) -> Principal:
    return Principal(
        "user",
        user["_id"],
        user.get("name") or user["_id"],
        user["role"],
        parse(SCOPES.get(user["role"], DEFAULT_SCOPE)),
        user.get("org"),
        user.get("org_name"),
        frozenset(user.get("sites") or ()),
        user.get("rpps"),
    )


def load_session() -> None:
    """Before every /ui request: the session of the cookie, if live, as g.principal."""
    g.web_session = None
    doc = users().session(request.cookies.get(COOKIE, ""), idle())
    if doc is not None:
        g.web_session = doc
        g.principal = Principal.from_doc(doc["principal"])


def start_session(response, user: dict) -> None:
    token, _ = users().create_session(user["_id"], principal_for(user).to_doc(), idle(), ABSOLUTE)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(ABSOLUTE.total_seconds()),
        path=PATH,
        httponly=True,
        samesite="Lax",
        secure=secure_cookies(),
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=PATH, httponly=True, samesite="Lax", secure=secure_cookies())


def end_session(response) -> None:
    users().end_session(request.cookies.get(COOKIE, ""))
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="Lax", secure=secure_cookies())


# -- CSRF ------------------------------------------------------------------------------------------
def csrf_token() -> str:
    """The token forms of this page carry (the session's, or the login page's double-submit one)."""
    session = g.get("web_session")
    if session is not None:
        return session["csrf"]
    if "login_csrf" not in g:
        g.login_csrf = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    return g.login_csrf


def set_login_csrf_cookie(response) -> None:
    if "login_csrf" in g and g.get("web_session") is None:
        response.set_cookie(
            LOGIN_CSRF_COOKIE, g.login_csrf, path=PATH, httponly=True, samesite="Lax", secure=secure_cookies()
        )


def check_csrf() -> None:
    """Every POST carries the form's token (400 otherwise)."""
    if request.method != "POST":
        return
    sent = request.form.get("csrf_token", "")
    session = g.get("web_session")
    expected = session["csrf"] if session is not None else request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not (sent and expected and secrets.compare_digest(sent, expected)):
        abort(400, description="Jeton de formulaire (CSRF) absent ou invalide : rechargez la page et recommencez.")


# -- access to pages -------------------------------------------------------------------------------
def login_required(*roles: str):
    """The page needs a signed-in user, of one of `roles` when given (403 otherwise)."""

    def decorate(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            principal = g.get("principal")
            if g.get("web_session") is None or principal is None:
                return redirect(url_for("web.login", next=request.full_path if request.method == "GET" else None))
            if roles and principal.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorate

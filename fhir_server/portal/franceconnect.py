"""Signing in to the portal with FranceConnect (the generic URL's way, beside the deep link).

The OpenID Connect client is fhir_server/franceconnect.py (PKCE, state, nonce, the eIDAS level,
the ID token's signature, userinfo at once, logout at the provider); the rule that lets an
account see results is fhir_server/identity_match.py: its identity traits must be exactly the
tested patient's. When no Patient matches, the page says why (which traits differ, never anything
about the Patient that nearly matched) and what to do — the SI-DEP guide's cases:

- A: nothing has the account's identity: the laboratory corrects the contact details and resends
  the dossier (a notification with the personal link follows);
- B: a dossier nearly matches and a notification was sent: use the link of the SMS or e-mail, or
  ask the laboratory to correct the identity and resend the dossier;
- C: a dossier nearly matches but has no contact details: ask the laboratory to correct it.

What the client keeps between the steps lives in the portal's server-side session (`oidc`),
never in a cookie; the identity itself is not kept at all.
"""

from __future__ import annotations

import logging

from flask import abort, current_app, redirect, request, url_for

from ..franceconnect import ID_TOKEN, FranceConnect, LoginRefused
from ..identity_match import find_patients
from . import session

log = logging.getLogger(__name__)
CANCELLED = "provider-error:access_denied"  # the person chose not to go on at the provider


def register(bp) -> None:
    bp.add_url_rule("/franceconnect/login", "fc_login", login)
    bp.add_url_rule("/franceconnect/callback", "fc_callback", callback)
    bp.add_url_rule("/franceconnect/logout", "fc_logout", logout, methods=["POST"])
    bp.add_url_rule("/franceconnect/deconnecte", "fc_logged_out", logged_out)


def offered() -> bool:
    return FranceConnect.offered(current_app.config["SETTINGS"])


def client() -> FranceConnect:
    extensions = current_app.extensions
    if "sidep.franceconnect" not in extensions:  # it caches the provider's discovery and keys
        extensions["sidep.franceconnect"] = FranceConnect(current_app.config["SETTINGS"])
    return extensions["sidep.franceconnect"]


def portal_url(path: str) -> str:
    """A public address under the portal, as registered at FranceConnect (not from the request,
    which a proxy may have rewritten)."""
    return current_app.config["SETTINGS"].portal + path


def login():
    if not offered():
        abort(404)
    state = session.oidc()
    url = client().authorization_url(state, portal_url("franceconnect/callback"))
    session.save_oidc(state)
    return redirect(url, 303)


def callback():
    from .views import message_page, page, t

    if not offered():
        abort(404)
    state = session.oidc()
    try:
        identity = client().finish(state, request.args.to_dict(), portal_url("franceconnect/callback"))
    except LoginRefused as refused:
        session.save_oidc(state)
        log.info("FranceConnect login refused: %s", refused.reason)
        if refused.reason == CANCELLED:
            return redirect(url_for("portal.landing"), 303)
        return message_page(t("fc.refused.title"), t("fc.refused.body"), 403, here=False)
    store = current_app.extensions["sidep.store"]
    found = find_patients(store, identity, current_app.config["SETTINGS"].identity_match_candidates)
    if found.patients:
        session.sign_in(found.patients, "franceconnect", oidc={ID_TOKEN: state.get(ID_TOKEN)})
        return redirect(url_for("portal.results"), 303)
    session.save_oidc({ID_TOKEN: state.get(ID_TOKEN)})  # for the logout at the provider
    differs = [t(f"fc.trait.{trait}") for trait in found.near_differs]
    # the callback cannot be got again (its code is spent): the language links lead home
    return page("franceconnect_mismatch.html", status=403, here=False, case=found.case, differs=differs)


def logout():
    """Sign out here and at the provider (POST, with the session's CSRF token)."""
    state = session.oidc()
    url = client().logout_url(state, portal_url("franceconnect/deconnecte")) if offered() else None
    session.sign_out()
    if url:
        session.save_oidc(state)  # a new, anonymous session keeps the logout's state to check it
        return redirect(url, 303)
    return redirect(url_for("portal.landing"), 303)


def logged_out():
    from .views import page, t

    state = session.oidc()
    if offered() and not client().logout_finished(state, request.args.to_dict()):
        log.info("FranceConnect logout returned without its state")
    session.save_oidc({})
    return page("message.html", title=t("signed_out.title"), body=t("signed_out.body"))

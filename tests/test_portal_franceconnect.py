"""Signing in to the portal with FranceConnect, over real HTTP: the portal served on a socket, a
real local OpenID Connect provider (fhir_server/oidc_provider.py) signing its tokens, results
posted by laboratories."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from urllib.parse import urljoin

import pytest
import requests

from fhir_server.oidc_provider import start_oidc_provider

from .test_auth_access import LAB_A, LAB_B, post_bundle
from .test_franceconnect import CLIENT_ID, CLIENT_SECRET, person_with_contact

PERSON = person_with_contact(501, given=["Émilie", "Rose"], family="LÉGER")


def claims(person, sub: str, **changes) -> dict:
    return {
        "sub": sub,
        "given_name": " ".join(person.given),
        "family_name": person.family,
        "birthdate": person.birth_date.isoformat(),
        "gender": person.sex,
        "birthplace": person.birth_cog,
        "birthcountry": "99100",
        **changes,
    }


USERS = [
    claims(PERSON, "exact"),
    claims(PERSON, "one-letter", family_name="LÉGEZ"),
    claims(PERSON, "one-accent", given_name="Emilie Rose"),
    claims(PERSON, "other-birth-date", birthdate="1971-01-02"),
    claims(PERSON, "lower-case", family_name="léger", given_name="émilie rose"),
]


@pytest.fixture
def portal(secured_factory):
    provider = start_oidc_provider(USERS, CLIENT_ID, CLIENT_SECRET, [], [])
    server = secured_factory(
        franceconnect_issuer=provider.issuer,
        franceconnect_client_id=CLIENT_ID,
        franceconnect_client_secret=CLIENT_SECRET,
    )
    provider.client.redirect_uris.append(server.settings.portal + "franceconnect/callback")
    provider.client.post_logout_redirect_uris.append(server.settings.portal + "franceconnect/deconnecte")
    posted_a = post_bundle(server.client_session(LAB_A), LAB_A, 502, PERSON)
    posted_b = post_bundle(server.client_session(LAB_B), LAB_B, 503, replace(PERSON, phone=None))
    yield server, provider, (posted_a, posted_b)
    provider.stop()


def sign_in(server, sub: str) -> tuple[requests.Session, requests.Response]:
    """A browser's way: the portal's button, the provider's form, back to the portal."""
    browser = requests.Session()
    landing = browser.get(server.settings.portal, timeout=30)
    assert "franceconnect/login" in landing.text
    login = browser.get(server.settings.portal + "franceconnect/login", timeout=30)  # follows to the provider
    assert login.status_code == 200 and "<form" in login.text, login.text
    action = html.unescape(re.search(r'<form method="post" action="([^"]+)"', login.text).group(1))
    answer = browser.post(urljoin(login.url, action), data={"user": sub, "action": "login"}, timeout=30)
    return browser, answer


def test_an_account_with_exactly_the_patients_traits_sees_their_results_of_every_laboratory(portal):
    server, provider, (posted_a, posted_b) = portal
    browser, page = sign_in(server, "exact")
    assert page.status_code == 200, page.text
    assert page.url == server.settings.portal + "resultats"
    for posted in (posted_a, posted_b):
        assert f"resultats/{posted['DiagnosticReport']}" in page.text
    audit = server.audit_events({"res.agent.who.display": {"$regex": "franceconnect"}})
    assert audit  # each access to a result is an AuditEvent
    # signing out ends the session here and at the provider
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    out = browser.post(server.settings.portal + "franceconnect/logout", data={"csrf_token": token}, timeout=30)
    assert out.status_code == 200 and out.url.startswith(server.settings.portal + "franceconnect/deconnecte")
    assert provider.logouts == ["exact"]
    assert browser.get(server.settings.portal + "resultats", timeout=30).url == server.settings.portal


def test_case_capitals_and_separators_do_not_count(portal):
    server, _, (posted_a, _) = portal
    _, page = sign_in(server, "lower-case")
    assert page.url == server.settings.portal + "resultats" and posted_a["DiagnosticReport"] in page.text


@pytest.mark.parametrize(
    ("sub", "trait"),
    [("one-letter", "nom de naissance"), ("one-accent", "prénoms"), ("other-birth-date", None)],
)
def test_an_identity_that_differs_shows_no_result_and_says_what_to_do(portal, sub, trait):
    server, _, (posted_a, posted_b) = portal
    browser, page = sign_in(server, sub)
    assert page.status_code == 403
    assert "Aucun résultat à votre nom" in page.text
    assert posted_a["DiagnosticReport"] not in page.text and posted_b["DiagnosticReport"] not in page.text
    assert PERSON.birth_date.strftime("%d/%m/%Y") not in page.text and PERSON.family not in page.text
    if trait:  # a near match: which trait differs, never the patient's value
        assert trait in page.text and "transmettre à nouveau" in page.text
    else:  # nothing has that birth date: case A
        assert "corriger vos coordonnées" in page.text
    assert browser.get(server.settings.portal + "resultats", timeout=30).url == server.settings.portal


def test_a_callback_without_the_pending_state_is_refused(portal):
    server, _, _ = portal
    browser = requests.Session()
    browser.get(server.settings.portal, timeout=30)
    forged = browser.get(server.settings.portal + "franceconnect/callback?code=x&state=y", timeout=30)
    assert forged.status_code == 403 and "La connexion avec FranceConnect" in forged.text


def test_without_an_issuer_franceconnect_is_not_offered(secured):
    landing = requests.get(secured.settings.portal, timeout=30)
    assert "franceconnect/login" not in landing.text
    assert requests.get(secured.settings.portal + "franceconnect/login", timeout=30).status_code == 404

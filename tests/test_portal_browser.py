"""The citizen portal (/portail) in the real headless browser, against a real server: a laboratory
posts a result, real `python -m workers.dispatcher` and `python -m workers` processes send the SMS
with the personal link to a real SMS gateway, and the browser opens that link (its `#token`
fragment read by static/portal.js), gives the birth date and the code of the next SMS, reads the
results and signs out. Every page met passes tests/browser.py's `check_page` (axe-core, 320 px
reflow, ARIA references; screenshots as test artefacts), in French and in English.

The browser is the session's (tests/conftest.py); nothing is downloaded by it: the certificate is
fetched with requests and the browser's cookies."""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import timedelta
from urllib.parse import unquote

import pytest
import requests

from fhir_server.oidc_provider import start_oidc_provider
from fhir_server.storage.accounts import utc_now
from fhir_server.storage.deliveries import DeepLinks

from .browser import check_page
from .processes import wait_for
from .test_auth_access import LAB_A, post_bundle
from .test_franceconnect import CLIENT_ID, CLIENT_SECRET, person_with_contact
from .test_notifications import person, running_platform
from .test_portal_franceconnect import claims

WALLET_LINK = re.compile(r"^https://bonjour\.tousanticovid\.gouv\.fr/app/walletdcc#HC1:[0-9A-Z$%*+./:-]+$")


@pytest.fixture
def live_portal(secured_factory, redis_url, tmp_path):
    """The platform of tests/test_notifications.py with PORTAL_URL at this server's own /portail/,
    so that the link of the SMS opens in the browser."""
    with running_platform(secured_factory, redis_url, tmp_path) as running:
        server = running.server
        server.settings = server.settings.but(portal_url=f"{server.settings.root_url}/portail/")  # what the workers get
        running.portal_url = server.settings.portal_url
        yield running


@pytest.fixture
def portal_server(secured_factory, redis_url):
    """A server alone (no workers): for the pages that send nothing."""
    server = secured_factory(redis_url=redis_url, queue_name=f"q-{uuid.uuid4().hex[:8]}")
    server.portal_url = f"{server.settings.root_url}/portail/"
    return server


# -- the browser's steps ---------------------------------------------------------------------------
def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def heading(driver) -> str:
    """The page's h1, or "" while a navigation replaces the page under it (its element is gone)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return css(driver, "h1").text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def wait_for_path(driver, path: str) -> None:
    """Until the browser shows the page at `path` (after a form sent by a script or a redirect)."""
    wait_for(lambda: driver.current_url.split("#")[0].split("?")[0].endswith(path), timeout=15, what=path)
    wait_for(lambda: driver.execute_script("return document.readyState") == "complete", timeout=15, what="the page")


def fill(driver, fields: dict[str, str]) -> None:
    for element_id, value in fields.items():
        field = css(driver, f"#{element_id}")
        field.clear()
        field.send_keys(value)


def submit(driver, form_selector: str = "main form") -> None:
    css(driver, f"{form_selector} button[type=submit]").click()


def switch_language(driver, lang: str) -> None:
    """Through the language link of the page's header, as a person would."""
    css(driver, f'header a[hreflang="{lang}"]').click()
    wait_for(lambda: css(driver, "html").get_attribute("lang") == lang, timeout=15, what=f"the page in {lang}")


def check_in_english(driver, name: str) -> None:
    """The page in English (checked as `name`-en), then back to French."""
    switch_language(driver, "en")
    check_page(driver, f"{name}-en")
    switch_language(driver, "fr")


def birth_date_fields(born) -> dict[str, str]:
    return {"jour": f"{born.day:02d}", "mois": f"{born.month:02d}", "annee": str(born.year)}


def wrong_birth_date(born):
    return born.replace(year=born.year - 1) if (born.month, born.day) != (2, 29) else born - timedelta(days=1)


def with_cookies_of(driver) -> requests.Session:
    """A requests session holding the browser's cookies (the portal's session among them)."""
    http = requests.Session()
    for cookie in driver.get_cookies():
        http.cookies.set(cookie["name"], cookie["value"], path=cookie.get("path", "/"))
    return http


# -- the deep link, from the SMS to the results ----------------------------------------------------
def test_the_link_of_the_sms_then_the_birth_date_then_the_code_of_the_next_sms_then_the_results(live_portal, browser):
    platform = live_portal
    platform.worker()
    platform.dispatcher()
    who = person(60, email=None)
    posted = post_bundle(platform.server.client_session(LAB_A), LAB_A, 60, who, kind="naat")
    report = posted["DiagnosticReport"]

    browser.delete_all_cookies()
    browser.get(platform.portal_url)
    assert heading(browser) == "Consulter mon résultat de test"
    assert css(browser, "header nav").get_attribute("aria-label") == "Langue et compte"
    language = css(browser, 'header a[hreflang="en"]')
    assert (
        language.get_attribute("lang") == "en" and language.get_attribute("aria-label") == "Read this page in English"
    )
    check_page(browser, "portal-landing")
    check_in_english(browser, "portal-landing")

    [notice] = wait_for(platform.sms.messages, what="the notification SMS")
    link = re.search(r"(http://\S+/portail/#[A-Za-z0-9_-]{22})\b", notice["text"]).group(1)
    assert link.startswith(platform.portal_url + "#")
    browser.get("about:blank")  # as from the SMS application: a new page, not a move within this one
    browser.get(link)
    wait_for_path(browser, "/portail/naissance")  # portal.js sent the token in a POST body
    assert "#" not in browser.current_url
    check_page(browser, "portal-birth-date")
    browser.back()  # the token is in no entry of the history either
    wait_for(lambda: "/naissance" not in browser.current_url, timeout=15, what="the previous page")
    assert "#" not in browser.current_url, browser.current_url
    browser.forward()
    wait_for_path(browser, "/portail/naissance")

    fill(browser, birth_date_fields(wrong_birth_date(who.birth_date)))
    submit(browser)
    assert css(browser, "#naissance-erreur").is_displayed()
    assert css(browser, "#jour").get_attribute("aria-invalid") == "true"
    assert browser.title.startswith("Erreur : ")  # said before anything else by a screen reader
    assert browser.switch_to.active_element.get_attribute("id") == "jour"  # the answer to correct
    check_page(browser, "portal-wrong-answer")
    fill(browser, birth_date_fields(who.birth_date))
    submit(browser)
    wait_for_path(browser, "/portail/code")
    check_page(browser, "portal-code")

    second = wait_for(lambda: platform.sms.messages()[1:], what="the code SMS")[0]
    assert second["to"] == notice["to"]
    code = re.search(r"\b(\d{6})\b", second["text"]).group(1)
    fill(browser, {"code": code})
    submit(browser, "main form[action$='/code']")
    wait_for_path(browser, "/portail/resultats")
    assert browser.find_elements("css selector", f'a[href="/portail/resultats/{report}"]')
    check_page(browser, "portal-results")
    check_in_english(browser, "portal-results")

    css(browser, f'a[href="/portail/resultats/{report}"]').click()
    wait_for_path(browser, f"/portail/resultats/{report}")
    check_page(browser, "portal-result")
    wallet = css(browser, 'a[href^="https://bonjour.tousanticovid.gouv.fr/"]').get_attribute("href")
    assert WALLET_LINK.match(wallet), wallet
    assert unquote(wallet.partition("#")[2]).startswith("HC1:")
    assert css(browser, "img.qr").get_attribute("alt")
    pdf_url = css(browser, 'a[href$="/certificat.pdf"]').get_attribute("href")
    pdf = with_cookies_of(browser).get(pdf_url, timeout=30)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert pdf.headers["Content-Type"] == "application/pdf"

    css(browser, "header form button[type=submit]").click()
    wait_for(lambda: heading(browser) == "Vous êtes déconnecté(e)", timeout=15, what="the signed-out page")
    check_page(browser, "portal-signed-out")
    assert with_cookies_of(browser).get(pdf_url, timeout=30, allow_redirects=False).status_code == 303
    browser.get(f"{platform.portal_url.removesuffix('/')}/resultats")
    wait_for_path(browser, "/portail/")  # signed out: the results lead home
    assert len(platform.sms.messages()) == 2


# -- the other pages -------------------------------------------------------------------------------
def test_a_link_that_is_unknown_says_so(portal_server, browser):
    browser.delete_all_cookies()
    browser.get("about:blank")
    browser.get(f"{portal_server.portal_url}#{secrets.token_urlsafe(16)}")
    wait_for(lambda: heading(browser) == "Ce lien n'est plus valable", timeout=15, what="the invalid-link page")
    assert "#" not in browser.current_url
    assert not browser.find_elements("css selector", "a.franceconnect")  # not configured: not offered
    check_page(browser, "portal-link-invalid")


def test_without_the_script_the_code_of_the_link_can_be_typed_in_its_labelled_field(portal_server, browser):
    who = person(61, email=None)
    posted = post_bundle(portal_server.client_session(LAB_A), LAB_A, 61, who)
    token = secrets.token_urlsafe(16)
    DeepLinks().issue(
        token, posted["Patient"], posted["DiagnosticReport"], [LAB_A.finess], utc_now() + timedelta(days=1)
    )

    browser.delete_all_cookies()
    browser.get(portal_server.portal_url)
    field = css(browser, "#code-lien")
    label = css(browser, 'label[for="code-lien"]')
    assert field.is_displayed() and label.is_displayed() and label.text == "Lien ou code reçu"
    assert css(browser, "#jeton").get_attribute("type") == "hidden"  # the script's field is not the person's
    submit(browser)  # nothing typed: said so, on the field
    assert css(browser, "#code-lien-erreur").is_displayed()
    assert css(browser, "#code-lien").get_attribute("aria-invalid") == "true"
    assert browser.switch_to.active_element.get_attribute("id") == "code-lien"
    check_page(browser, "portal-landing-empty")
    fill(browser, {"code-lien": token})
    submit(browser)
    wait_for_path(browser, "/portail/naissance")
    assert heading(browser)


def test_a_link_opened_in_a_tab_already_showing_the_portal_is_read_too(portal_server, browser):
    """Only the fragment changes then (no new page load): the script acts on the change."""
    who = person(62, email=None)
    posted = post_bundle(portal_server.client_session(LAB_A), LAB_A, 62, who)
    token = secrets.token_urlsafe(16)
    DeepLinks().issue(
        token, posted["Patient"], posted["DiagnosticReport"], [LAB_A.finess], utc_now() + timedelta(days=1)
    )
    browser.delete_all_cookies()
    browser.get(portal_server.portal_url)
    browser.get(f"{portal_server.portal_url}#{token}")
    wait_for_path(browser, "/portail/naissance")
    assert "#" not in browser.current_url


# -- FranceConnect ---------------------------------------------------------------------------------
FC_PERSON = person_with_contact(601, given=["Maëlle", "Anne"], family="DUPRÉ")


@pytest.fixture
def franceconnect_portal(secured_factory):
    """A server with FranceConnect set to a local provider whose accounts are the posted patient
    exactly, and the same with one letter of the birth name different."""
    provider = start_oidc_provider(
        [claims(FC_PERSON, "exact"), claims(FC_PERSON, "one-letter", family_name="DUPRÈ")],
        CLIENT_ID,
        CLIENT_SECRET,
        [],
        [],
    )
    server = secured_factory(
        franceconnect_issuer=provider.issuer,
        franceconnect_client_id=CLIENT_ID,
        franceconnect_client_secret=CLIENT_SECRET,
    )
    provider.client.redirect_uris.append(server.settings.portal + "franceconnect/callback")
    provider.client.post_logout_redirect_uris.append(server.settings.portal + "franceconnect/deconnecte")
    server.posted = post_bundle(server.client_session(LAB_A), LAB_A, 602, FC_PERSON)
    yield server, provider
    provider.stop()


def through_franceconnect(driver, server, sub: str, fresh: bool = True) -> None:
    """The landing page's button, the account `sub` picked on the provider's form, back to the
    portal (`fresh`: from a browser without the portal's cookies, else from the page shown)."""
    if fresh:
        driver.delete_all_cookies()
        driver.get(server.settings.portal)
    css(driver, "a.franceconnect").click()
    wait_for(lambda: not driver.current_url.startswith(server.settings.root_url), timeout=15, what="the provider")
    css(driver, f'input[name="user"][value="{sub}"]').click()
    css(driver, "#login").click()
    wait_for(lambda: driver.current_url.startswith(server.settings.portal), timeout=15, what="back to the portal")
    wait_for(lambda: driver.execute_script("return document.readyState") == "complete", timeout=15, what="the page")


def test_franceconnect_with_the_patient_s_identity_shows_the_results_and_signs_out_at_the_provider(
    franceconnect_portal, browser
):
    server, provider = franceconnect_portal
    report = server.posted["DiagnosticReport"]
    browser.delete_all_cookies()
    browser.get(server.settings.portal)
    assert css(browser, "a.franceconnect").text == "Se connecter avec FranceConnect"
    check_page(browser, "portal-landing-franceconnect")
    policy = requests.get(server.settings.portal, timeout=30).headers["Content-Security-Policy"]
    assert policy.endswith(f"form-action 'self' {provider.issuer.split('/')[0]}//{provider.issuer.split('/')[2]}")

    through_franceconnect(browser, server, "exact")
    wait_for_path(browser, "/portail/resultats")
    assert browser.find_elements("css selector", f'a[href="/portail/resultats/{report}"]')
    check_page(browser, "portal-results-franceconnect")

    css(browser, "header form button[type=submit]").click()  # here, then at the provider, then back
    wait_for_path(browser, "/portail/franceconnect/deconnecte")
    assert heading(browser) == "Vous êtes déconnecté(e)" and provider.logouts == ["exact"]
    check_page(browser, "portal-signed-out-franceconnect")
    browser.get(f"{server.settings.portal}resultats")
    wait_for_path(browser, "/portail/")


def test_franceconnect_with_one_letter_different_shows_the_mismatch_page(franceconnect_portal, browser):
    server, provider = franceconnect_portal
    through_franceconnect(browser, server, "one-letter")
    assert heading(browser) == "Aucun résultat à votre nom"
    page = css(browser, "main").text
    assert "nom de naissance" in page and FC_PERSON.family not in page and server.posted["DiagnosticReport"] not in page
    check_page(browser, "portal-franceconnect-mismatch")
    # the callback is not got again for the other language (its code is spent): the home page is
    switch_language(browser, "en")
    wait_for_path(browser, "/portail/")
    assert heading(browser) == "View my test result"
    through_franceconnect(browser, server, "one-letter", fresh=False)
    assert heading(browser) == "No result in your name" and "birth name" in css(browser, "main").text
    check_page(browser, "portal-franceconnect-mismatch-en")
    css(browser, "main form button[type=submit]").click()  # signing out of FranceConnect
    wait_for_path(browser, "/portail/franceconnect/deconnecte")
    assert heading(browser) == "You are signed out" and provider.logouts == ["one-letter"]

"""Every page of the professionals' web UI in the real headless browser: no axe-core violation, no
horizontal scroll at 320 px wide, and screenshots at 390 and 1280 px (test artefacts, see
tests/browser.py). The pages are shown with content (results, failed jobs and events, form errors)
so that tables, alerts and error messages are checked too.

One server per module with data entered once; the browser is the session's, and each user signs in
once (their session cookie is put back for each page: a TOTP code is accepted once per time step)."""

from __future__ import annotations

import re
import threading
import uuid

import pytest
from PIL import Image
from werkzeug.serving import make_server

from fhir_server import create_app
from fhir_server.embedded import free_port
from fhir_server.settings import Settings

from .browser import (
    assert_accessible,
    assert_no_dangling_aria_references,
    assert_no_horizontal_scroll,
    axe_violations,
    check_page,
    screenshots,
)
from .test_web_browser import by_id, fill_result, sign_in
from .test_web_ui import Web, add_user, fail_a_job, outbox, result_form

PHARMACIST, OPERATOR = "a11y.pharmacien", "a11y.operateur"
REPORT_LINK = re.compile(r'href="/ui/results/(?!new")([^"/?]+)"')


@pytest.fixture(scope="module")
def site(mongo_uri, redis_url, tmp_path_factory):
    """The UI on a real socket, with two results entered, a failed job and a failed event."""
    port = free_port()
    config = Settings(
        mongodb_uri=mongo_uri,
        mongodb_db=f"t_{uuid.uuid4().hex[:12]}",
        base_url=f"http://127.0.0.1:{port}/fhir",
        var_dir=str(tmp_path_factory.mktemp("var")),
        create_indexes=False,
        enforce_profiles=True,
        store_code_lists=False,
        auth_enabled=True,
        audit_flush_interval=0,
        redis_url=redis_url,
    )
    app = create_app(config)
    users, store = app.extensions["sidep.users"], app.extensions["sidep.store"]
    add_user(users, PHARMACIST, name="Camille Accessible")
    add_user(users, OPERATOR, role="operator", lab=None, name="Olivier Supervision")
    web = Web(app).signed_in(PHARMACIST)
    for family, phone in (("Lisible", "0612345678"), ("Contraste", "+33712345678")):
        assert web.enter(result_form(family=family, phone=phone)).status_code == 302
    app.report_id = REPORT_LINK.search(web.get("/ui/results").get_data(as_text=True)).group(1)
    event = outbox(store)[0]
    store.db["_outbox"].update_one({"_id": event["_id"]}, {"$set": {"state": "failed", "error": "SMS gateway: 503"}})
    fail_a_job(redis_url)

    http = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    app.ui_url = f"http://127.0.0.1:{port}/ui"
    app.sessions = {}
    yield app
    http.shutdown()


def as_user(driver, app, login: str) -> None:
    """The browser signed in as `login`: the first time through the login form, then with the
    session cookie it got (other tests share this browser and sign in as others)."""
    cookie = app.sessions.get(login)
    if cookie is None:
        sign_in(driver, app, login)
        app.sessions[login] = driver.get_cookie("sidep_session")
        return
    driver.get(f"{app.ui_url}/static/style.css")  # a cookie is set for the current origin only
    driver.delete_all_cookies()
    driver.add_cookie({k: cookie[k] for k in ("name", "value", "path", "httpOnly", "sameSite")})


def test_login_page(site, browser):
    browser.delete_all_cookies()
    browser.get(f"{site.ui_url}/login")
    check_page(browser, "ui-login")


def test_login_page_with_its_error(site, browser):
    sign_in(browser, site, PHARMACIST, password="mauvais-mot-de-passe", code="000000")  # no code spent
    assert by_id(browser, "erreur-connexion").is_displayed()
    check_page(browser, "ui-login-error")


def test_results_list(site, browser):
    as_user(browser, site, PHARMACIST)
    browser.get(f"{site.ui_url}/results")
    assert len(browser.find_elements("css selector", "table.resultats tbody tr")) == 2
    check_page(browser, "ui-results")


def test_result_page(site, browser):
    as_user(browser, site, PHARMACIST)
    browser.get(f"{site.ui_url}/results/{site.report_id}?saved=1")
    assert by_id(browser, "confirmation").is_displayed()
    check_page(browser, "ui-result")


def test_result_entry_form(site, browser):
    as_user(browser, site, PHARMACIST)
    browser.get(f"{site.ui_url}/results/new")
    check_page(browser, "ui-result-form")


def test_result_entry_form_with_errors(site, browser):
    as_user(browser, site, PHARMACIST)
    browser.get(f"{site.ui_url}/results/new")
    fill_result(browser, result_form(family="Erreur", phone="06 12 34 56 78", email="pas-un-courriel"))
    assert by_id(browser, "phone-erreur").is_displayed() and by_id(browser, "erreurs").is_displayed()
    check_page(browser, "ui-result-form-errors")


def test_patient_correction_form(site, browser):
    as_user(browser, site, PHARMACIST)
    browser.get(f"{site.ui_url}/results/{site.report_id}/patient")
    assert by_id(browser, "family").get_attribute("value")
    check_page(browser, "ui-patient-form")


def test_operators_console(site, browser):
    as_user(browser, site, OPERATOR)
    browser.get(f"{site.ui_url}/operator")
    assert by_id(browser, "file-echecs").text == "1" and by_id(browser, "outbox-failed").text == "1"
    check_page(browser, "ui-operator")


def test_error_page(site, browser):
    as_user(browser, site, PHARMACIST)
    browser.get(f"{site.ui_url}/results/{uuid.uuid4().hex}")
    assert "Page introuvable" in browser.find_element("tag name", "h1").text
    check_page(browser, "ui-not-found")


# -- the checks themselves ---------------------------------------------------------------------------
BAD_PAGE = (
    "data:text/html;charset=utf-8,<!doctype html><html><body><img src='x.png'><input type='text'>"
    "<p style='color:%23aaa' aria-describedby='absent'>gris clair</p><div style='width:600px; height:2500px'>trop large</div></body></html>"
)


def test_the_checks_catch_what_they_are_for(browser, tmp_path, monkeypatch):
    browser.get(BAD_PAGE)
    found = {v["id"]: v for v in axe_violations(browser)}
    assert {"image-alt", "label", "color-contrast", "html-has-lang", "document-title"} <= set(found)
    assert found["image-alt"]["impact"] == "critical" and found["image-alt"]["targets"] == ["img"]
    assert [v["id"] for v in axe_violations(browser, rules=["label"])] == ["label"]
    with pytest.raises(AssertionError, match=r"image-alt \[critical\]"):
        assert_accessible(browser, "bad page")
    with pytest.raises(AssertionError, match=r"scrolls sideways \(608 > 320 px\).*div \(608 px\)"):
        assert_no_horizontal_scroll(browser)
    assert_no_horizontal_scroll(browser, width=640)
    with pytest.raises(AssertionError, match="aria-describedby=absent"):
        assert_no_dangling_aria_references(browser)

    monkeypatch.setenv("TEST_ARTIFACTS", str(tmp_path))
    saved = screenshots(browser, "bad-page")
    assert saved == [tmp_path / "bad-page-390.png", tmp_path / "bad-page-1280.png"]
    sizes = [Image.open(path).size for path in saved]
    assert [width for width, _ in sizes] == [390, 1280] and all(height > 2500 for _, height in sizes)  # full page
    assert browser.execute_script("return window.innerWidth") == 1280  # back at the desktop size

"""The web UI in a real headless browser (Debian's chromium + chromedriver, via selenium) against
the app on a real socket with authorisation on: login with password and TOTP, the result form, its
errors next to the fields, and the result read back over the FHIR API. One server per module and
the session's one browser (conftest.py); the rest is covered by test_web_ui.py."""

from __future__ import annotations

import threading
import uuid

import pytest
import requests
from werkzeug.serving import make_server

from fhir_server import create_app
from fhir_server.embedded import free_port
from fhir_server.settings import Settings

from .test_web_ui import PASSWORD, PHARMACY_A, PHARMACY_B, add_user, fresh_code, result_form


@pytest.fixture(scope="module")
def server(mongo_uri, tmp_path_factory):
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
    )
    app = create_app(config)
    http = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    app.ui_url = f"http://127.0.0.1:{port}/ui"
    yield app
    http.shutdown()


def by_id(driver, element_id):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def sign_in(driver, app, login, password=PASSWORD, code=None):
    driver.delete_all_cookies()
    driver.get(f"{app.ui_url}/login")
    by_id(driver, "login").send_keys(login)
    by_id(driver, "password").send_keys(password)
    by_id(driver, "code").send_keys(code or fresh_code(app.extensions["sidep.users"], login))
    by_id(driver, "code").submit()


def fill_result(driver, form: dict):
    from selenium.webdriver.support.ui import Select

    for name in ("family", "given", "ins", "phone", "email"):
        element = by_id(driver, name)
        element.clear()
        element.send_keys(form[name])
    for name in ("birth_date", "sampled_at"):  # date pickers: set as the picker would
        driver.execute_script("arguments[0].value = arguments[1]", by_id(driver, name), form[name])
    by_id(driver, f"sex-{form['sex']}").click()
    by_id(driver, f"result-{form['result']}").click()
    Select(by_id(driver, "test")).select_by_value(form["test"])
    by_id(driver, "family").submit()


def test_login_and_enter_a_result_read_back_over_fhir(server, browser):
    users, store = server.extensions["sidep.users"], server.extensions["sidep.store"]
    add_user(users, "browser.ph", name="Camille Navigateur")
    sign_in(browser, server, "browser.ph", password="mauvais-mot-de-passe")
    assert "incorrect" in by_id(browser, "erreur-connexion").text
    sign_in(browser, server, "browser.ph", code="000000" if fresh_code(users, "browser.ph") != "000000" else "999999")
    assert "incorrect" in by_id(browser, "erreur-connexion").text
    sign_in(browser, server, "browser.ph")
    assert browser.current_url.endswith("/ui/results") and "Camille Navigateur" in by_id(browser, "utilisateur").text
    cookie = browser.get_cookie("sidep_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/ui"

    browser.get(f"{server.ui_url}/results/new")
    fill_result(browser, result_form(family="Navigateur", given="Léa", phone="+33712345678"))
    assert "le patient sera notifié" in by_id(browser, "confirmation").text
    dossier = by_id(browser, "dossier").text
    assert by_id(browser, "resultat").text == "Positif" and by_id(browser, "patient-nom").text == "Navigateur"

    # the same resources a laboratory submission makes, readable over FHIR by the pharmacy's software
    accounts = server.extensions["sidep.accounts"]
    doc, secret = accounts.register_client(
        "Logiciel officine", PHARMACY_A.finess, [s.finess for s in PHARMACY_A.sites], "system/*.read", "laboratory"
    )
    token = requests.post(
        server.config["SETTINGS"].token_endpoint,
        timeout=30,
        data={"grant_type": "client_credentials", "client_id": doc["_id"], "client_secret": secret},
    ).json()["access_token"]
    fhir = requests.Session()
    fhir.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"})
    base = server.config["SETTINGS"].base_url
    bundle = fhir.get(
        f"{base}/DiagnosticReport",
        timeout=30,
        params={
            "identifier": dossier,
            "_include": [
                "DiagnosticReport:subject",
                "DiagnosticReport:result",
                "DiagnosticReport:based-on",
                "DiagnosticReport:specimen",
            ],
        },
    ).json()
    types = sorted(e["resource"]["resourceType"] for e in bundle["entry"])
    assert types == ["DiagnosticReport", "Observation", "Patient", "ServiceRequest", "Specimen"]
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    assert patient["name"][0] == {"use": "official", "family": "Navigateur", "given": ["Léa"]}
    events = list(store.db["_outbox"].find({"kind": "notify-result"}))
    assert len(events) == 1 and events[0]["payload"]["patient"] == f"Patient/{patient['id']}"

    # a pharmacist of another organisation cannot open it
    add_user(users, "browser.other", lab=PHARMACY_B)
    report = browser.current_url.split("/results/")[1].split("?")[0]
    sign_in(browser, server, "browser.other")
    browser.get(f"{server.ui_url}/results/{report}")
    assert "Page introuvable" in browser.find_element("tag name", "h1").text  # not there, for them


def test_an_invalid_phone_shows_the_guide_s_error_next_to_the_field(server, browser):
    users, store = server.extensions["sidep.users"], server.extensions["sidep.store"]
    add_user(users, "browser.ph2")
    sign_in(browser, server, "browser.ph2")
    before = store.db["Patient"].count_documents({})
    browser.get(f"{server.ui_url}/results/new")
    fill_result(browser, result_form(family="Erreur", phone="06 12 34 56 78"))
    error = by_id(browser, "phone-erreur")
    assert error.is_displayed() and "aucun séparateur" in error.text
    phone = by_id(browser, "phone")
    assert phone.get_attribute("aria-invalid") == "true" and "phone-erreur" in phone.get_attribute("aria-describedby")
    assert phone.get_attribute("value") == "06 12 34 56 78"  # kept for correction
    assert by_id(browser, "family").get_attribute("value") == "Erreur"
    assert "Rien n'a été enregistré" in by_id(browser, "erreurs").text
    assert store.db["Patient"].count_documents({}) == before

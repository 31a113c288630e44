"""The professionals' web UI through Flask's test client: login (password + TOTP, cookie, CSRF,
expiry; its throttles and lock-out in test_web_login_throttle.py), the result form's checks, organisation isolation, corrections and re-notification,
the operators' console, audit, the users command. The browser tests (test_web_browser.py) drive
the same pages in a real headless Chromium."""

from __future__ import annotations

import os
import random
import re
import stat
import time
import uuid

import pyotp
import pytest
from flask import g

from fhir_server import create_app
from fhir_server.embedded import start_redis
from fhir_server.outcome import FhirError
from fhir_server.settings import Settings
from fhir_server.storage.changes import Changes
from fhir_server.storage.users import account_key
from fhir_server.synthetic.generator import generate_result_bundle, make_laboratories, make_rpps, resend_bundle
from fhir_server.web import forms, results
from fhir_server.web.__main__ import main as users_command
from fhir_server.web.session import principal_for

PHARMACY_A, PHARMACY_B = make_laboratories(random.Random(7), 2)
PASSWORD = "un-mot-de-passe-solide"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


# -- helpers (also used by the browser tests) -------------------------------------------------------
def fresh_code(users, login: str) -> str:
    """A TOTP code the server has not seen yet (a code is accepted once per time step)."""
    user = users.user(login)
    totp = pyotp.TOTP(user["totp"])
    current = int(time.time()) // totp.interval
    last = user.get("totp_step")
    if last is not None and last >= current + 1:
        time.sleep(totp.interval - time.time() % totp.interval + 0.1)
        current = int(time.time()) // totp.interval
    step = current if last is None or last < current else current + 1
    return totp.generate_otp(step)


def add_user(users, login, role="pharmacist", lab=PHARMACY_A, rpps=None, name=None):
    return users.create_user(
        login,
        PASSWORD,
        name or f"Pro {login}",
        role,
        lab.finess if lab else None,
        [s.finess for s in lab.sites] if lab else [],
        rpps,
        lab.name if lab else None,
    )


def result_form(lab=PHARMACY_A, **changes) -> dict:
    form = {
        "family": "Martin",
        "given": "Louise Anne",
        "birth_date": "1985-04-12",
        "sex": "female",
        "ins": "",
        "phone": "0612345678",
        "email": "louise.martin@example.org",
        "test": "94558-4",
        "device": "",
        "result": "detected",
        "sampled_at": "2021-07-09T09:15",
        "site": lab.sites[0].finess,
    }
    form.update(changes)
    return form


def outbox(store) -> list[dict]:
    return list(store.db["_outbox"].find({}).sort("ts", 1))


class Web:
    """A browser-like client: keeps cookies, reads each page's CSRF token."""

    def __init__(self, app):
        self.app = app
        self.http = app.test_client()
        self.csrf = None

    def get(self, url, **kw):
        response = self.http.get(url, **kw)
        match = CSRF.search(response.get_data(as_text=True))
        if match:
            self.csrf = match.group(1)
        return response

    def post(self, url, data=None, csrf=True):
        data = dict(data or {})
        if csrf and self.csrf:
            data.setdefault("csrf_token", self.csrf)
        response = self.http.post(url, data=data)
        match = CSRF.search(response.get_data(as_text=True))
        if match:
            self.csrf = match.group(1)
        return response

    def login(self, login, password=PASSWORD, code=None):
        self.get("/ui/login")
        users = self.app.extensions["sidep.users"]
        return self.post(
            "/ui/login",
            {"login": login, "password": password, "code": code if code is not None else fresh_code(users, login)},
        )

    def signed_in(self, login):
        response = self.login(login)
        assert response.status_code == 302, response.get_data(as_text=True)
        return self

    def enter(self, form):
        self.get("/ui/results/new")
        return self.post("/ui/results/new", form)


def text(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)))


def field_errors(response) -> dict[str, str]:
    return dict(re.findall(r'<p class="erreur" id="([\w-]+)-erreur">([^<]+)</p>', response.get_data(as_text=True)))


@pytest.fixture
def web_settings(mongo_uri, tmp_path) -> Settings:
    return Settings(
        mongodb_uri=mongo_uri,
        mongodb_db=f"t_{uuid.uuid4().hex[:12]}",
        base_url="http://testserver/fhir",
        var_dir=str(tmp_path / "var"),
        create_indexes=False,
        enforce_profiles=True,
        store_code_lists=False,
        auth_enabled=True,
        audit_flush_interval=0,
    )


@pytest.fixture
def web_app(web_settings):
    return create_app(web_settings)


@pytest.fixture
def users(web_app):
    return web_app.extensions["sidep.users"]


@pytest.fixture
def store(web_app):
    return web_app.extensions["sidep.store"]


# -- login -----------------------------------------------------------------------------------------
def test_pages_need_a_login_with_password_and_totp(web_app, users):
    add_user(users, "alice")
    web = Web(web_app)
    assert web.get("/ui/results").headers["Location"].startswith("/ui/login")
    wrong_password = web.login("alice", password="pas-le-bon")
    assert wrong_password.status_code == 401 and "incorrect" in text(wrong_password)
    assert "sidep_session" not in str(wrong_password.headers.getlist("Set-Cookie"))
    wrong_code = web.login("alice", code="000000" if fresh_code(users, "alice") != "000000" else "111111")
    assert wrong_code.status_code == 401
    unknown = web.login("nobody", code="123456")
    assert unknown.status_code == 401 and text(unknown).count("incorrect") == 1
    code = fresh_code(users, "alice")
    ok = web.login("alice", code=code)
    assert ok.status_code == 302 and ok.headers["Location"] == "/ui/"
    cookie = next(c for c in ok.headers.getlist("Set-Cookie") if c.startswith("sidep_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/ui" in cookie and "Secure" not in cookie
    assert web.get("/ui/").headers["Location"] == "/ui/results"
    page = web.get("/ui/results")
    assert page.status_code == 200 and "Pro alice" in text(page)
    assert page.headers["Cache-Control"] == "no-store" and page.headers["X-Frame-Options"] == "DENY"
    # the same code is accepted once (RFC 6238 §5.2), even with the right password
    assert Web(web_app).login("alice", code=code).status_code == 401
    assert users.failures.count_documents({"account": account_key("alice")}) == 1
    # only a hash of the cookie is stored; the password is a salted scrypt hash
    token = cookie.split(";")[0].split("=", 1)[1]
    stored = users.sessions.find_one({"user": "alice"})
    assert token not in str(stored) and users.user("alice")["password"].startswith("scrypt$")
    assert stored["principal"]["kind"] == "user" and stored["principal"]["org"] == PHARMACY_A.finess


def test_cookie_is_secure_behind_https(mongo_uri, tmp_path):
    config = Settings(
        mongodb_uri=mongo_uri,
        mongodb_db=f"t_{uuid.uuid4().hex[:12]}",
        base_url="https://sidep.example.fr/fhir",
        var_dir=str(tmp_path),
        create_indexes=False,
        store_code_lists=False,
        auth_enabled=True,
    )
    app = create_app(config)
    add_user(app.extensions["sidep.users"], "carol")
    response = Web(app).login("carol")
    assert response.status_code == 302
    assert all("Secure" in c for c in response.headers.getlist("Set-Cookie"))


def test_forms_need_their_csrf_token(web_app, users, store):
    add_user(users, "dan")
    web = Web(web_app)
    web.get("/ui/login")
    forged_login = web.post(
        "/ui/login", {"login": "dan", "password": PASSWORD, "code": fresh_code(users, "dan")}, csrf=False
    )
    assert forged_login.status_code == 400
    web.signed_in("dan")
    web.get("/ui/results/new")
    forged = web.http.post("/ui/results/new", data=result_form(csrf_token="forged"))
    assert forged.status_code == 400 and "CSRF" in text(forged)
    assert store.db["Patient"].count_documents({}) == 0


def test_sessions_expire_and_end_at_logout(mongo_uri, tmp_path, web_settings):
    app = create_app(web_settings.but(extra={"web_session_idle": 1}))
    add_user(app.extensions["sidep.users"], "erin")
    web = Web(app).signed_in("erin")
    assert web.get("/ui/results").status_code == 200
    time.sleep(1.2)
    assert web.get("/ui/results").headers["Location"].startswith("/ui/login")
    web.signed_in("erin")
    web.get("/ui/results")
    assert web.post("/ui/logout").status_code == 302
    assert web.get("/ui/results").status_code == 302
    assert app.extensions["sidep.users"].sessions.count_documents({"user": "erin"}) == 0


def test_the_ui_is_off_without_authorisation(app):
    assert app.test_client().get("/ui/login").status_code == 404  # conftest's app: auth off


# -- the result form -------------------------------------------------------------------------------
def test_a_result_entered_is_a_submission_like_a_laboratory_s(web_app, users, store):
    add_user(users, "fanny", rpps=make_rpps(random.Random(1)))
    web = Web(web_app).signed_in("fanny")
    response = web.enter(result_form(ins="", device="1232"))
    assert response.status_code == 302, text(response)
    report_id = response.headers["Location"].split("/")[3].split("?")[0]
    report = store.current("DiagnosticReport", report_id).resource
    assert report["status"] == "final" and report["identifier"][0]["system"].endswith(PHARMACY_A.finess)
    observation = store.current("Observation", report["result"][0]["reference"].split("/")[1]).resource
    assert observation["valueCodeableConcept"]["coding"][0]["code"] == "260373001"
    assert observation["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "94558-4",
        "display": observation["code"]["coding"][0]["display"],
    }
    assert observation["device"]["identifier"]["value"] == "1232"
    site = store.find("Organization", {"s.identifier": f"https://finess.esante.gouv.fr|{PHARMACY_A.sites[0].finess}"})
    practitioner = store.find("Practitioner", {})[0]["res"]
    assert len(site) == 1 and practitioner["identifier"][0]["system"] == "https://rpps.esante.gouv.fr"
    assert [p["reference"] for p in report["performer"]] == [
        f"Organization/{site[0]['_id']}",
        f"Practitioner/{practitioner['id']}",
    ]
    patient = store.current("Patient", report["subject"]["reference"].split("/")[1])
    assert patient.owner == [PHARMACY_A.finess]
    assert patient.resource["telecom"][0]["value"] == "+33612345678"  # stored in E.164 like the API's
    for rtype in ("ServiceRequest", "Specimen"):
        assert store.db[rtype].count_documents({"org": PHARMACY_A.finess}) == 1
    events = outbox(store)
    assert [(e["kind"], e["payload"]["reasons"]) for e in events] == [("notify-result", ["new-result"])]
    # the same patient again (traits matched within the organisation): one Patient, a second result
    assert web.enter(result_form(sampled_at="2021-07-10T09:15")).status_code == 302
    assert store.db["Patient"].count_documents({}) == 1 and store.db["DiagnosticReport"].count_documents({}) == 2
    # audited like the API: a transaction by a human user of the organisation
    web_app.extensions["sidep.audit"].flush()
    event = store.db["AuditEvent"].find_one({"res.subtype.code": "transaction"})["res"]
    assert event["outcome"] == "0" and event["agent"][0]["altId"] == "fanny"
    assert event["agent"][0]["type"]["coding"][0]["code"] == "humanuser"
    assert event["agent"][1]["who"]["identifier"]["value"] == PHARMACY_A.finess
    assert {"reference": patient.key and f"Patient/{patient.id}"} in [e["what"] for e in event["entity"]]


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("phone", "06.12.34.56.78", "aucun séparateur"),
        ("phone", "+33612345", "06 ou 07"),
        ("phone", "+3306123456789", "Après +33 le 0 initial disparaît"),
        ("phone", "0044123456789", "pas par « 00 »"),
        ("phone", "0123456789", "doit être un mobile"),
        ("email", "louise@", "Adresse de courriel invalide"),
        ("ins", "285047510812399", "clé de contrôle"),
        ("birth_date", "2999-01-01", "dans le futur"),
        ("family", "", "champ obligatoire"),
        ("sampled_at", "2999-01-01T10:00", "dans le futur"),
        ("test", "94500-6", "test antigénique"),
    ],
)
def test_invalid_fields_show_the_guide_s_error_next_to_them_and_store_nothing(
    web_app, users, store, field, value, expected
):
    add_user(users, "gaby")
    web = Web(web_app).signed_in("gaby")
    response = web.enter(result_form(**{field: value}))
    assert response.status_code == 422
    errors = field_errors(response)
    assert list(errors) == [field] and expected in errors[field], errors
    html = response.get_data(as_text=True)
    assert re.search(rf'id="{field}(-\w+)?"[^>]*aria-invalid="true"', html, re.S) or field in ("sex", "result")
    assert "Rien n'a été enregistré" in text(response)
    for rtype in ("Patient", "DiagnosticReport", "Observation"):
        assert store.db[rtype].count_documents({}) == 0
    assert outbox(store) == []


def test_a_nurse_with_an_rpps_only_enters_results_in_her_own_name(web_app, users, store):
    henri_rpps, iris_rpps = make_rpps(random.Random(2)), make_rpps(random.Random(3))
    add_user(users, "henri", role="nurse", lab=None, rpps=henri_rpps)
    add_user(users, "iris", role="nurse", lab=None, rpps=iris_rpps)  # another nurse
    add_user(users, "alice")  # a pharmacist of PHARMACY_A
    henri = Web(web_app).signed_in("henri")
    page = henri.get("/ui/results/new")
    assert page.status_code == 200 and '<form method="post" action="/ui/results/new"' in page.get_data(as_text=True)
    assert 'name="site"' not in page.get_data(as_text=True)  # no structure, no site to choose
    response = henri.post(
        "/ui/results/new", {k: v for k, v in result_form(family="Nightingale").items() if k != "site"}
    )
    assert response.status_code == 302, text(response)
    location = response.headers["Location"]
    report_id = location.split("/")[3].split("?")[0]
    report = store.current("DiagnosticReport", report_id)
    dossier_system = f"https://sidep.example.fr/dossier/rpps-{henri_rpps}"
    assert report.resource["status"] == "final" and report.resource["identifier"][0]["system"] == dossier_system
    # the performer is her Practitioner (her RPPS), alone: no organisation written, none named
    practitioners = store.find("Practitioner", {})
    assert [p["res"]["identifier"] for p in practitioners] == [
        [{"system": "https://rpps.esante.gouv.fr", "value": henri_rpps}]
    ]
    mine = f"Practitioner/{practitioners[0]['_id']}"
    assert [p["reference"] for p in report.resource["performer"]] == [mine]
    assert store.db["Organization"].count_documents({}) == 0
    # the same resources as a laboratory's submission, each owned by her alone
    for rtype in ("Patient", "ServiceRequest", "Specimen", "Observation", "DiagnosticReport"):
        docs = list(store.db[rtype].find({}))
        assert len(docs) == 1 and docs[0]["org"] == [f"rpps:{henri_rpps}"], rtype
    request = store.db["ServiceRequest"].find_one({})["res"]
    assert request["identifier"][0]["system"] == dossier_system and request["performer"][0]["reference"] == mine
    observation = store.db["Observation"].find_one({})["res"]
    assert [p["reference"] for p in observation["performer"]] == [mine]
    assert observation["valueCodeableConcept"]["coding"][0]["code"] == "260373001"
    events = outbox(store)
    assert [(e["kind"], e["payload"]["reasons"], e["payload"]["report"]) for e in events] == [
        ("notify-result", ["new-result"], report_id)
    ]
    # she sees it, and corrects it; the same patient again is matched within her own results
    assert "NIGHTINGALE" in text(henri.get("/ui/results")) and henri.get(location).status_code == 200
    assert henri.get(f"/ui/results/{report_id}/patient").status_code == 200
    assert henri.enter(result_form(family="Nightingale", sampled_at="2021-07-10T09:15")).status_code == 302
    assert store.db["Patient"].count_documents({}) == 1 and store.db["DiagnosticReport"].count_documents({}) == 2
    # another nurse, and a pharmacist of an organisation, neither see it nor reach it
    for login in ("iris", "alice"):
        other = Web(web_app).signed_in(login)
        assert "NIGHTINGALE" not in text(other.get("/ui/results")), login
        assert other.get(location).status_code == 404, login  # to them, it is not there
        assert other.get(f"/ui/results/{report_id}/patient").status_code == 404, login
    # audited with her as the agent (no organisation)
    web_app.extensions["sidep.audit"].flush()
    event = store.db["AuditEvent"].find_one({"res.subtype.code": "transaction", "res.agent.altId": "henri"})
    assert event["org"] == [f"rpps:{henri_rpps}"] and len(event["res"]["agent"]) == 1
    assert event["res"]["agent"][0]["who"]["identifier"] == {
        "system": "https://rpps.esante.gouv.fr",
        "value": henri_rpps,
    }


def test_a_professional_without_organisation_cannot_name_another_performer(web_app, users, store):
    """The policy, not only the form: a result of a professional without organisation names them."""
    add_user(users, "jade", role="doctor", lab=None, rpps=make_rpps(random.Random(4)))
    principal = principal_for(users.user("jade"))
    values = {**result_form(), "sampled_at": "2021-07-09T09:15"}
    with web_app.test_request_context("/ui/results/new"):
        checked = forms.result(values, results.antigen_tests(), results.rat_devices())
        assert checked.ok, checked.errors
        g.principal = principal
        as_laboratory = results.result_bundle(principal, checked.values, None)
        site = {
            "fullUrl": "urn:uuid:0b0e7f54-7a6e-4d8e-9d3c-1f0f6a3b2c01",
            "resource": {
                "resourceType": "Organization",
                "name": "Laboratoire",
                "identifier": [{"system": "https://finess.esante.gouv.fr", "value": PHARMACY_A.sites[0].finess}],
            },
            "request": {"method": "POST", "url": "Organization"},
        }
        for entry in as_laboratory.bundle["entry"]:
            if entry["resource"]["resourceType"] in ("Observation", "DiagnosticReport"):
                entry["resource"]["performer"] = [{"reference": site["fullUrl"]}]
        as_laboratory.bundle["entry"].insert(0, site)
        with pytest.raises(FhirError) as refused:
            results.submit(as_laboratory.bundle)
        assert refused.value.status == 403
        other = results.result_bundle(principal, checked.values, None)
        for entry in other.bundle["entry"]:
            if entry["resource"]["resourceType"] == "Practitioner":
                entry["resource"]["identifier"][0]["value"] = make_rpps(random.Random(5))
        with pytest.raises(FhirError) as refused:
            results.submit(other.bundle)
        assert refused.value.status == 403 and "RPPS" in refused.value.issues[0].en
    for rtype in ("Patient", "ServiceRequest", "Observation", "DiagnosticReport", "Organization"):
        assert store.db[rtype].count_documents({}) == 0, rtype
    assert outbox(store) == []


def lab_post(app, lab, bundle: dict) -> dict:
    """POST a transaction Bundle as the laboratory's LIS (an OAuth2 client of `lab`)."""
    accounts = app.extensions["sidep.accounts"]
    client, secret = accounts.register_client(
        "LIS", lab.finess, [s.finess for s in lab.sites], "system/*.read system/*.write", organisation_name=lab.name
    )
    http = app.test_client()
    token = http.post(
        "/oauth/token", data={"grant_type": "client_credentials", "client_id": client["_id"], "client_secret": secret}
    ).get_json()["access_token"]
    response = http.post(
        "/fhir", json=bundle, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return {
        e["response"]["location"].split("/")[0]: e["response"]["location"].split("/")[1]
        for e in response.get_json()["entry"]
    }


def lab_bundle(seed: int, family: str, requester: dict | None) -> dict:
    bundle = generate_result_bundle(random.Random(seed), PHARMACY_B, include_legal_entity=False)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource["name"][0]["family"] = family
        if resource["resourceType"] == "ServiceRequest":
            resource.pop("requester", None)
            if requester:
                resource["requester"] = requester
    return bundle


def test_a_doctor_sees_the_results_of_tests_they_requested_and_cannot_correct_them(web_app, users, store):
    x_rpps, y_rpps = make_rpps(random.Random(21)), make_rpps(random.Random(22))
    add_user(users, "xavier", role="doctor", lab=None, rpps=x_rpps)
    add_user(users, "yann", role="doctor", lab=None, rpps=y_rpps)
    add_user(users, "lab", role="laboratory", lab=PHARMACY_B)
    # requested by identifier; requested by a Practitioner reference; requested on a resend only
    by_identifier = lab_post(
        web_app,
        PHARMACY_B,
        lab_bundle(
            31,
            "Pasteur",
            {"identifier": {"system": "https://rpps.esante.gouv.fr", "value": x_rpps}, "display": "Dr Xavier"},
        ),
    )
    by_reference = lab_bundle(32, "Curie", {"reference": "urn:uuid:6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"})
    by_reference["entry"].insert(
        0,
        {
            "fullUrl": "urn:uuid:6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f",
            "resource": {
                "resourceType": "Practitioner",
                "name": [{"family": "Xavier"}],
                "identifier": [{"system": "https://rpps.esante.gouv.fr", "value": x_rpps}],
            },
            "request": {
                "method": "POST",
                "url": "Practitioner",
                "ifNoneExist": f"identifier=https://rpps.esante.gouv.fr|{x_rpps}",
            },
        },
    )
    by_reference = lab_post(web_app, PHARMACY_B, by_reference)
    first = lab_bundle(33, "Laveran", None)
    later = lab_post(web_app, PHARMACY_B, first)
    assert "requester:rpps:" not in str(store.db["DiagnosticReport"].find_one({"_id": later["DiagnosticReport"]}))
    resent = resend_bundle(random.Random(34), first, "none")
    next(e for e in resent["entry"] if e["resource"]["resourceType"] == "ServiceRequest")["resource"]["requester"] = {
        "identifier": {"system": "https://rpps.esante.gouv.fr", "value": x_rpps}
    }
    assert lab_post(web_app, PHARMACY_B, resent)["DiagnosticReport"] == later["DiagnosticReport"]
    # the doctor named may read them, the laboratory still owns them
    for posted in (by_identifier, by_reference, later):
        for rtype in ("Patient", "ServiceRequest", "Specimen", "Observation", "DiagnosticReport"):
            owner = store.db[rtype].find_one({"_id": posted[rtype]})["org"]
            assert owner == [PHARMACY_B.finess, f"requester:rpps:{x_rpps}"], (rtype, owner)

    xavier = Web(web_app).signed_in("xavier")
    listing = text(xavier.get("/ui/results"))
    assert "PASTEUR" in listing and "CURIE" in listing and "LAVERAN" in listing
    assert "CURIE" in text(xavier.get("/ui/results?name=curie")) and "PASTEUR" not in text(
        xavier.get("/ui/results?name=curie")
    )
    for posted, family in ((by_identifier, "Pasteur"), (by_reference, "Curie"), (later, "Laveran")):
        page = xavier.get(f"/ui/results/{posted['DiagnosticReport']}")
        assert page.status_code == 200 and family in text(page)
        assert f"/ui/results/{posted['DiagnosticReport']}/patient" not in page.get_data(as_text=True)  # no link
    # read only: no correction, neither through the page nor through the policy
    report = by_identifier["DiagnosticReport"]
    assert xavier.get(f"/ui/results/{report}/patient").status_code == 403
    xavier.get("/ui/results")
    fields = {
        k: v for k, v in result_form().items() if k in ("family", "given", "birth_date", "sex", "ins", "phone", "email")
    }
    assert xavier.post(f"/ui/results/{report}/patient", {**fields, "version": "1"}).status_code == 403
    before = {rtype: store.current(rtype, by_identifier[rtype]) for rtype in ("Observation", "DiagnosticReport")}
    with web_app.test_request_context("/ui/results"):
        g.principal = principal_for(users.user("xavier"))
        for rtype, record in before.items():
            assert store.read(rtype, record.id).id == record.id  # readable ...
            changed = {**record.resource, "status": "amended"}
            with pytest.raises(FhirError) as refused:  # ... not writable
                results.submit(
                    {
                        "resourceType": "Bundle",
                        "type": "transaction",
                        "entry": [{"resource": changed, "request": {"method": "PUT", "url": f"{rtype}/{record.id}"}}],
                    }
                )
            assert refused.value.status == 403 and "does not belong" in refused.value.issues[0].en
    for rtype, record in before.items():
        assert store.current(rtype, record.id).version == record.version

    # another doctor sees none of them
    yann = Web(web_app).signed_in("yann")
    listing = text(yann.get("/ui/results"))
    assert "PASTEUR" not in listing and "CURIE" not in listing and "LAVERAN" not in listing
    assert yann.get(f"/ui/results/{report}").status_code == 404
    assert yann.get(f"/ui/results/{report}/patient").status_code == 404
    # and the laboratory's staff still see and correct their results
    lab = Web(web_app).signed_in("lab")
    assert "PASTEUR" in text(lab.get("/ui/results")) and lab.get(f"/ui/results/{report}/patient").status_code == 200


# -- who sees what --------------------------------------------------------------------------------------
def test_professionals_see_their_own_results_and_laboratory_staff_their_organisation_s(web_app, users, store):
    add_user(users, "ines")
    add_user(users, "jules", lab=PHARMACY_B)
    add_user(users, "karim")  # a colleague in the same pharmacy
    add_user(users, "lea", role="laboratory")
    ines = Web(web_app).signed_in("ines")
    location = ines.enter(result_form(family="Zidane")).headers["Location"]
    report = location.split("/")[3].split("?")[0]
    assert "ZIDANE" in text(ines.get("/ui/results"))
    assert "ZIDANE" in text(ines.get("/ui/results?name=zidane"))
    assert "ZIDANE" in text(ines.get("/ui/results?birth_date=1985-04-12"))
    dossier = store.current("DiagnosticReport", report).resource["identifier"][0]["value"]
    assert "ZIDANE" in text(ines.get(f"/ui/results?dossier={dossier}"))
    assert "Aucun résultat" in text(ines.get("/ui/results?name=personne"))

    jules = Web(web_app).signed_in("jules")
    assert "ZIDANE" not in text(jules.get("/ui/results"))
    assert "Aucun résultat" in text(jules.get(f"/ui/results?dossier={dossier}"))
    assert jules.get(location).status_code == 404  # another organisation's result is not there for him
    assert jules.get(f"/ui/results/{report}/patient").status_code == 404
    jules.get("/ui/results")
    assert jules.post(f"/ui/results/{report}/patient", result_form(family="Pirate")).status_code == 404

    karim = Web(web_app).signed_in("karim")
    assert (
        "ZIDANE" not in text(karim.get("/ui/results")) and karim.get(location).status_code == 403
    )  # his organisation's, not his own
    lea = Web(web_app).signed_in("lea")
    assert "ZIDANE" in text(lea.get("/ui/results")) and lea.get(location).status_code == 200
    assert lea.get("/ui/results/new").status_code == 403  # laboratories send results from their LIS
    assert (
        store.current(
            "Patient", store.current("DiagnosticReport", report).resource["subject"]["reference"].split("/")[1]
        ).resource["name"][0]["family"]
        == "Zidane"
    )
    # the refusals are audited as serious failures naming the result
    web_app.extensions["sidep.audit"].flush()
    refused = [e["res"] for e in store.db["AuditEvent"].find({"res.outcome": "8"})]
    assert any(
        e["agent"][0]["altId"] == "jules" and f"DiagnosticReport/{report}" in str(e.get("entity")) for e in refused
    )
    views = [e["res"] for e in store.db["AuditEvent"].find({"res.outcome": "0", "res.subtype.code": "read"})]
    assert any(e["agent"][0]["altId"] == "lea" for e in views)


# -- corrections --------------------------------------------------------------------------------------------
def test_a_corrected_phone_re_notifies_and_a_corrected_name_does_not(web_app, users, store):
    add_user(users, "marc")
    web = Web(web_app).signed_in("marc")
    report = web.enter(result_form()).headers["Location"].split("/")[3].split("?")[0]
    assert len(outbox(store)) == 1
    page = web.get(f"/ui/results/{report}/patient")
    assert page.status_code == 200 and 'value="Martin"' in page.get_data(as_text=True)
    version = re.search(r'name="version" value="(\d+)"', page.get_data(as_text=True)).group(1)
    fields = {
        k: v for k, v in result_form().items() if k in ("family", "given", "birth_date", "sex", "ins", "phone", "email")
    }
    bad = web.post(f"/ui/results/{report}/patient", {**fields, "version": version, "phone": "06-12-34-56-78"})
    assert bad.status_code == 422 and "phone" in field_errors(bad) and len(outbox(store)) == 1

    renamed = web.post(f"/ui/results/{report}/patient", {**fields, "version": version, "family": "Martin-Durand"})
    assert renamed.status_code == 302 and "corrected=identity" in renamed.headers["Location"]
    assert "Identité corrigée" in text(web.get(renamed.headers["Location"]))
    assert len(outbox(store)) == 1  # the guide: identity alone does not re-notify

    page = web.get(f"/ui/results/{report}/patient")
    version = re.search(r'name="version" value="(\d+)"', page.get_data(as_text=True)).group(1)
    stale = web.post(
        f"/ui/results/{report}/patient", {**fields, "version": str(int(version) - 1), "phone": "0712345678"}
    )
    assert stale.status_code == 409 and len(outbox(store)) == 1
    rephoned = web.post(
        f"/ui/results/{report}/patient",
        {**fields, "family": "Martin-Durand", "version": version, "phone": "0698765432"},
    )
    assert rephoned.status_code == 302 and "corrected=contact" in rephoned.headers["Location"]
    events = outbox(store)
    assert len(events) == 2 and events[1]["payload"] == {
        "report": report,
        "patient": events[0]["payload"]["patient"],
        "reasons": ["contact-changed"],
    }
    patient = store.current("Patient", events[0]["payload"]["patient"].split("/")[1])
    assert patient.resource["name"][0]["family"] == "Martin-Durand"
    assert patient.resource["telecom"][0]["value"] == "+33698765432"
    history = store.db["_history"].find({"t": "Patient", "rid": patient.id}).sort("v", 1)
    assert [h.get("chg") for h in history] == [None, ["identity"], ["contact"]]


# -- operators ----------------------------------------------------------------------------------------------
def fail_a_job(redis_url: str) -> str:
    from rq import SimpleWorker

    from workers.queue import connection, queue

    q = queue(redis_url)
    job = q.enqueue("builtins.int", "pas un nombre")
    SimpleWorker([q], connection=connection(redis_url)).work(burst=True)
    assert job.id in q.failed_job_registry.get_job_ids()
    return job.id


@pytest.fixture
def console_app(web_settings, tmp_path):
    redis = start_redis(tmp_path / "redis")
    yield create_app(web_settings.but(redis_url=redis.url))
    redis.stop()


def test_the_operators_console_counts_and_retries(console_app, tmp_path):
    users, store = console_app.extensions["sidep.users"], console_app.extensions["sidep.store"]
    add_user(users, "nina")
    add_user(users, "oscar", role="operator", lab=None)
    nina = Web(console_app).signed_in("nina")
    for family in ("Un", "Deux", "Trois"):
        assert nina.enter(result_form(family=family)).status_code == 302
    assert nina.get("/ui/operator").status_code == 403
    events = outbox(store)
    store.db["_outbox"].update_one({"_id": events[0]["_id"]}, {"$set": {"state": "dispatched"}})
    store.db["_outbox"].update_one(
        {"_id": events[1]["_id"]}, {"$set": {"state": "failed", "error": "SMS gateway: 503"}}
    )
    job_id = fail_a_job(console_app.config["SETTINGS"].redis_url)

    oscar = Web(console_app).signed_in("oscar")
    assert oscar.get("/ui/").headers["Location"] == "/ui/operator"
    assert oscar.get("/ui/results").status_code == 403
    page = oscar.get("/ui/operator")
    html = page.get_data(as_text=True)
    counts = dict(re.findall(r'<dd id="([\w-]+)">(\d+)</dd>', html))
    assert counts == {
        "file-attente": "0",
        "file-echecs": "1",
        "outbox-new": "1",
        "outbox-claimed": "0",
        "outbox-dispatched": "1",
        "outbox-done": "0",
        "outbox-failed": "1",
        "journal-positions": "0",
        "journal-attente": "3",  # no dispatcher has positioned the three entries yet
        "retard-pseudonymised-feed": "0",
        "retard-subscriptions": "0",
        "conflits": "0",
    }
    assert "SMS gateway: 503" in html and job_id in html and "ValueError" in html

    assert oscar.post(f"/ui/operator/jobs/{job_id}/retry").status_code == 302
    counts = dict(re.findall(r'<dd id="([\w-]+)">(\d+)</dd>', oscar.get("/ui/operator").get_data(as_text=True)))
    assert counts["file-attente"] == "1" and counts["file-echecs"] == "0"
    Changes(store.db).sequence()  # what a dispatcher does: the feed is now three entries behind
    counts = dict(re.findall(r'<dd id="([\w-]+)">(\d+)</dd>', oscar.get("/ui/operator").get_data(as_text=True)))
    assert (counts["journal-positions"], counts["journal-attente"], counts["retard-pseudonymised-feed"]) == (
        "3",
        "0",
        "3",
    )
    assert oscar.post(f"/ui/operator/events/{events[1]['_id']}/retry").status_code == 302
    assert store.db["_outbox"].find_one({"_id": events[1]["_id"]})["state"] == "new"
    again = oscar.post(f"/ui/operator/events/{events[1]['_id']}/retry")
    assert "requeued=0" in again.headers["Location"]
    # a non-operator cannot retry either
    assert nina.post(f"/ui/operator/events/{events[1]['_id']}/retry").status_code == 403


# -- the users command and the demonstration accounts --------------------------------------------------------
def test_users_command_creates_users_and_prints_the_totp_uri_once(web_app, users, capsys, monkeypatch):
    monkeypatch.setenv("SIDEP_USER_PASSWORD", PASSWORD)
    site = PHARMACY_A.sites[0].finess
    assert (
        users_command(
            [
                "users",
                "add",
                "--login",
                "p.dupont",
                "--name",
                "Paul Dupont",
                "--role",
                "pharmacist",
                "--org",
                PHARMACY_A.finess,
                "--site",
                site,
            ],
            users,
        )
        == 0
    )
    out = capsys.readouterr().out
    secret = users.user("p.dupont")["totp"]
    assert f"otpauth://totp/SI-DEP:p.dupont?secret={secret}&issuer=SI-DEP" in out
    assert Web(web_app).login("p.dupont").status_code == 302
    with pytest.raises(SystemExit, match="organisation"):
        users_command(["users", "add", "--login", "x", "--name", "X", "--role", "pharmacist"], users)
    with pytest.raises(SystemExit, match="RPPS"):
        users_command(["users", "add", "--login", "y", "--name", "Y", "--role", "nurse"], users)
    with pytest.raises(SystemExit, match="already exists"):
        users_command(["users", "add", "--login", "p.dupont", "--name", "P", "--role", "operator"], users)
    monkeypatch.setenv("SIDEP_USER_PASSWORD", "court")
    with pytest.raises(SystemExit, match="12 characters"):
        users_command(["users", "add", "--login", "z", "--name", "Z", "--role", "operator"], users)
    assert users_command(["users", "list"], users) == 0
    listing = capsys.readouterr().out
    assert "p.dupont" in listing and secret not in listing


def test_demo_accounts_are_created_once_with_private_credentials(web_app, users, tmp_path, capsys):
    from fhir_server.web.demo import CREDENTIALS, ensure_demo_users

    first = ensure_demo_users(users, tmp_path, "http://127.0.0.1:8080/ui/")
    path = tmp_path / CREDENTIALS
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert {a["role"] for a in first.values()} == {"pharmacist", "operator"}
    again = ensure_demo_users(users, tmp_path, "http://127.0.0.1:8080/ui/")
    printed = capsys.readouterr().out
    assert again == first and str(path) in printed and "demo.pharmacien" in printed
    # where the credentials are, never the credentials (the console is often a log)
    assert "otpauth://" not in printed
    assert not any(a["password"] in printed or a["totp_secret"] in printed for a in first.values())
    pharmacist = next(login for login, a in first.items() if a["role"] == "pharmacist")
    assert Web(web_app).login(pharmacist, password=first[pharmacist]["password"]).status_code == 302

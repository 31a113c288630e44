"""The citizen portal (/portail): a laboratory posts results to a real secured server, the deep
links are those the notification job issues (storage.deliveries.DeepLinks), and a person goes
through the pages with Flask's test client; one test runs the whole path with real worker and
dispatcher processes, reading the link and the code from the SMS the gateway received."""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import secrets
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests

from fhir_server.portal import messages
from fhir_server.portal.otp import otp_code, otp_key, sms_text
from fhir_server.portal.results import wallet_link
from fhir_server.storage.accounts import utc_now
from fhir_server.storage.deliveries import DeepLinks, token_hash
from fhir_server.storage.otps import LinkOtp, Otps
from fhir_server.storage.portal_sessions import PortalSessionRecord
from workers.channels.gsm7 import fits_one_sms
from workers.queue import queue

from .processes import wait_for
from .test_auth_access import LAB_A, LAB_B, post_bundle
from .test_notifications import person, platform  # noqa: F401 - the platform fixture

TEMPLATES = Path(__file__).resolve().parent.parent / "fhir_server" / "portal" / "templates" / "portal"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


@dataclasses.dataclass
class Portal:
    server: object

    @property
    def app(self):
        return self.server.app

    @property
    def settings(self):
        return self.server.settings

    def browser(self):
        return self.app.test_client()

    def result(self, lab=LAB_A, seed: int = 1, who=None, kind: str | None = None):
        """A posted result and a deep link to it: (posted ids, token, birth date)."""
        who = who or person(seed)
        posted = post_bundle(self.server.client_session(lab), lab, seed, who, kind=kind)
        token = self.link(posted["Patient"], posted["DiagnosticReport"], lab)
        return posted, token, who.birth_date

    def link(self, patient: str, report: str, lab=LAB_A, expires=None) -> str:
        token = secrets.token_urlsafe(16)
        DeepLinks().issue(token, patient, report, [lab.finess], expires or utc_now() + timedelta(days=30))
        return token

    def code(self, token: str) -> str:
        """The live code of a link, as the sending job computes it."""
        record = LinkOtp.objects.get(link=token_hash(token))
        return otp_code(otp_key(self.settings), record.id, record.counter)

    def otp(self, token: str) -> LinkOtp:
        return LinkOtp.objects.get(link=token_hash(token))


@pytest.fixture
def portal(secured_factory, redis_url):
    return Portal(secured_factory(redis_url=redis_url, queue_name=f"q-{uuid.uuid4().hex[:8]}"))


@pytest.fixture
def make_portal(secured_factory, redis_url):
    def make(**overrides) -> Portal:
        overrides.setdefault("redis_url", redis_url)
        return Portal(secured_factory(queue_name=f"q-{uuid.uuid4().hex[:8]}", **overrides))

    return make


# -- a browser's steps ----------------------------------------------------------------------------
def csrf_of(response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', response.get_data(as_text=True))
    assert found, response.get_data(as_text=True)
    return found.group(1)


def post_form(browser, path: str, page: str | None = None, **fields):
    token = csrf_of(browser.get(page or path))
    return browser.post(path, data={"csrf_token": token, **fields})


def open_link(browser, token: str):
    return post_form(browser, "/portail/lien", "/portail/", token=token)


def give_birth_date(browser, born: date | str):
    day, month, year = (born.day, born.month, born.year) if isinstance(born, date) else born.split("/")
    return post_form(browser, "/portail/naissance", day=str(day), month=str(month), year=str(year))


def give_code(browser, code: str):
    return post_form(browser, "/portail/code", code=code)


def sign_in(portal: Portal, browser, token: str, born: date):
    assert open_link(browser, token).status_code == 303
    response = give_birth_date(browser, born)
    assert response.status_code == 303 and response.headers["Location"].endswith("/portail/code"), response.text
    response = give_code(browser, portal.code(token))
    assert response.status_code == 303 and response.headers["Location"].endswith("/portail/resultats")


def page_text(response) -> str:
    return response.get_data(as_text=True)


def wrong_birth(born: date) -> date:
    return born.replace(year=born.year - 1) if born.month != 2 or born.day != 29 else born - timedelta(days=1)


# -- the path of a person -------------------------------------------------------------------------
def test_a_person_opens_the_link_confirms_the_birth_date_enters_the_code_and_sees_the_result(portal, caplog):
    caplog.set_level(logging.INFO)
    posted, token, born = portal.result(seed=1)
    browser = portal.browser()
    landing = browser.get("/portail/")
    assert landing.status_code == 200
    assert 'src="/portail/static/portal.js"' in page_text(landing)
    assert "franceconnect/login" not in page_text(landing)  # offered only when configured (FRANCECONNECT_ISSUER)
    assert open_link(browser, token).headers["Location"].endswith("/portail/naissance")
    response = give_birth_date(browser, born)
    assert response.status_code == 303
    # the sending job is queued with the record's id only
    record = portal.otp(token)
    [job_id] = queue(portal.settings.redis_url, portal.settings.queue_name).job_ids
    job = queue(portal.settings.redis_url, portal.settings.queue_name).fetch_job(job_id)
    assert job.func_name == "workers.jobs.otp.send_otp" and job.args == (record.id,)
    code = portal.code(token)
    assert record.code_hash and code not in record.to_json()  # only a keyed hash is stored
    response = give_code(browser, code)
    assert response.status_code == 303

    listed = browser.get("/portail/resultats")
    assert listed.status_code == 200
    body = page_text(listed)
    assert f'href="/portail/resultats/{posted["DiagnosticReport"]}"' in body
    assert "Négatif" in body or "Positif" in body
    detail = browser.get(f"/portail/resultats/{posted['DiagnosticReport']}")
    assert detail.status_code == 200
    pdf = browser.get(f"/portail/resultats/{posted['DiagnosticReport']}/certificat.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF") and pdf.headers["Cache-Control"] == "no-store"
    if "walletdcc" in page_text(detail):  # a result that gives an EU certificate
        link = re.search(r'href="(https://bonjour\.tousanticovid\.gouv\.fr/app/walletdcc#[^"]+)"', page_text(detail))
        assert link and link.group(1).startswith("https://bonjour.tousanticovid.gouv.fr/app/walletdcc#HC1:"), page_text(
            detail
        )
        qr = browser.get(f"/portail/resultats/{posted['DiagnosticReport']}/qr.png")
        assert qr.status_code == 200 and qr.data.startswith(b"\x89PNG")
    # every access is an AuditEvent of the citizen portal, owned by the laboratory
    events = portal.server.audit_events({"res.agent.who.display": "citizen portal (deep-link)"})
    assert [e["entity"][1]["description"] for e in events][:3] == ["list", "detail", "pdf"]
    assert all(e["agent"][0]["who"]["display"] == "citizen portal (deep-link)" for e in events)
    assert all({"reference": f"Patient/{posted['Patient']}"} == e["entity"][0]["what"] for e in events)
    docs = list(portal.server.store.db["AuditEvent"].find({"res.agent.who.display": {"$regex": "^citizen portal"}}))
    owners = portal.server.store.current("DiagnosticReport", posted["DiagnosticReport"]).owner
    assert owners and all(doc["org"] == owners for doc in docs)
    # nothing personal in any log record of the process
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert token not in logged and code not in logged and born.isoformat() not in logged


def test_the_wallet_link_percent_encodes_the_hc1_string_as_tousanticovid_reads_it():
    assert wallet_link("HC1:6BF+70 A%/B") == "https://bonjour.tousanticovid.gouv.fr/app/walletdcc#HC1:6BF+70%20A%25/B"


def test_every_page_has_the_security_headers_a_lang_attribute_one_h1_and_the_other_language(portal):
    browser = portal.browser()
    for path in ("/portail/", "/portail/nulle-part", "/portail/resultats/xyz"):
        response = browser.get(path)
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "max-age=" in response.headers["Strict-Transport-Security"]
        assert response.headers["Cache-Control"] == "no-store"
        if response.status_code != 303:
            body = page_text(response)
            assert '<html lang="fr">' in body and body.count("<h1") == 1
            assert "?lang=en" in body
    assert browser.get("/portail/nulle-part").status_code == 404
    english = browser.get("/portail/?lang=en")
    assert '<html lang="en">' in page_text(english) and "View my test result" in page_text(english)
    assert "sidep_portail_lang=en" in english.headers.get("Set-Cookie", "") or any(
        "sidep_portail_lang=en" in c for c in english.headers.getlist("Set-Cookie")
    )
    assert '<html lang="en">' in page_text(browser.get("/portail/"))  # kept by its cookie
    assert '<html lang="fr">' in page_text(browser.get("/portail/?lang=fr"))


def test_the_session_cookie_is_the_portal_s_own_httponly_samesite_lax_and_secure_over_https(make_portal):
    cookies = (
        make_portal(base_url="https://sidep.example/fhir").browser().get("/portail/").headers.getlist("Set-Cookie")
    )
    [session_cookie] = [c for c in cookies if c.startswith("sidep_portail=")]
    assert "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie and "Secure" in session_cookie
    assert "Path=/portail" in session_cookie


def test_templates_hold_no_inline_script_or_style_and_tie_every_input_to_a_label():
    for template in TEMPLATES.glob("*.html"):
        source = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", source), template.name
        assert "<style" not in source and "style=" not in source and " on" + "click" not in source
        for field in re.findall(r'<input type="text" id="([^"]+)"', source):
            assert f'for="{field}"' in source, (template.name, field)


def test_every_message_has_french_and_english():
    assert all(entry.get("fr") and entry.get("en") for entry in messages.MESSAGES.values())
    used = {key for t in TEMPLATES.glob("*.html") for key in re.findall(r"t\('([a-z_.0-9-]*[a-z0-9])'", t.read_text())}
    assert used and used <= set(messages.MESSAGES), used - set(messages.MESSAGES)


def test_the_code_fits_one_gsm7_sms():
    text = sms_text("123456", 5)
    assert fits_one_sms(text) and "123456" in text


# -- refusals -------------------------------------------------------------------------------------
def test_an_unknown_or_expired_link_says_it_is_no_longer_valid(portal):
    posted, _, _ = portal.result(seed=2)
    expired = portal.link(posted["Patient"], posted["DiagnosticReport"], expires=utc_now() - timedelta(seconds=1))
    for token in (expired, secrets.token_urlsafe(16)):
        response = open_link(portal.browser(), token)
        assert response.status_code == 404
        assert "ce lien n'est plus valable" in page_text(response).lower().replace("&#39;", "'")
    pasted = open_link(portal.browser(), f"https://sidep.example/portail/#{expired}")  # the whole link pasted
    assert pasted.status_code == 404


def test_a_wrong_birth_date_and_a_wrong_code_get_the_same_words_and_share_one_budget(make_portal):
    portal = make_portal(otp_max_attempts=3, otp_lockout_minutes=15, otp_resend_seconds=0)
    _, token, born = portal.result(seed=3)
    browser = portal.browser()
    open_link(browser, token)
    wrong = give_birth_date(browser, wrong_birth(born))
    assert wrong.status_code == 401 and not LinkOtp.objects.get(link=token_hash(token)).code_hash  # nothing sent
    assert give_birth_date(browser, born).status_code == 303
    bad_code = f"{(int(portal.code(token)) + 1) % 10**6:06d}"
    wrong_code = give_code(browser, bad_code)
    assert wrong_code.status_code == 401
    words = messages.text("wrong", "fr").replace("'", "&#39;")
    assert words in page_text(wrong) and words in page_text(wrong_code)
    locked = give_code(browser, bad_code)  # the third wrong answer: locked
    assert locked.status_code == 429 and "bloqué pendant 15 minutes" in page_text(locked)
    assert int(locked.headers["Retry-After"]) > 14 * 60
    # locked: the right code is no longer accepted, on this browser or another
    right = {"csrf_token": csrf_of(browser.get("/portail/")), "code": portal.code(token)}
    assert browser.post("/portail/code", data=right).status_code == 429
    other = portal.browser()
    open_link(other, token)
    assert other.get("/portail/naissance").status_code == 429
    # the lock ends after OTP_LOCKOUT_MINUTES
    LinkOtp.objects(link=token_hash(token)).update_one(set__locked_until=utc_now() - timedelta(seconds=1))
    assert give_birth_date(other, born).status_code == 303


def test_an_expired_code_is_refused(portal):
    _, token, born = portal.result(seed=4)
    browser = portal.browser()
    open_link(browser, token)
    give_birth_date(browser, born)
    code = portal.code(token)
    record = portal.otp(token)
    assert record.code_expires - utc_now() <= timedelta(minutes=portal.settings.otp_minutes)
    assert record.code_expires - utc_now() > timedelta(minutes=portal.settings.otp_minutes) - timedelta(seconds=30)
    LinkOtp.objects(id=record.id).update_one(set__code_expires=utc_now() - timedelta(seconds=1))  # OTP_MINUTES later
    response = give_code(browser, code)
    assert response.status_code == 401 and "plus valable" in page_text(response)
    assert browser.get("/portail/resultats").status_code == 303


def test_a_code_is_used_once(make_portal):
    portal = make_portal(otp_resend_seconds=0)
    _, token, born = portal.result(seed=5)
    first = portal.browser()
    sign_in(portal, first, token, born)
    used = portal.code(token)
    assert not Otps().use(portal.otp(token).id, portal.otp(token).code_hash or "", utc_now())
    # the same code again, from a new sign-in on the same link: refused
    second = portal.browser()
    open_link(second, token)
    give_birth_date(second, born)  # a new code is sent
    assert give_code(second, used).status_code == 401
    assert second.get("/portail/resultats").status_code == 303


def test_resending_too_soon_or_too_often_is_429(make_portal):
    portal = make_portal(otp_resend_seconds=60, otp_max_sends=2)
    _, token, born = portal.result(seed=6)
    browser = portal.browser()
    open_link(browser, token)
    give_birth_date(browser, born)
    too_soon = post_form(browser, "/portail/code/renvoi", "/portail/code")
    assert too_soon.status_code == 429 and "patientez" in page_text(too_soon)
    assert 0 < int(too_soon.headers["Retry-After"]) <= 60
    LinkOtp.objects(link=token_hash(token)).update_one(set__last_sent=utc_now() - timedelta(seconds=61))
    assert post_form(browser, "/portail/code/renvoi", "/portail/code").status_code == 303  # the second code
    LinkOtp.objects(link=token_hash(token)).update_one(set__last_sent=utc_now() - timedelta(seconds=61))
    too_many = post_form(browser, "/portail/code/renvoi", "/portail/code")
    assert too_many.status_code == 429 and "trop de codes" in page_text(too_many)
    # the period (OTP_LOCKOUT_MINUTES) over, codes may be sent again
    LinkOtp.objects(link=token_hash(token)).update_one(set__period_start=utc_now() - timedelta(minutes=16))
    assert post_form(browser, "/portail/code/renvoi", "/portail/code").status_code == 303


def test_a_form_without_its_csrf_token_is_400_in_the_page_s_language(portal):
    _, token, _ = portal.result(seed=7)
    browser = portal.browser()
    browser.get("/portail/?lang=en")
    missing = browser.post("/portail/lien", data={"token": token})
    assert missing.status_code == 400 and "Bad request" in page_text(missing)
    wrong = browser.post("/portail/lien", data={"token": token, "csrf_token": "x" * 32})
    assert wrong.status_code == 400
    assert not LinkOtp.objects(link=token_hash(token)).first()  # the link was not even looked at
    assert portal.browser().post("/portail/lien", data={"token": token}).status_code == 400  # no session


def test_redis_down_is_a_kind_503_and_the_code_is_not_counted(make_portal, tmp_path):
    portal = make_portal(redis_url=f"unix://{tmp_path}/no-redis.sock")
    _, token, born = portal.result(seed=8)
    browser = portal.browser()
    open_link(browser, token)
    response = give_birth_date(browser, born)
    assert response.status_code == 503 and "momentanément indisponible" in page_text(response)
    record = portal.otp(token)
    assert record.sends == 0 and not record.code_hash and record.last_sent is None


def test_another_person_s_link_and_result_are_refused(portal):
    posted_a, token_a, born_a = portal.result(seed=9)
    posted_b, token_b, born_b = portal.result(seed=10)
    assert born_a != born_b
    browser = portal.browser()
    open_link(browser, token_b)
    assert give_birth_date(browser, born_a).status_code == 401  # B's link needs B's birth date
    sign_in(portal, browser, token_a, born_a)
    listed = page_text(browser.get("/portail/resultats"))
    assert posted_a["DiagnosticReport"] in listed and posted_b["DiagnosticReport"] not in listed
    unknown = browser.get("/portail/resultats/no-such-report")
    for suffix in ("", "/certificat.pdf", "/qr.png"):
        other = browser.get(f"/portail/resultats/{posted_b['DiagnosticReport']}{suffix}")
        assert other.status_code == 404 and other.data == unknown.data
    events = portal.server.audit_events({"res.agent.who.display": {"$regex": "^citizen portal"}})
    assert not [e for e in events if e["entity"][1]["what"]["reference"].endswith(posted_b["DiagnosticReport"])]


def test_results_need_a_live_session_of_portal_session_minutes(make_portal):
    portal = make_portal(portal_session_minutes=15)
    posted, token, born = portal.result(seed=11)
    browser = portal.browser()
    assert browser.get("/portail/resultats").status_code == 303
    sign_in(portal, browser, token, born)
    [session] = PortalSessionRecord.objects(signed_in__ne=None)
    assert timedelta(minutes=14) < session.expires - utc_now() <= timedelta(minutes=15)
    PortalSessionRecord.objects(hash=session.hash).update_one(set__expires=utc_now() - timedelta(seconds=1))
    assert browser.get(f"/portail/resultats/{posted['DiagnosticReport']}").status_code == 303
    assert "session a expiré" in page_text(browser.get("/portail/"))


def test_signing_out_ends_the_session(portal):
    _, token, born = portal.result(seed=12)
    browser = portal.browser()
    sign_in(portal, browser, token, born)
    response = post_form(browser, "/portail/deconnexion", "/portail/resultats")
    assert response.status_code == 200 and "déconnecté" in page_text(response)
    assert browser.get("/portail/resultats").status_code == 303


def test_a_result_without_eu_certificate_still_shows_and_downloads_its_sheet(portal):
    posted, token, born = portal.result(seed=14, kind="serology")
    browser = portal.browser()
    sign_in(portal, browser, token, born)
    detail = browser.get(f"/portail/resultats/{posted['DiagnosticReport']}")
    assert detail.status_code == 200 and "walletdcc" not in page_text(detail)
    assert "Test sérologique" in page_text(detail)
    assert browser.get(f"/portail/resultats/{posted['DiagnosticReport']}/certificat.pdf").data.startswith(b"%PDF")
    assert browser.get(f"/portail/resultats/{posted['DiagnosticReport']}/qr.png").status_code == 404


def test_a_test_code_the_certificates_do_not_know_shows_the_lab_s_label_and_a_clear_page(portal):
    posted, token, born = portal.result(seed=13, kind="serology")  # LOINC 94505-5: not in the table
    browser = portal.browser()
    sign_in(portal, browser, token, born)
    detail = browser.get(f"/portail/resultats/{posted['DiagnosticReport']}")
    assert detail.status_code == 200 and "Sérologie SARS-CoV-2 IgG" in page_text(detail)
    sheet = browser.get(f"/portail/resultats/{posted['DiagnosticReport']}/certificat.pdf")
    assert sheet.status_code == 422 and "Fiche de résultat indisponible" in page_text(sheet)


def test_a_deep_link_shows_the_person_s_matched_results_of_other_laboratories_never_conflicts(portal):
    same = person(14, phone="0611111111", email=None)
    posted_a, token, born = portal.result(LAB_A, seed=14, who=same)
    lab_b = portal.server.client_session(LAB_B)
    posted_b = post_bundle(lab_b, LAB_B, 15, same)  # the same INS, birth date and sex: a match
    browser = portal.browser()
    sign_in(portal, browser, token, born)
    listed = page_text(browser.get("/portail/resultats"))
    assert posted_a["DiagnosticReport"] in listed and posted_b["DiagnosticReport"] in listed
    # laboratory B now sends another birth date for that INS: its Patient is in conflict, not shown
    other_birth = dataclasses.replace(same, birth_date=wrong_birth(same.birth_date))
    posted_c = post_bundle(lab_b, LAB_B, 16, other_birth)
    assert posted_c["Patient"] == posted_b["Patient"]
    listed = page_text(browser.get("/portail/resultats"))
    assert posted_a["DiagnosticReport"] in listed
    assert posted_b["DiagnosticReport"] not in listed and posted_c["DiagnosticReport"] not in listed
    assert browser.get(f"/portail/resultats/{posted_b['DiagnosticReport']}").status_code == 404


# -- end to end -----------------------------------------------------------------------------------
def test_end_to_end_the_sms_link_then_the_sms_code_then_the_results(platform):  # noqa: F811
    platform.worker()
    platform.dispatcher()
    who = person(30, email=None)
    posted = post_bundle(platform.server.client_session(LAB_A), LAB_A, 30, who)
    [notice] = wait_for(platform.sms.messages, what="the notification SMS")
    token = re.search(r"/portail/#([A-Za-z0-9_-]{22})", notice["text"]).group(1)
    portal_url = platform.settings.root_url + "/portail"
    browser = requests.Session()

    def form(path, page=None, **fields):
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', browser.get(portal_url + (page or path)).text).group(1)
        return browser.post(portal_url + path, data={"csrf_token": csrf, **fields}, allow_redirects=False)

    assert form("/lien", "/", token=token).status_code == 303
    born = who.birth_date
    assert form("/naissance", day=str(born.day), month=str(born.month), year=str(born.year)).status_code == 303
    second = wait_for(lambda: platform.sms.messages()[1:], what="the code SMS")[0]
    assert second["to"] == notice["to"] and fits_one_sms(second["text"])
    code = re.search(r"\b(\d{6})\b", second["text"]).group(1)
    assert form("/code", code=code).status_code == 303
    listed = browser.get(portal_url + "/resultats")
    assert listed.status_code == 200 and posted["DiagnosticReport"] in listed.text
    assert listed.headers["Content-Security-Policy"] == CSP
    pdf = browser.get(f"{portal_url}/resultats/{posted['DiagnosticReport']}/certificat.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    # the code was sent once, and no log of any process shows it or the token
    assert len(platform.sms.messages()) == 2
    for log in platform.logs.glob("*.log"):
        text = log.read_text(errors="replace")
        assert code not in text and token not in text, log.name


def test_a_positive_result_shows_its_tousanticovid_declaration_code_the_same_at_every_visit(portal):
    from PIL import Image
    from pyzbar.pyzbar import ZBarSymbol, decode

    from fhir_server.declaration_codes import app_link

    posted, token, born = portal.result(seed=615, kind="naat")  # seed 615: a positive result
    browser = portal.browser()
    sign_in(portal, browser, token, born)
    address = f"/portail/resultats/{posted['DiagnosticReport']}"
    first = re.search(r'class="code-declaration">([^<]+)<', page_text(browser.get(address)))
    assert first, "a positive result shows a declaration code"
    again = re.search(r'class="code-declaration">([^<]+)<', page_text(browser.get(address)))
    assert again.group(1) == first.group(1)  # one code per positive result
    png = browser.get(f"{address}/code-declaration.png")
    assert png.status_code == 200 and png.headers["Content-Type"] == "image/png"
    [symbol] = decode(Image.open(io.BytesIO(png.data)), symbols=[ZBarSymbol.QRCODE])
    assert symbol.data.decode() == app_link(first.group(1))
    # a negative result has none
    negative, token_b, born_b = portal.result(seed=12, kind="naat")
    other = portal.browser()
    sign_in(portal, other, token_b, born_b)
    assert "code-declaration" not in page_text(other.get(f"/portail/resultats/{negative['DiagnosticReport']}"))
    assert other.get(f"/portail/resultats/{negative['DiagnosticReport']}/code-declaration.png").status_code == 404
    assert other.get(f"{address}/code-declaration.png").status_code == 404  # another person's

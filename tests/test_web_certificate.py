"""The result page's "Certificat (PDF)" download, for patients without mobile or e-mail whom the
guide sends to the place of their test: the PDF of `$generate-certificate`, for whoever may read
the result page, never cached, every download audited."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import pytest
from pypdf import PdfReader

from fhir_server import create_app
from fhir_server.web.forms import PARIS
from tests import test_web_ui
from tests.test_web_ui import PHARMACY_B, Web, add_user, result_form, text


@pytest.fixture
def web_app(mongo_uri, tmp_path):
    return create_app(test_web_ui.web_settings.__wrapped__(mongo_uri, tmp_path))


@pytest.fixture
def users(web_app):
    return web_app.extensions["sidep.users"]


@pytest.fixture
def store(web_app):
    return web_app.extensions["sidep.store"]


def recent() -> str:
    return (datetime.now(PARIS) - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")


def enter(web, **changes) -> str:
    response = web.enter(result_form(sampled_at=recent(), device="1232", **changes))
    assert response.status_code == 302, text(response)
    return response.headers["Location"].split("/")[3].split("?")[0]


def pdf_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def audit_events(app, store, **query) -> list[dict]:
    app.extensions["sidep.audit"].flush()
    return [e["res"] for e in store.db["AuditEvent"].find({"res.subtype.code": "operation", **query})]


def test_the_result_page_offers_the_certificate_which_downloads_as_a_private_pdf(web_app, users, store):
    add_user(users, "ines")
    ines = Web(web_app).signed_in("ines")
    report = enter(ines, family="Zidane", given="Yasmina")
    page = ines.get(f"/ui/results/{report}")
    assert f'href="/ui/results/{report}/certificate"' in page.get_data(as_text=True)
    assert "Certificat (PDF)" in text(page)
    response = ines.http.get(f"/ui/results/{report}/certificate")
    assert response.status_code == 200
    assert response.mimetype == "application/pdf" and response.data.startswith(b"%PDF")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Disposition"] == f'attachment; filename="certificat-{report}.pdf"'
    content = pdf_text(response.data)
    assert "Fiche de résultat" in content and "ZIDANE" in content.upper() and "Yasmina" in content
    assert "Certificat numérique européen" in content  # a rapid antigen test with its device


def test_only_who_may_read_the_result_gets_its_certificate(web_app, users, store):
    add_user(users, "ines")
    add_user(users, "karim")  # a colleague: the result page refuses him (not his own result)
    add_user(users, "jules", lab=PHARMACY_B)  # another organisation: the result is not there
    add_user(users, "lea", role="laboratory")  # laboratory staff of ines's organisation
    report = enter(Web(web_app).signed_in("ines"))
    url = f"/ui/results/{report}/certificate"
    jules, karim, lea = (Web(web_app).signed_in(login) for login in ("jules", "karim", "lea"))
    assert jules.http.get(url).status_code == jules.get(f"/ui/results/{report}").status_code == 404
    assert karim.http.get(url).status_code == karim.get(f"/ui/results/{report}").status_code == 403
    assert b"%PDF" not in jules.http.get(url).data + karim.http.get(url).data
    assert lea.http.get(url).status_code == 200
    anonymous = Web(web_app).get(url)
    assert anonymous.status_code == 302 and "/ui/login" in anonymous.headers["Location"]


def test_every_download_is_audited_and_so_is_a_refusal(web_app, users, store):
    add_user(users, "ines")
    add_user(users, "jules", lab=PHARMACY_B)
    ines = Web(web_app).signed_in("ines")
    report = enter(ines)
    for _ in range(2):
        assert ines.http.get(f"/ui/results/{report}/certificate").status_code == 200
    Web(web_app).signed_in("jules").http.get(f"/ui/results/{report}/certificate")
    events = audit_events(web_app, store)
    done = [e for e in events if e["outcome"] == "0"]
    assert len(done) == 2
    for event in done:
        assert event["agent"][0]["altId"] == "ines" and event["source"]["site"] == "SI-DEP web"
        assert {"reference": f"DiagnosticReport/{report}"} in [e["what"] for e in event["entity"]]
        assert any(e["what"]["reference"].startswith("Patient/") for e in event["entity"])
    refused = [e for e in events if e["outcome"] == "8"]
    assert [e["agent"][0]["altId"] for e in refused] == ["jules"]


def test_a_result_past_its_retention_gives_the_reason_not_a_pdf(web_app, users, store):
    add_user(users, "ines")
    ines = Web(web_app).signed_in("ines")
    old = ines.enter(result_form(sampled_at="2021-07-09T09:15", device="1232"))
    report = old.headers["Location"].split("/")[3].split("?")[0]
    response = ines.http.get(f"/ui/results/{report}/certificate")
    assert response.status_code == 410 and "plus de 3 mois" in text(response)
    assert response.mimetype == "text/html"
    [event] = audit_events(web_app, store)
    assert event["outcome"] != "0"

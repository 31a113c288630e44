"""$generate-certificate through the real server (Flask app, embedded SecantusDB): resources are
stored over the REST API, then certificates are fetched in every output format."""

from __future__ import annotations

import base64
import datetime as dt
import io

import pytest
from PIL import Image
from pypdf import PdfReader
from pyzbar.pyzbar import ZBarSymbol, decode

from operations.certificates.examples import example_resources
from operations.certificates.hcert import decode_and_verify
from operations.certificates.keys import load_keyring
from operations.certificates.trustlist import trust_list
from tests.test_certificates_hcert import verify_with_pycose

NOW = dt.datetime.now(dt.UTC)


def store(client, **options) -> dict:
    resources = example_resources(**options)
    for name in ("patient", "organization", "specimen", "observation", "report"):
        resource = dict(resources[name])
        resource.pop("meta", None)
        response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code in (200, 201), response.get_data(as_text=True)
    return resources


def published(settings) -> dict:
    return trust_list(load_keyring(settings.var_dir))


def published_over_http(client) -> dict:
    """The trust list as an independent verifier gets it: from the public endpoint."""
    response = client.http.get("/trust-list")
    assert response.status_code == 200
    return response.get_json()


def test_pdf_by_default(client, settings):
    store(client, sampled_at=NOW - dt.timedelta(hours=4))
    response = client.get("/fhir/DiagnosticReport/dr-example/$generate-certificate", headers={"Accept": "*/*"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/pdf"
    assert response.headers["Cache-Control"] == "no-store"
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(response.data)).pages)
    assert "Fiche de résultat" in text and "Lefèvre-Dubois" in text


def test_text_png_and_parameters_on_report_and_observation(client, settings):
    store(client, result="detected", sampled_at=NOW - dt.timedelta(days=15))
    text = client.get("/fhir/DiagnosticReport/dr-example/$generate-certificate?format=text/plain")
    assert text.status_code == 200 and text.mimetype == "text/plain"
    test_hc1, recovery_hc1 = text.get_data(as_text=True).splitlines()  # Base45 has spaces
    trust = published_over_http(client)
    assert trust == published(settings)
    assert "t" in verify_with_pycose(test_hc1, trust)[-260][1]
    assert "r" in verify_with_pycose(recovery_hc1, trust)[-260][1]

    png = client.get("/fhir/Observation/dr-example-obs/$generate-certificate", headers={"Accept": "image/png"})
    assert png.status_code == 200 and png.mimetype == "image/png"
    [symbol] = decode(Image.open(io.BytesIO(png.data)), symbols=[ZBarSymbol.QRCODE])
    assert decode_and_verify(symbol.data.decode(), trust).payload["t"][0]["tr"] == "260373001"

    parameters = client.post(
        "/fhir/DiagnosticReport/dr-example/$generate-certificate",
        json={"resourceType": "Parameters", "parameter": [{"name": "format", "valueCode": "application/fhir+json"}]},
    )
    assert parameters.status_code == 200, parameters.get_data(as_text=True)
    body = parameters.get_json()
    assert body["resourceType"] == "Parameters"
    pdf = next(p for p in body["parameter"] if p["name"] == "pdf")["resource"]
    assert pdf["contentType"] == "application/pdf"
    assert base64.b64decode(pdf["data"]).startswith(b"%PDF")
    certificates = [p for p in body["parameter"] if p["name"] == "certificate"]
    assert [c["part"][0]["valueCode"] for c in certificates] == ["test", "recovery"]


@pytest.mark.parametrize(
    "options, status",
    [
        (dict(status="preliminary", sampled_at=NOW - dt.timedelta(hours=3)), 409),
        (dict(sampled_at=NOW - dt.timedelta(days=95)), 410),
    ],
)
def test_errors_are_operation_outcomes(client, options, status):
    store(client, **options)
    response = client.get("/fhir/DiagnosticReport/dr-example/$generate-certificate")
    assert response.status_code == status
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"]


def test_serology_png_is_refused_but_pdf_is_given(client):
    store(client, kind="serology", result="detected", sampled_at=NOW - dt.timedelta(days=2))
    png = client.get("/fhir/DiagnosticReport/dr-example/$generate-certificate?format=png")
    assert png.status_code == 422
    pdf = client.get("/fhir/DiagnosticReport/dr-example/$generate-certificate?format=pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")


def test_trust_list_is_published_without_a_token(client):
    response = client.http.get("/trust-list")
    assert response.status_code == 200
    body = response.get_json()
    assert body["certificates"]
    entry = next(iter(body["certificates"].values()))
    assert entry["country"] == "FR" and entry["certificate"]

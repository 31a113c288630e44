"""The certificate PDF as a person reads it: names in any Latin script, headers whole, the
validity counted from the sampling with its end date printed, the result sheet of a rapid
antigen test without its device and of a serology measured in U/mL."""

from __future__ import annotations

import datetime as dt
import io
import random
from zoneinfo import ZoneInfo

import pytest
from pypdf import PdfReader

from fhir_server.outcome import FhirError
from fhir_server.synthetic.generator import generate_result_bundle
from operations.certificates.examples import example_resources
from operations.certificates.facts import facts_from_resources
from operations.certificates.generate import issue_certificates
from operations.certificates.hcert import decode_and_verify
from operations.certificates.keys import load_keyring
from operations.certificates.pdf import fonts, render_pdf
from operations.certificates.trustlist import trust_list
from operations.generate_certificate import render
from tests.test_certificates_render import pdf_pages_as_images

PARIS = ZoneInfo("Europe/Paris")
# a fixed sampling time; each test's clock is set from it (the development signing keys are made
# valid from the moment the test runs, so its clocks run from there)
SAMPLED = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)


def paris(moment: dt.datetime) -> str:
    return moment.astimezone(PARIS).strftime("%d/%m/%Y %H:%M")


def day(moment: dt.datetime, days: int) -> dt.date:
    return moment.date() + dt.timedelta(days=days)


@pytest.fixture
def keyring(tmp_path):
    return load_keyring(tmp_path / "var", environ={})


def words(pdf: bytes) -> str:
    """The PDF's text with its line breaks as spaces (lines wrap where the font says)."""
    return " ".join("\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages).split())


def issue(keyring, now, **options):
    return issue_certificates(facts_from_resources(**example_resources(**options)), keyring, now)


@pytest.mark.parametrize(
    "family, given",
    [("Wąsowski", "Łukasz"), ("Ödön", "Gergő"), ("Şahin", "Ağça"), ("Žižková", "Anežka Říhová")],
)
def test_names_in_any_latin_script_are_printed_with_an_embedded_unicode_font(keyring, tmp_path, family, given):
    certificates = issue(keyring, SAMPLED + dt.timedelta(hours=5), family=family, given=(given,), sampled_at=SAMPLED)
    pdf = render_pdf(certificates)
    text = words(pdf)
    assert family in text and given in text
    assert "■" not in text
    assert b"DejaVuSans" in pdf  # the font is in the file, not left to the reader's machine
    assert len(pdf_pages_as_images(pdf, tmp_path)) == 2  # poppler renders it


def test_the_font_is_found_on_this_machine():
    assert fonts()["family"] == "DejaVuSans" and len(fonts()["faces"]) == 4


def test_headers_are_whole(keyring):
    text = words(render_pdf(issue(keyring, SAMPLED + dt.timedelta(hours=5), sampled_at=SAMPLED)))
    for header in (
        "SI-DEP - Système d'information national de dépistage populationnel / French national screening "
        "information system",
        "Fiche de résultat Test result sheet - COVID-19 Identité / Identity",
        "SI-DEP - Union européenne / European Union Certificat numérique européen",
    ):
        assert header in text, header


@pytest.mark.parametrize("hours_later", [1, 30, 71])
def test_a_negative_test_is_valid_72_hours_after_sampling_whenever_it_is_made(keyring, hours_later):
    now = SAMPLED + dt.timedelta(hours=hours_later)
    certificates = issue(keyring, now, sampled_at=SAMPLED)
    [dcc] = certificates.dccs
    assert dcc.expires_at == SAMPLED + dt.timedelta(hours=72)
    claims = decode_and_verify(dcc.hc1, trust_list(keyring), now=now).claims
    assert claims[4] == int((SAMPLED + dt.timedelta(hours=72)).timestamp())
    text = words(render_pdf(certificates))
    until = paris(SAMPLED + dt.timedelta(hours=72))
    assert f"Valable jusqu'au {until}" in text and f"Valid until {until}" in text


def test_past_its_72_hours_a_negative_test_certificate_no_longer_verifies(keyring):
    now = SAMPLED + dt.timedelta(hours=80)
    [dcc] = issue(keyring, now, sampled_at=SAMPLED).dccs
    with pytest.raises(ValueError, match="expired"):
        decode_and_verify(dcc.hc1, trust_list(keyring), now=now)


def test_recovery_is_valid_from_11_to_180_days_after_the_positive_sampling(keyring):
    assert [
        d.type for d in issue(keyring, SAMPLED + dt.timedelta(days=10), result="detected", sampled_at=SAMPLED).dccs
    ] == ["test"]
    certificates = issue(keyring, SAMPLED + dt.timedelta(days=11), result="detected", sampled_at=SAMPLED)
    recovery = certificates.dcc("recovery")
    entry = recovery.payload["r"][0]
    assert entry["df"] == day(SAMPLED, 11).isoformat() and entry["du"] == day(SAMPLED, 180).isoformat()
    assert entry["fr"] == SAMPLED.date().isoformat()
    assert recovery.expires_at == SAMPLED + dt.timedelta(days=180)
    text = words(render_pdf(certificates))
    assert f"Valable à partir du / Valid from : {day(SAMPLED, 11):%d/%m/%Y}" in text
    assert f"Valable jusqu'au / Valid until : {day(SAMPLED, 180):%d/%m/%Y}" in text
    # past the results' retention (3 months, before the 180 days end) nothing is issued any more
    with pytest.raises(FhirError) as gone:
        issue(keyring, SAMPLED + dt.timedelta(days=93), result="detected", sampled_at=SAMPLED)
    assert gone.value.status == 410


def test_a_rapid_antigen_test_without_device_gets_its_result_sheet_alone(keyring):
    resources = example_resources(
        kind="antigen", device=None, sampled_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    )
    pdf = render(resources, "pdf", None, "dr-1", keyring)
    assert pdf.content_type == "application/pdf"
    text = words(pdf.body)
    assert "Fiche de résultat" in text and "Test antigénique rapide" in text
    assert "Certificat numérique européen" not in text.replace("Le certificat numérique européen", "")
    assert "n'a pas pu être établi" in text and "dispositif" in text
    for output in ("png", "text"):
        with pytest.raises(FhirError) as refused:
            render(resources, output, None, "dr-1", keyring)
        assert refused.value.status == 422 and refused.value.issues[0].expression == ["Observation.device"]
    parameters = render(resources, "parameters", None, "dr-1", keyring)
    assert b'"name":"pdf"' in parameters.body.replace(b" ", b"") and b"certificate" not in parameters.body


def test_a_serology_measured_in_u_per_ml_gets_its_result_sheet(keyring):
    resources = example_resources(kind="serology", sampled_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    observation = resources["observation"]
    del observation["valueCodeableConcept"]
    observation["valueQuantity"] = {
        "value": 123.4,
        "unit": "U/mL",
        "system": "http://unitsofmeasure.org",
        "code": "U/mL",
    }
    observation["interpretation"] = [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "POS"}]}
    ]
    text = words(render(resources, "pdf", None, "dr-1", keyring).body)
    assert "Test sérologique" in text and "Positif (anticorps anti-SARS-CoV-2 détectés)" in text
    assert "123,4 U/mL" in text
    assert "ne donne pas lieu à un certificat numérique européen" in text


def test_the_generators_serology_results_render(keyring):
    """What the synthetic generator writes (U/mL with POS / NEG), through the stored shapes."""
    for seed in range(40):
        bundle = generate_result_bundle(random.Random(seed), kind="serology", now=dt.datetime.now(dt.UTC))
        by_type = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
        if "valueQuantity" in by_type["Observation"]:
            break
    observation = by_type["Observation"]
    positive = observation["interpretation"][0]["coding"][0]["code"] == "POS"
    resources = example_resources(kind="serology", sampled_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    resources["observation"] = {
        **resources["observation"],
        **{k: observation[k] for k in ("valueQuantity", "interpretation")},
    }
    resources["observation"].pop("valueCodeableConcept", None)
    text = words(render(resources, "pdf", None, "dr-1", keyring).body)
    assert ("Positif (anticorps" if positive else "Négatif (anticorps") in text
    assert "U/mL" in text

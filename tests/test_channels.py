"""The message channels against real local receivers: the SMS gateway of fhir_server.outlets over
HTTP, aiosmtpd SMTP servers over plain TCP, STARTTLS and implicit TLS (with a certificate made
here), and the GSM 03.38 rules a notification must fit in."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import random
import ssl
import stat

import phonenumbers
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fhir_server.embedded import free_port
from fhir_server.outlets import start_sms_gateway, start_smtp
from fhir_server.settings import Settings
from fhir_server.synthetic.generator import make_person
from workers.channels import Permanent, Transient, gsm7
from workers.channels.email import Mailer, message_id, patient_email
from workers.channels.sms import SmsGateway, check_sender, from_settings, longest_link


def synthetic_person():
    """A patient of the project's generator with a phone and an e-mail address."""
    rng = random.Random(2024)
    while True:
        person = make_person(rng, dt.date(2024, 3, 1), no_contact_rate=0)
        if person.phone and person.email:
            return person


PERSON = synthetic_person()
PHONE = phonenumbers.format_number(phonenumbers.parse(PERSON.phone, "FR"), phonenumbers.PhoneNumberFormat.E164)
PATIENT = PERSON.email
LONG_PORTAL = "https://resultats-depistage.portail-patient.sante.gouv.fr/consultation/"
SENDER = "SI-DEP <ne-pas-repondre@sidep.invalid>"
LINK = "https://portail.example/portail/#AbCdEfGhIjKlMnOpQrStUv"


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- GSM 03.38 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("char", list("éèùìòÇÉ"))
def test_french_letters_of_the_basic_set_stay_gsm7(char):
    text = f"Résultat {char}" + "x" * 150
    assert gsm7.encoding(text) == "GSM-7"
    assert gsm7.units(text) == len(text) == 160
    assert gsm7.fits_one_sms(text)


@pytest.mark.parametrize("char", list("âêîôûëïçœ"))
def test_french_letters_outside_the_basic_set_switch_to_ucs2(char):
    assert gsm7.encoding(f"Résultat {char}") == "UCS-2"
    assert gsm7.outside_gsm7(f"a{char}b{char}") == [char]


def test_ucs2_allows_70_units():
    assert gsm7.SINGLE_LIMITS == {"GSM-7": 160, "UCS-2": 70}
    assert gsm7.fits_one_sms("ê" * 70)
    assert not gsm7.fits_one_sms("ê" * 71)
    # a character beyond the BMP is two UTF-16 code units
    assert gsm7.units("ê" + "\N{GRINNING FACE}") == 3


@pytest.mark.parametrize("char", ["€", "[", "]", "{", "}", "\\", "^", "~", "|", "\f"])
def test_extension_characters_count_two_septets(char):
    assert gsm7.encoding(char) == "GSM-7"
    assert gsm7.units(char) == 2
    assert gsm7.fits_one_sms("a" * 158 + char)
    assert not gsm7.fits_one_sms("a" * 159 + char)


def test_default_template_with_a_long_portal_fits_one_sms():
    settings = Settings(portal_url=LONG_PORTAL, sms_gateway_url="http://127.0.0.1:9/sms")
    link = longest_link(settings.portal)
    assert len(link) == len(LONG_PORTAL) + 23
    text = settings.sms_template.format(link=link)
    assert gsm7.encoding(text) == "GSM-7"
    assert gsm7.fits_one_sms(text)
    gsm7.check_template(settings.sms_template, link)
    assert from_settings(settings) is not None


def test_template_without_link_is_refused():
    with pytest.raises(ValueError, match=r"\{link\}"):
        gsm7.check_template("SI-DEP : un document vous attend.", LINK)
    with pytest.raises(ValueError, match="format"):
        gsm7.check_template("{link} {name}", LINK)


def test_template_too_long_says_why():
    template = "SI-DEP : un nouveau résultat vous attend, consultez-le dès que possible sur {link} (fenêtre)"
    with pytest.raises(ValueError) as refused:
        gsm7.check_template(template, LINK)
    message = str(refused.value)
    assert "UCS-2" in message and "70" in message and "'ê'" in message
    assert str(gsm7.units(template.format(link=LINK))) in message


def test_gateway_settings_with_a_template_too_long_for_the_portal_refuse_to_start():
    settings = Settings(portal_url="https://example.org/" + "p" * 90, sms_gateway_url="http://127.0.0.1:9/sms")
    with pytest.raises(ValueError, match="GSM-7.*limit 160"):
        from_settings(settings)
    assert from_settings(Settings()) is None


# -- SMS gateway ----------------------------------------------------------------------------------
@pytest.fixture
def gateway(tmp_path):
    server = start_sms_gateway(tmp_path / "sms")
    yield server
    server.stop()


def test_gateway_receives_text_link_and_key(gateway, tmp_path):
    text = f"SI-DEP : un nouveau document vous attend. Consultez-le sur {LINK}"
    message_id = SmsGateway(gateway.url).send(PHONE, text, "notif-1")
    [received] = gateway.messages()
    assert received["id"] == message_id
    assert (received["to"], received["from"], received["text"], received["key"]) == (PHONE, "SIDEP", text, "notif-1")
    assert LINK in received["text"]
    [file] = (tmp_path / "sms").iterdir()
    assert json.loads(file.read_text())["to"] == PHONE
    assert mode(file) == 0o600
    assert mode(tmp_path / "sms") == 0o700


def test_repeated_key_is_one_message(gateway):
    client = SmsGateway(gateway.url)
    first = client.send(PHONE, "texte", "notif-2")
    again = client.send(PHONE, "texte", "notif-2")
    other = client.send(PHONE, "texte", "notif-3")
    assert first == again != other
    assert [m["key"] for m in gateway.messages()] == ["notif-2", "notif-3"]
    assert gateway.requests == 3


def test_slow_gateway_is_transient_and_the_message_was_received_once(gateway):
    gateway.delay = 3.0
    client = SmsGateway(gateway.url, timeout=0.2)
    with pytest.raises(Transient) as failed:
        client.send(PHONE, "texte", "notif-4")
    assert failed.value.reason == "passerelle SMS : délai dépassé"
    assert [m["key"] for m in gateway.messages()] == ["notif-4"]  # recorded before the answer
    gateway.delay = 0
    message_id = client.send(PHONE, "texte", "notif-4")  # the retry the delivery job makes
    [received] = gateway.messages()
    assert received["id"] == message_id
    assert gateway.requests == 2


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503])
def test_retryable_statuses_are_transient(gateway, status):
    gateway.fail_next(status)
    client = SmsGateway(gateway.url)
    with pytest.raises(Transient) as failed:
        client.send(PHONE, "texte", "notif-5")
    assert failed.value.reason == f"passerelle SMS : HTTP {status}"
    assert gateway.messages() == []
    client.send(PHONE, "texte", "notif-5")
    assert len(gateway.messages()) == 1


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_other_client_errors_are_permanent(gateway, status):
    gateway.fail_next(status, times=2)
    with pytest.raises(Permanent) as failed:
        SmsGateway(gateway.url).send(PHONE, "un texte", "notif-6")
    assert failed.value.reason == f"passerelle SMS : HTTP {status}"
    assert PHONE not in str(failed.value) and "texte" not in str(failed.value)


def test_gateway_refuses_a_request_without_key_or_fields(gateway):
    import requests

    assert requests.post(gateway.url, json={"from": "SIDEP", "to": PHONE, "text": "x"}, timeout=5).status_code == 400
    assert (
        requests.post(gateway.url, json={"to": PHONE}, headers={"Idempotency-Key": "k"}, timeout=5).status_code == 400
    )
    assert gateway.messages() == []


def test_gateway_basic_auth(tmp_path):
    server = start_sms_gateway(credentials=("sidep", "s3cret"))
    try:
        with pytest.raises(Permanent, match="HTTP 401"):
            SmsGateway(server.url, "sidep", "wrong").send(PHONE, "texte", "notif-7")
        with pytest.raises(Permanent, match="HTTP 401"):
            SmsGateway(server.url).send(PHONE, "texte", "notif-7")
        SmsGateway(server.url, "sidep", "s3cret").send(PHONE, "texte", "notif-7")
        assert len(server.messages()) == 1
    finally:
        server.stop()


def test_nothing_listening_is_transient():
    with pytest.raises(Transient, match="injoignable"):
        SmsGateway(f"http://127.0.0.1:{free_port()}/sms").send(PHONE, "texte", "notif-8")


@pytest.mark.parametrize("sender", ["SIDEP", "SI DEP 2024", "A", "Labo75"])
def test_valid_sender_ids(sender):
    check_sender(sender)
    assert SmsGateway("http://127.0.0.1:9/sms", sender=sender).sender == sender


@pytest.mark.parametrize("sender", ["", "123456", "SIDEPSIDEPSI", "SI-DEP", "SIDÉP", "   "])
def test_invalid_sender_ids(sender):
    with pytest.raises(ValueError, match="sender id"):
        SmsGateway("http://127.0.0.1:9/sms", sender=sender)


# -- SMTP -----------------------------------------------------------------------------------------
def self_signed(directory, common_name: str) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and localhost, its own issuer, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{common_name}.crt", directory / f"{common_name}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_file), str(key_file)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("tls"), "relay")


@pytest.fixture
def trusting(certificate) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=certificate[0])


@pytest.fixture
def catchers():
    started = []

    def start(**options):
        catcher = start_smtp(**options)
        started.append(catcher)
        return catcher

    yield start
    for catcher in started:
        catcher.stop()


def a_patient_email(key="notif-1"):
    return patient_email(SENDER, PATIENT, LINK, message_id(key, SENDER))


def test_patient_email_carries_the_link_and_nothing_personal():
    message = a_patient_email()
    assert message["Subject"] == "SI-DEP : un document vous attend / a document is waiting for you"
    assert message["Message-ID"] == "<notif-1@sidep.invalid>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"]
    assert message.get_content_type() == "text/plain"
    body = message.get_content()
    assert body.count(LINK) == 2
    assert body.index("date de naissance") < body.index("date of birth")
    assert "code à usage unique" in body and "one-time code" in body
    for word in (
        *PERSON.given,
        PERSON.family,
        PERSON.usage_family or PERSON.family,
        PATIENT,
        "positif",
        "négatif",
        "positive",
        "negative",
        "covid",
        "résultat",
    ):
        assert word.lower() not in body.lower()


def test_starttls_delivery(catchers, certificate, trusting, tmp_path):
    catcher = catchers(directory=tmp_path / "mail", tls="starttls", certfile=certificate[0], keyfile=certificate[1])
    Mailer(catcher.host, catcher.port, "starttls", ssl_context=trusting).send(a_patient_email())
    [received] = catcher.messages()
    assert received["To"] == PATIENT and received["Message-ID"] == "<notif-1@sidep.invalid>"
    assert LINK in received.get_content()
    assert catcher.deliveries[0].rcpt_tos == [PATIENT]
    [file] = (tmp_path / "mail").iterdir()
    assert file.suffix == ".eml" and mode(file) == 0o600
    assert b"notif-1@sidep.invalid" in file.read_bytes()


def test_starttls_required_by_the_relay_is_transient(catchers, certificate):
    catcher = catchers(tls="starttls", certfile=certificate[0], keyfile=certificate[1])
    with pytest.raises(Transient, match="530"):
        Mailer(catcher.host, catcher.port, "none").send(a_patient_email())
    assert catcher.messages() == []


def test_relay_certificate_is_verified(catchers, certificate):
    catcher = catchers(tls="starttls", certfile=certificate[0], keyfile=certificate[1])
    with pytest.raises(Transient, match="TLS"):
        Mailer(catcher.host, catcher.port, "starttls").send(a_patient_email())  # the system store
    assert catcher.messages() == []


def test_implicit_tls_delivery(catchers, certificate, trusting):
    catcher = catchers(tls="implicit", certfile=certificate[0], keyfile=certificate[1])
    Mailer(catcher.host, catcher.port, "tls", ssl_context=trusting).send(a_patient_email())
    assert [m["Message-ID"] for m in catcher.messages()] == ["<notif-1@sidep.invalid>"]


def test_plain_delivery(catchers):
    catcher = catchers()
    Mailer(catcher.host, catcher.port, "none").send(a_patient_email())
    assert len(catcher.messages()) == 1


@pytest.mark.parametrize("tls, security", [("starttls", "starttls"), ("implicit", "tls")])
def test_auth_over_tls(catchers, certificate, trusting, tls, security):
    catcher = catchers(tls=tls, certfile=certificate[0], keyfile=certificate[1], auth=("relay-user", "relay-pass"))
    relay = (catcher.host, catcher.port, security)
    with pytest.raises(Transient, match="535"):
        Mailer(*relay, user="relay-user", password="wrong", ssl_context=trusting).send(a_patient_email())
    with pytest.raises(Transient, match="530"):
        Mailer(*relay, ssl_context=trusting).send(a_patient_email())
    Mailer(*relay, user="relay-user", password="relay-pass", ssl_context=trusting).send(a_patient_email())
    assert len(catcher.messages()) == 1


def test_auth_is_not_offered_in_clear(catchers):
    catcher = catchers(auth=("relay-user", "relay-pass"))
    with pytest.raises(Transient, match="AUTH"):
        Mailer(catcher.host, catcher.port, "none", user="relay-user", password="relay-pass").send(a_patient_email())
    assert catcher.messages() == []


def test_mutual_tls_with_a_client_certificate(catchers, certificate, trusting, tmp_path):
    client_cert, client_key = self_signed(tmp_path, "laboratoire")
    catcher = catchers(tls="starttls", certfile=certificate[0], keyfile=certificate[1], client_cafile=client_cert)
    with pytest.raises(Transient):
        Mailer(catcher.host, catcher.port, "starttls", ssl_context=trusting).send(a_patient_email())
    mutual = ssl.create_default_context(cafile=certificate[0])
    Mailer(catcher.host, catcher.port, "starttls", cert_file=client_cert, key_file=client_key, ssl_context=mutual).send(
        a_patient_email()
    )
    assert len(catcher.messages()) == 1


def test_message_id_is_stable_for_a_key(catchers):
    assert message_id("notif-1", SENDER) == message_id("notif-1", SENDER) == "<notif-1@sidep.invalid>"
    assert message_id("notif-2", SENDER) != message_id("notif-1", SENDER)
    odd = message_id("event 42:sms", "noreply@example.org")
    assert odd == message_id("event 42:sms", "noreply@example.org") and odd.endswith("@example.org>")
    assert " " not in odd and ":" not in odd
    catcher = catchers()
    mailer = Mailer(catcher.host, catcher.port, "none")
    mailer.send(a_patient_email("notif-9"))
    mailer.send(a_patient_email("notif-9"))  # a resend after a lost answer
    assert len(catcher.messages()) == 2
    assert [m["Message-ID"] for m in catcher.unique()] == ["<notif-9@sidep.invalid>"]


def test_refused_recipient_is_permanent(catchers):
    catcher = catchers()
    catcher.refuse(PATIENT)
    with pytest.raises(Permanent) as failed:
        Mailer(catcher.host, catcher.port, "none").send(a_patient_email())
    assert failed.value.reason == "relais SMTP : destinataire refusé (550)"
    assert PATIENT not in str(failed.value)
    assert catcher.messages() == []


def test_recipient_refused_for_now_is_transient(catchers):
    catcher = catchers()
    catcher.refuse(PATIENT, 450)
    with pytest.raises(Transient, match="450"):
        Mailer(catcher.host, catcher.port, "none").send(a_patient_email())


def test_one_of_two_recipients_refused_is_permanent_and_the_other_got_it(catchers):
    catcher = catchers()
    catcher.refuse(PATIENT)
    message = a_patient_email()
    message.replace_header("To", f"{PATIENT}, autre@example.org")
    with pytest.raises(Permanent, match="1 destinataire"):
        Mailer(catcher.host, catcher.port, "none").send(message)
    assert catcher.deliveries[0].rcpt_tos == ["autre@example.org"]


def test_nothing_listening_on_smtp_is_transient():
    with pytest.raises(Transient, match="injoignable"):
        Mailer("127.0.0.1", free_port(), "none", timeout=5).send(a_patient_email())


def test_mailers_from_settings(certificate):
    assert Mailer.from_settings(Settings()) is None
    assert Mailer.from_mssante(Settings()) is None
    patients = Mailer.from_settings(Settings(smtp_host="relay.example", smtp_port=465, smtp_security="tls"))
    assert (patients.host, patients.port, patients.security) == ("relay.example", 465, "tls")
    mssante = Mailer.from_mssante(
        Settings(
            smtp_host="relay.example",
            smtp_user="patients",
            mssante_smtp_host="mssante.example",
            mssante_smtp_cert_file=certificate[0],
            mssante_smtp_key_file=certificate[1],
        )
    )
    assert (mssante.host, mssante.port, mssante.user) == ("mssante.example", 587, None)
    with pytest.raises(ValueError, match="security"):
        Mailer("relay.example", 25, "ssl")

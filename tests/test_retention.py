"""The retention of results: RESULT_RETENTION_MONTHS after integration (the first version of the
DiagnosticReport) a result goes with its dossier, history, claims, outbox events and person links,
never taking what a younger result still refers to; AuditEvents follow AUDIT_RETENTION_MONTHS.

Results are posted over HTTP to a secured server, then the stored times of the "old" ones are moved
back in the database (current documents and history alike), and the job runs as of now."""

from __future__ import annotations

import dataclasses
import random
from datetime import date, timedelta

import pytest
from dateutil.relativedelta import relativedelta

from fhir_server.search.dates import utc_now
from fhir_server.storage.mongo import HISTORY, OUTBOX
from fhir_server.storage.persons import Persons
from fhir_server.synthetic.generator import make_person

from .test_auth_access import LAB_A, LAB_B, RESULT_TYPES, post_bundle

DOSSIER_TYPES = tuple(t for t in RESULT_TYPES if t != "Patient")


def person_with_ins(seed: int):
    """A synthetic person carrying an INS (so that person records link their Patients)."""
    rng = random.Random(seed)
    while True:
        found = make_person(rng, date(2026, 11, 30))
        if found.ins:
            return dataclasses.replace(found, phone="0612345678", email=None)


@pytest.fixture
def job(secured, monkeypatch):
    """The retention job on the secured server's database, as of `now` (ISO 8601) or now."""
    from workers.jobs import retention

    for name, value in (("MONGODB_URI", secured.settings.mongodb_uri), ("MONGODB_DB", secured.settings.mongodb_db)):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VAR_DIR", secured.settings.var_dir)
    return retention.purge


def iso(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def move_back(db, posted, months: int) -> None:
    """Make a posted result look integrated `months` ago: every stored time of its resources."""
    moment = utc_now() - relativedelta(months=months)
    for rtype in RESULT_TYPES:
        for rid in posted.ids[rtype]:
            db[rtype].update_one({"_id": rid}, {"$set": {"ts": moment}})
            db[HISTORY].update_many({"t": rtype, "rid": rid}, {"$set": {"ts": moment}})


def stored(db, rtype: str, rid: str) -> dict:
    """What the database still holds of one resource: current document, history, conditional key."""
    return {
        "current": db[rtype].count_documents({"_id": rid}),
        "history": db[HISTORY].count_documents({"t": rtype, "rid": rid}),
        "claims": db[rtype].count_documents({"_id": rid, "c": {"$exists": True}}),
    }


def nothing_left(db, posted, types=RESULT_TYPES) -> None:
    for rtype in types:
        for rid in posted.ids[rtype]:
            assert stored(db, rtype, rid) == {"current": 0, "history": 0, "claims": 0}, (rtype, rid)
    assert db[OUTBOX].count_documents({"key": f"DiagnosticReport/{posted['DiagnosticReport']}"}) == 0


def all_kept(db, posted, types=RESULT_TYPES) -> None:
    for rtype in types:
        for rid in posted.ids[rtype]:
            kept = stored(db, rtype, rid)
            assert kept["current"] == 1 and kept["history"] >= 1, (rtype, rid)


def test_an_old_result_goes_with_its_dossier_and_a_younger_one_of_the_same_patient_stays(secured, job):
    db = secured.store.db
    a, b = secured.client_session(LAB_A), secured.client_session(LAB_B)
    x, y, z = person_with_ins(1), person_with_ins(2), person_with_ins(3)
    old_x = post_bundle(a, LAB_A, 11, x)
    old_y = post_bundle(b, LAB_B, 12, y)  # laboratory B's Patient of y: its only result is old
    old_z = post_bundle(b, LAB_B, 13, z)  # z has no other result anywhere
    for posted in (old_x, old_y, old_z):
        move_back(db, posted, 4)
    young_x = post_bundle(a, LAB_A, 21, x)  # the same Patient as old_x (same INS, same laboratory)
    young_y = post_bundle(a, LAB_A, 22, y)  # y's Patient at laboratory A
    assert young_x["Patient"] == old_x["Patient"]
    persons = Persons(db)
    person_y, person_z = (
        persons.of_patient(f"Patient/{old_y['Patient']}"),
        persons.of_patient(f"Patient/{old_z['Patient']}"),
    )
    assert len(person_y.links) == 2 and len(person_z.links) == 1
    assert stored(db, "ServiceRequest", old_x["ServiceRequest"])["claims"] == 1  # its conditional key, before
    assert db[OUTBOX].count_documents({"key": f"DiagnosticReport/{old_x['DiagnosticReport']}"}) == 1
    organizations = db["Organization"].count_documents({})

    removed = job()

    assert removed["results"] == 3 and removed["DiagnosticReport"] == 3 and removed["Patient"] == 2
    assert removed["outbox events"] == 3 and removed["person links"] == 2 and removed["person records"] == 1
    nothing_left(db, old_x, DOSSIER_TYPES)
    nothing_left(db, old_y)
    nothing_left(db, old_z)
    all_kept(db, young_x)
    all_kept(db, young_y)
    # the Patient a younger result refers to stays, its history with it (old versions included)
    assert stored(db, "Patient", old_x["Patient"])["history"] >= 1
    assert db[OUTBOX].count_documents({"key": f"DiagnosticReport/{young_x['DiagnosticReport']}"}) == 1
    # what is gone is not known (404, not 410: no deletion marker left)
    assert a.get(f"DiagnosticReport/{old_x['DiagnosticReport']}").status_code == 404
    assert b.get(f"Patient/{old_y['Patient']}").status_code == 404
    assert a.get(f"DiagnosticReport/{young_x['DiagnosticReport']}").status_code == 200
    assert a.get(f"DiagnosticReport/{old_x['DiagnosticReport']}/_history/1").status_code == 404
    # person records: y keeps its laboratory-A link only, z (no link left) is gone
    assert persons.get(person_y.id).matched() == [f"Patient/{young_y['Patient']}"]
    assert persons.get(person_z.id) is None
    assert persons.of_patient(f"Patient/{young_x['Patient']}") is not None
    assert db["Organization"].count_documents({}) == organizations  # not patient data

    again = job()
    assert all(count == 0 for count in again.values()), again
    all_kept(db, young_x)


def test_a_result_stays_until_the_limit_after_its_integration_whatever_came_later(secured, job):
    db = secured.store.db
    a = secured.client_session(LAB_A)
    posted = post_bundle(a, LAB_A, 31, person_with_ins(4))
    report = posted["DiagnosticReport"]
    integrated = db[HISTORY].find_one({"_id": f"DiagnosticReport/{report}/1"})["ts"]
    limit = integrated + relativedelta(months=3)
    # a correction later (a new version) does not restart the clock
    resource = a.get(f"DiagnosticReport/{report}").json()
    resource["conclusion"] = "Résultat corrigé"
    assert a.put(f"DiagnosticReport/{report}", json=resource).status_code == 200
    db[HISTORY].update_one({"_id": f"DiagnosticReport/{report}/2"}, {"$set": {"ts": limit - timedelta(minutes=5)}})

    assert job(iso(limit - timedelta(minutes=1)))["results"] == 0
    all_kept(db, posted)
    assert job(iso(limit + timedelta(minutes=1)))["results"] == 1
    nothing_left(db, posted)


def audit_events(db) -> list[str]:
    return [doc["_id"] for doc in db["AuditEvent"].find({}, {"_id": 1})]


def test_audit_events_are_kept_by_their_own_setting_past_the_results_they_name(secured, job):
    db = secured.store.db
    a = secured.client_session(LAB_A)
    posted = post_bundle(a, LAB_A, 41, person_with_ins(5))
    move_back(db, posted, 4)
    for rtype in RESULT_TYPES:  # reads of patient data are audited
        assert a.get(f"{rtype}/{posted[rtype]}").status_code == 200
    events = audit_events(db)
    assert len(events) >= 2
    ancient, recent = events[0], events[1:]
    db["AuditEvent"].update_one({"_id": ancient}, {"$set": {"ts": utc_now() - relativedelta(months=13)}})
    db["AuditEvent"].update_many({"_id": {"$in": recent}}, {"$set": {"ts": utc_now() - relativedelta(months=4)}})

    removed = job()

    assert removed["results"] == 1 and removed["AuditEvent"] == 1
    nothing_left(db, posted)
    assert set(audit_events(db)) >= set(recent) and ancient not in audit_events(db)


def test_audit_retention_months_is_a_setting(secured, job, monkeypatch):
    db = secured.store.db
    a = secured.client_session(LAB_A)
    posted = post_bundle(a, LAB_A, 51, person_with_ins(6))
    assert a.get(f"Patient/{posted['Patient']}").status_code == 200
    events = audit_events(db)
    assert events
    db["AuditEvent"].update_many({"_id": {"$in": events}}, {"$set": {"ts": utc_now() - relativedelta(months=2)}})
    monkeypatch.setenv("AUDIT_RETENTION_MONTHS", "1")

    removed = job()

    assert removed["AuditEvent"] == len(events) and removed["results"] == 0
    assert not set(events) & set(audit_events(db))
    all_kept(db, posted)


def test_records_with_one_expiry_are_also_removed_by_the_database_itself(secured):
    """Where a single date says when a record goes, a TTL index says it too (the job stays the
    rule): the embedded server's TTL pass, run at once here, removes what is past its date."""
    db = secured.store.db
    now = utc_now()
    collections = ("_link_otps", "_portal_sessions", "_deep_links", "_declaration_codes")
    for name in collections:
        db[name].insert_many(
            [
                {
                    "hash": f"{name}-gone",
                    "link": f"{name}-1",
                    "code": f"{name}-1",
                    "report": f"{name}-1",
                    "expires": now - timedelta(seconds=1),
                },
                {
                    "hash": f"{name}-kept",
                    "link": f"{name}-2",
                    "code": f"{name}-2",
                    "report": f"{name}-2",
                    "expires": now + timedelta(days=1),
                },
            ]
        )
    db.client.admin.command("secantusAdmin.pruneTtl")
    for name in collections:
        assert [doc["hash"] for doc in db[name].find()] == [f"{name}-kept"], name
    assert (
        db["_deliveries"].index_information()["expires_1"].get("expireAfterSeconds") is None
    )  # its Communications go first


def test_subscription_notifications_go_with_the_results_and_subscribers_with_their_subscription(secured, job):
    from fhir_server.storage.subscription_events import SubscriptionEvents

    from .test_subscriptions_guard import subscription

    operator = secured.client_session(None, role="operator")
    created = operator.post("Subscription", json=subscription())
    assert created.status_code == 201, created.text
    kept_id = created.json()["id"]
    events = SubscriptionEvents(secured.store.db)
    events.keep_subscriber(kept_id, None)
    events.keep_subscriber("deleted-one", None)
    now = utc_now()
    events.events.insert_many(
        [
            {"_id": "old", "sub": kept_id, "state": "sent", "at": now - relativedelta(months=3, days=1)},
            {
                "_id": "young",
                "sub": kept_id,
                "state": "pending",
                "at": now - relativedelta(months=3) + timedelta(days=1),
            },
        ]
    )
    removed = job()
    assert (removed["subscription notifications"], removed["subscribers"]) == (1, 1)
    assert [doc["_id"] for doc in events.events.find()] == ["young"]
    assert events.subscriber_ids() == [kept_id]

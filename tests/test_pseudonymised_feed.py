"""The change log and public health's pseudonymised feed.

Results are posted over HTTP to a secured server; the sequencer (what the dispatcher runs each
round) and the feed job (`workers.jobs.feed.publish`, what the dispatcher enqueues) are called
in-process on the server's database, then the feed is read over HTTP as public health would."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
from bson import ObjectId

from fhir_server.search.dates import utc_now
from fhir_server.storage.changes import Changes
from fhir_server.storage.leases import Leases
from fhir_server.storage.mongo import CHANGES
from fhir_server.storage.pseudonymised import PseudonymisedRecords
from fhir_server.synthetic.generator import resend_bundle
from fhir_server.synthetic.pseudonymised import records as synthetic_records

from .test_auth_access import LAB_A, LAB_B, post_bundle
from .test_retention import person_with_ins

FEED = "$pseudonymised-feed"


@pytest.fixture
def jobs(secured, monkeypatch):
    """The worker side on the secured server's database: the environment a job reads."""
    for name, value in (("MONGODB_URI", secured.settings.mongodb_uri), ("MONGODB_DB", secured.settings.mongodb_db)):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VAR_DIR", secured.settings.var_dir)
    from workers.jobs import feed

    return feed


def publish(secured, feed) -> int:
    """What a dispatcher round and the feed job do."""
    Changes(secured.store.db).sequence()
    return feed.publish()


def read_feed(session, **params) -> dict:
    response = session.get(FEED, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    return response.json()


def test_every_unit_of_work_is_positioned_once_in_order(secured):
    lab = secured.client_session(LAB_A)
    changes = Changes(secured.store.db)
    first = post_bundle(lab, LAB_A, 1)
    second = post_bundle(lab, LAB_A, 2)
    assert changes.after(0, 10) == []  # committed, not positioned yet: no consumer sees them
    assert changes.sequence() == 2
    entries = changes.after(0, 10)
    assert [e["seq"] for e in entries] == [1, 2]
    written = [{(t, rid) for t, rid, _v, _d in e["w"]} for e in entries]
    assert ("DiagnosticReport", first["DiagnosticReport"]) in written[0]
    assert ("DiagnosticReport", second["DiagnosticReport"]) in written[1]
    assert changes.sequence() == 0 and changes.head() == 2


def test_an_entry_committed_late_comes_after_what_consumers_read(secured):
    """A transaction that began first but commits after the sequencer's pass: its entry's id is
    older, its position newer, so a consumer already past the others still reads it."""
    lab = secured.client_session(LAB_A)
    changes = Changes(secured.store.db)
    slow_id = ObjectId()  # made before the others: an older id
    post_bundle(lab, LAB_A, 3)
    changes.sequence()
    changes.advance("reader", changes.head())
    secured.store.db[CHANGES].insert_one({"_id": slow_id, **Changes.entry([("Patient", "late", 1, False)], utc_now())})
    changes.sequence()
    after = changes.after(changes.cursor("reader"), 10)
    assert [e["_id"] for e in after] == [slow_id]


def test_concurrent_writers_get_positions_without_gap_or_repeat(secured):
    lab = secured.client_session(LAB_A)
    changes = Changes(secured.store.db)
    stop = threading.Event()

    def sequencer():  # as the dispatcher does: it waits a little when nothing was positioned
        while not stop.is_set():
            if changes.sequence() == 0:
                stop.wait(0.005)

    def writer(seed):
        for offset in range(4):
            post_bundle(lab, LAB_A, 100 + seed * 10 + offset)

    running = threading.Thread(target=sequencer)
    running.start()
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    running.join()
    changes.sequence()
    positions = [e["seq"] for e in changes.after(0, 1000)]
    assert positions == list(range(1, 17))
    assert secured.store.db[CHANGES].count_documents({"pending": True}) == 0


def test_a_consumer_reads_under_its_lease_and_again_after_a_failure(secured, jobs):
    from workers.consumers import consume

    lab = secured.client_session(LAB_A)
    for seed in (4, 5):
        post_bundle(lab, LAB_A, seed)
    changes = Changes(secured.store.db)
    changes.sequence()
    seen: list[int] = []

    def failing(entries):
        seen.extend(e["seq"] for e in entries)
        raise RuntimeError("the worker died")

    with pytest.raises(RuntimeError):
        consume("test-consumer", failing)
    assert changes.cursor("test-consumer") == 0  # the batch was not finished: read again
    Leases(secured.store.db).take("consumer:test-consumer", "someone-else", 30)
    assert consume("test-consumer", lambda entries: seen.extend(e["seq"] for e in entries)) == 0
    Leases(secured.store.db).release("consumer:test-consumer", "someone-else")
    assert consume("test-consumer", lambda entries: seen.extend(e["seq"] for e in entries)) == 2
    assert seen == [1, 2, 1, 2] and changes.cursor("test-consumer") == 2


def test_public_health_reads_each_result_once_in_commit_order(secured, jobs):
    lab_a, lab_b = secured.client_session(LAB_A), secured.client_session(LAB_B)
    person = person_with_ins(11)
    posted = [
        post_bundle(lab_a, LAB_A, 21, person=person),
        post_bundle(lab_b, LAB_B, 22),
        post_bundle(lab_a, LAB_A, 23),
    ]
    publish(secured, jobs)
    health = secured.client_session(None, scope="system/*.read", role="public-health")
    whole = read_feed(health)
    assert [e["position"] for e in whole["entries"]] == [1, 2, 3]
    assert whole["next"] == 3 and whole["more"] is False
    assert len({e["result_key"] for e in whole["entries"]}) == 3
    first = whole["entries"][0]
    assert first["state"] == "current" and first["pseudonym"].startswith("v1.i.")  # the INS's
    assert set(first) >= {"age_class", "sex", "departement", "test_type", "result", "sampling_date", "finess"}
    text = str(whole)
    for bundle in (p.bundle for p in posted):
        patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        assert patient["birthDate"] not in text
        assert patient["name"][0]["family"] not in text
    assert all(p["DiagnosticReport"] not in text for p in posted)  # the reports' ids stay inside

    walked, after = [], 0
    while True:
        page = read_feed(health, after=after, _count=2)
        walked += [e["position"] for e in page["entries"]]
        after = page["next"]
        if not page["more"]:
            break
    assert walked == [1, 2, 3]
    assert read_feed(health, after=3)["entries"] == []


def test_a_changed_result_comes_again_under_its_key_and_a_deleted_one_is_withdrawn(secured, jobs):
    lab = secured.client_session(LAB_A)
    posted = post_bundle(lab, LAB_A, 31)
    publish(secured, jobs)
    health = secured.client_session(None, scope="system/*.read", role="public-health")
    key = read_feed(health)["entries"][0]["result_key"]

    report_id = posted["DiagnosticReport"]
    report = lab.get(f"DiagnosticReport/{report_id}").json()
    assert lab.put(f"DiagnosticReport/{report_id}", json={**report, "conclusion": "Vu"}).status_code == 200
    publish(secured, jobs)  # nothing a record shows has changed: nothing appended
    corrected = resend_bundle(random.Random(1), posted.bundle, change="result")
    assert lab.post("", json=corrected).status_code == 200
    publish(secured, jobs)
    assert lab.delete(f"DiagnosticReport/{report_id}").status_code in (200, 204)
    publish(secured, jobs)
    publish(secured, jobs)  # nothing new: nothing appended twice

    entries = read_feed(health, after=1)["entries"]
    assert [(e["position"], e["result_key"], e["state"]) for e in entries] == [
        (2, key, "current"),
        (3, key, "withdrawn"),
    ]
    assert "pseudonym" not in entries[1]
    assert read_feed(health)["entries"][0]["result"] != read_feed(health)["entries"][1]["result"]  # flipped
    current = list(PseudonymisedRecords(secured.store.db).current())
    assert [(r["_id"], r["state"]) for r in current] == [(key, "withdrawn")]


def test_a_report_that_is_not_final_is_not_a_result(secured, jobs):
    lab = secured.client_session(LAB_A)
    posted = post_bundle(lab, LAB_A, 41)
    publish(secured, jobs)
    report_id = posted["DiagnosticReport"]
    report = lab.get(f"DiagnosticReport/{report_id}").json()
    report["status"] = "preliminary"
    lab.put(f"DiagnosticReport/{report_id}", json=report)
    publish(secured, jobs)
    post_bundle(lab, LAB_A, 42, kind=None)
    lab.put(f"DiagnosticReport/{report_id}", json={**report, "status": "registered"})
    health = secured.client_session(None, scope="system/*.read", role="public-health")
    entries = read_feed(health)["entries"]
    # published, then no longer final; the other result is published; nothing more of the first
    assert [e["state"] for e in entries] == ["current", "withdrawn"]
    publish(secured, jobs)
    assert [e["state"] for e in read_feed(health)["entries"]] == ["current", "withdrawn", "current"]


def test_the_feed_is_for_public_health_and_operators_only(secured, jobs):
    post_bundle(secured.client_session(LAB_A), LAB_A, 51)
    publish(secured, jobs)
    lab = secured.client_session(LAB_A)
    refused = lab.get(FEED)
    assert refused.status_code == 403
    assert refused.json()["resourceType"] == "OperationOutcome"
    operator = secured.client_session(None, scope="system/*.read system/*.write", role="operator")
    assert len(read_feed(operator)["entries"]) == 1
    narrow = secured.client_session(None, scope="system/Patient.read", role="public-health")
    assert narrow.get(FEED).status_code == 403


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"after": "-1"}, "after"),
        ({"after": "x"}, "after"),
        ({"_count": "0"}, "_count"),
        ({"_count": "10001"}, "_count"),
    ],
)
def test_bad_feed_parameters_are_400_at_the_parameter(secured, params, where):
    health = secured.client_session(None, scope="system/*.read", role="public-health")
    response = health.get(FEED, params=params)
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == [where]


def test_the_page_size_limit_is_a_setting(secured_factory):
    server = secured_factory(feed_max_page_size=5)
    health = server.client_session(None, scope="system/*.read", role="public-health")
    assert health.get(FEED, params={"_count": "6"}).status_code == 400
    assert health.get(FEED, params={"_count": "5"}).status_code == 200


def test_each_read_of_the_feed_is_audited(secured, jobs):
    post_bundle(secured.client_session(LAB_A), LAB_A, 61)
    publish(secured, jobs)
    health = secured.client_session(None, scope="system/*.read", role="public-health")
    read_feed(health, after=0)
    events = [
        e
        for e in secured.audit_events()
        if any("pseudonymised-feed" in (x.get("description") or "") for x in e.get("entity", []))
    ]
    assert len(events) == 1
    assert events[0]["agent"][0]["who"]["identifier"]["value"] == health.client_id


def _aged_records(secured, months: tuple[int, ...]) -> list[str]:
    records = PseudonymisedRecords(secured.store.db)
    items = list(synthetic_records(len(months), seed=3))
    for item, age in zip(items, months, strict=True):
        records.append([item], at=utc_now() - timedelta(days=31 * age))
    return [item["result"] for item in items]


def kept(secured) -> list[str]:
    return [r["_id"] for r in PseudonymisedRecords(secured.store.db).current()]


def test_pseudonymised_records_outlive_results_until_their_own_limit(secured, jobs):
    from workers.jobs import retention

    old, young = _aged_records(secured, (25, 23))
    removed = retention.purge()
    assert removed["pseudonymised records"] == 2  # the old one's feed entry and current record
    assert kept(secured) == [young]


def test_the_retention_of_pseudonymised_records_is_a_setting(secured, jobs, monkeypatch):
    from workers.jobs import retention

    monkeypatch.setenv("PSEUDONYMISED_RETENTION_MONTHS", "12")
    _older, _old, young = _aged_records(secured, (25, 13, 11))
    retention.purge()
    assert kept(secured) == [young]

"""The outbox's state machine on a real database, and the dispatcher against a real Redis."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

from rq.job import Job

from fhir_server.storage import Store
from fhir_server.storage.mongo import client_for
from fhir_server.storage.outbox import Outbox
from workers.dispatcher import Dispatcher


def outbox_with(settings, count: int, kind: str = "notify-result") -> Outbox:
    store = Store(settings.mongodb_uri, settings.mongodb_db, ["DiagnosticReport"], settings.base_url, False)
    for n in range(count):
        store.run(lambda uow, n=n: uow.emit(kind, {"report": f"r{n}"}, key=f"DiagnosticReport/r{n}"))
    return Outbox(client_for(settings.mongodb_uri)[settings.mongodb_db])


def test_concurrent_claims_take_each_event_once(settings):
    outbox = outbox_with(settings, 60)
    taken: dict[str, list] = {}
    barrier = threading.Barrier(4)

    def dispatcher(name):
        barrier.wait()
        mine = taken.setdefault(name, [])
        while batch := outbox.claim(name, 7):
            mine.extend(event["_id"] for event in batch)

    threads = [threading.Thread(target=dispatcher, args=(f"d{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [event_id for ids in taken.values() for event_id in ids]
    assert len(everything) == 60 and len(set(everything)) == 60
    assert outbox.counts()["claimed"] == 60


def test_claims_come_oldest_first_and_a_dead_dispatchers_claims_come_back(settings):
    outbox = outbox_with(settings, 5)
    first = outbox.claim("a", 3)
    assert [e["payload"]["report"] for e in first] == ["r0", "r1", "r2"]
    assert outbox.take_back_stale_claims(timedelta(seconds=60)) == 0  # still fresh
    assert outbox.take_back_stale_claims(timedelta(seconds=-1)) == 3  # as if a minute had passed
    assert [e["payload"]["report"] for e in outbox.claim("b", 10)] == ["r0", "r1", "r2", "r3", "r4"]


def test_a_failed_event_goes_back_to_new_once_and_only_if_failed(settings):
    outbox = outbox_with(settings, 1)
    [event] = outbox.claim("a", 1)
    assert not outbox.retry(str(event["_id"]))  # not failed
    outbox.fail(event["_id"], "sms : passerelle SMS : HTTP 503")
    assert outbox.retry(str(event["_id"]))
    assert not outbox.retry(str(event["_id"]))
    assert not outbox.retry("not-an-id")
    assert outbox.get(event["_id"])["state"] == "new"


def test_the_dispatcher_enqueues_one_job_per_event_named_by_its_id(settings, redis_url):
    config = settings.but(redis_url=redis_url, queue_name=f"q-{uuid.uuid4().hex[:8]}")
    outbox = outbox_with(config, 3)
    store = Store(config.mongodb_uri, config.mongodb_db, ["DiagnosticReport"], config.base_url, False)
    store.run(lambda uow: uow.emit("identity-conflict", {"person": "p"}))  # nothing consumes these yet
    dispatcher = Dispatcher(config, "test")
    assert dispatcher.dispatch() == 3
    assert dispatcher.dispatch() == 0
    counts = outbox.counts()
    assert counts["dispatched"] == 3 and counts["done"] == 1 and counts["new"] == 0
    queued = dispatcher.queue.get_job_ids()
    events = [str(e["_id"]) for e in outbox.events.find({"kind": "notify-result"}).sort("ts", 1)]
    assert queued == events
    job = Job.fetch(events[0], connection=dispatcher.queue.connection)
    assert job.func_name == "workers.jobs.notify.notify_result" and job.args == (events[0],)
    assert job.kwargs == {"payload": {"report": "r0"}}  # the job need not read its event
    assert job.retries_left == config.notify_retries


def test_an_unreachable_redis_leaves_the_events_new(settings):
    config = settings.but(redis_url="redis://127.0.0.1:1/0", queue_name="q")
    outbox = outbox_with(config, 2)
    dispatcher = Dispatcher(config, "test")
    try:
        dispatcher.dispatch()
    except Exception as exc:  # noqa: BLE001 - the run loop catches RedisError and waits
        assert type(exc).__module__.startswith("redis")
    else:
        raise AssertionError("the dispatch should have failed")
    assert outbox.counts()["new"] == 2 and outbox.counts()["claimed"] == 0


def test_an_event_whose_job_vanished_is_enqueued_again(settings, redis_url):
    config = settings.but(redis_url=redis_url, queue_name=f"q-{uuid.uuid4().hex[:8]}", dispatch_redispatch_seconds=-1)
    outbox = outbox_with(config, 1)
    dispatcher = Dispatcher(config, "test")
    assert dispatcher.dispatch() == 1
    [event_id] = dispatcher.queue.get_job_ids()
    dispatcher.queue.connection.delete(f"rq:job:{event_id}")  # Redis lost it (a flush, a failover)
    dispatcher.queue.empty()
    dispatcher.redispatch_vanished()
    assert dispatcher.queue.get_job_ids() == [event_id]
    assert Job.fetch(event_id, connection=dispatcher.queue.connection).kwargs == {"payload": {"report": "r0"}}
    assert outbox.get(event_id)["state"] == "dispatched"


def written(settings, count: int) -> None:
    """`count` units of work that write a resource (each adds a change-log entry)."""
    store = Store(settings.mongodb_uri, settings.mongodb_db, ["DiagnosticReport"], settings.base_url, False)
    for _ in range(count):
        report = {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"}}
        store.run(lambda uow, report=report: uow.put("DiagnosticReport", uuid.uuid4().hex, report))


def test_the_sequencer_lease_is_held_by_one_dispatcher_and_renewed_at_half_its_time(settings, redis_url):
    config = settings.but(redis_url=redis_url, queue_name=f"q-{uuid.uuid4().hex[:8]}", lease_seconds=1)
    written(config, 2)
    first, second = Dispatcher(config, "first"), Dispatcher(config, "second")
    leases = client_for(config.mongodb_uri)[config.mongodb_db]["_leases"]
    assert first.sequence() == 2
    until = leases.find_one({"_id": "sequencer"})["until"]
    written(config, 1)
    assert second.sequence() == 0  # the first holds it
    assert first.sequence() == 1
    assert leases.find_one({"_id": "sequencer"})["until"] == until  # held: not written again
    time.sleep(0.6)  # past half the lease
    first.sequence()
    assert leases.find_one({"_id": "sequencer"})["until"] > until
    first.leases.release("sequencer", "first")
    first.sequencer_renewal = 0.0
    written(config, 1)
    assert second.sequence() == 1
    assert first.sequence() == 0 and not first.holds_sequencer()

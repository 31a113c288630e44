"""What the Subscription jobs share (workers/jobs/subscription_handshake.py, subscription_match.py,
subscription_delivery.py): the statuses the server sets, the delivery lanes and their jobs, the
notification records.

A Subscription's notifications are spread over SUBSCRIPTION_LANES lanes (by patient); each lane
is delivered by one job at a time (`lane_job_id`, under the lease `lane_lease`), in change-log
order. `wake_lanes` enqueues a lane's job unless it already waits; the dispatcher's maintenance
wakes the lanes whose next notification is due and that no job holds (`ready_lanes`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from fhir_server.storage import Store
from fhir_server.storage.leases import Leases
from fhir_server.storage.subscription_events import SubscriptionEvents
from fhir_server.subscriptions import REQUESTED
from workers.context import WorkerContext
from workers.queue import changes_queue_name, queue

log = logging.getLogger("workers.subscriptions")

ACTIVE, ERROR, OFF = "active", "error", "off"
DELIVER_JOB = "workers.jobs.subscription_delivery.deliver"
DELIVERY_JOB_SECONDS = 20.0  # a lane's job hands over after this (the dispatcher wakes it again)
WAITING = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)


# -- lanes -------------------------------------------------------------------------------------
def lane_job_id(sid: str, lane: int) -> str:
    return f"subscription-{sid}-{lane}"


def lane_lease(sid: str, lane: int) -> str:
    return f"subscription:{sid}:{lane}"


def wake_lanes(ctx: WorkerContext, lanes: list[tuple[str, int]]) -> int:
    settings = ctx.settings
    return enqueue_lanes(queue(settings.redis_url, changes_queue_name(settings.queue_name)), lanes)


def enqueue_lanes(rq_queue, lanes: list[tuple[str, int]]) -> int:
    """Enqueue the delivery job of each lane unless it is already waiting in the queue (a running
    one looks again before it ends). Returns how many were enqueued."""
    enqueued = 0
    for sid, lane in lanes:
        job = lane_job_id(sid, lane)
        try:
            if Job.fetch(job, connection=rq_queue.connection).get_status(refresh=False) in WAITING:
                continue
        except NoSuchJobError:
            pass
        rq_queue.enqueue(
            DELIVER_JOB,
            sid,
            lane,
            job_id=job,
            job_timeout=int(DELIVERY_JOB_SECONDS * 3),
            result_ttl=60,
            failure_ttl=3600,
        )
        enqueued += 1
    return enqueued


def ready_lanes(db, now: datetime | None = None) -> list[tuple[str, int]]:
    """Lanes with a due notification and no live lease (none delivering them: a worker died, a
    backoff is over): what the dispatcher's maintenance wakes."""
    leases = Leases(db)
    return [
        (sid, lane)
        for sid, lane in SubscriptionEvents(db).ready_lanes(now)
        if leases.holder(lane_lease(sid, lane)) is None
    ]


# -- the Subscription's status -----------------------------------------------------------------
def set_status(store: Store, sid: str, status: str, error: str | None = None, expect=None) -> bool:
    """A server write of the Subscription's status (a new version); False when it is gone or its
    status is not one of `expect`."""

    def write(uow) -> bool:
        record = uow.current("Subscription", sid)
        if record is None or record.deleted or not record.resource:
            return False
        if expect is not None and record.resource.get("status") not in expect:
            return False
        resource = {key: value for key, value in record.resource.items() if key != "error"}
        resource["status"] = status
        if error:
            resource["error"] = error
        uow.put("Subscription", sid, resource)
        return True

    return store.run(write)


def fail(ctx: WorkerContext, sid: str, reason: str) -> None:
    set_status(ctx.store, sid, ERROR, reason, expect={ACTIVE, REQUESTED})
    ctx.subscription_events.hold(sid)
    log.warning("subscription %s set to error after repeated failures", sid)


def turn_off(ctx: WorkerContext, sid: str) -> None:
    set_status(ctx.store, sid, OFF, expect={ACTIVE, REQUESTED, ERROR})
    ctx.subscription_events.drop(sid)


def ended(resource: dict) -> bool:
    end = resource.get("end")
    if not isinstance(end, str):
        return False
    try:
        moment = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment <= datetime.now(UTC)


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)

"""The outbox dispatcher: turns committed outbox events into RQ jobs.

    python -m workers.dispatcher        # MONGODB_URI, MONGODB_DB, REDIS_URL from the environment

Each round claims the oldest `new` events (atomically: several dispatchers may run, none takes
another's), enqueues one job per event with the event id as job id, and marks them `dispatched`.
When Redis is unreachable the claims are released and the dispatcher waits: events stay in MongoDB,
ingestion goes on, and the backlog drains when Redis is back.

It is also the queue's scheduler (RQ's, under its lock: one at a time, another dispatcher takes
over when the holder dies): retries waiting out their backoff are put back in the queue when due,
so that workers need no scheduler of their own and the loss of a worker delays no retry.

Between rounds it keeps the pipeline whole: claims left by a dispatcher that died go back to
`new`; jobs whose worker died (no heartbeat) are retried by RQ's own registry clean-up; an event
dispatched long ago whose job vanished from Redis is enqueued again (jobs are idempotent); and,
every RETENTION_SWEEP_SECONDS, the retention purge job is enqueued; Subscription delivery lanes
whose next notification is due and that no job holds are enqueued again (workers/subscriptions.py).

It also feeds the change log's consumers (workers/consumers.py): each round, the dispatcher that
holds the sequencer lease positions the newly committed change-log entries, and the job of each
consumer whose cursor is behind is enqueued (on the queue workers take first,
workers/queue.py changes_queue_name), unless it is already queued or running.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

from redis.exceptions import RedisError
from rq import Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.scheduler import RQScheduler

from fhir_server.settings import Settings
from fhir_server.storage.changes import Changes
from fhir_server.storage.leases import Leases
from fhir_server.storage.mongo import client_for
from fhir_server.storage.outbox import Outbox

from .consumers import CONSUMER_JOB_SECONDS, CONSUMERS
from .consumers import job_id as consumer_job_id
from .queue import changes_queue_name, queue

log = logging.getLogger("workers.dispatcher")

# the job each kind of event runs (given the event's id and payload: it need not read the event);
# kinds nothing consumes yet are done as soon as taken
JOBS = {
    "notify-result": "workers.jobs.notify.notify_result",
    "subscription-requested": "workers.jobs.subscription_handshake.handshake",
}
RETENTION_JOB = "workers.jobs.retention.purge"
SEQUENCER = "sequencer"
WAITING = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED)


class Dispatcher:
    def __init__(self, settings: Settings, name: str | None = None):
        if not settings.mongodb_uri or not settings.redis_url:
            raise RuntimeError("the dispatcher needs MONGODB_URI and REDIS_URL")
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        db = self.db = client_for(settings.mongodb_uri)[settings.mongodb_db]
        self.outbox = Outbox(db)
        self.changes = Changes(db)
        self.leases = Leases(db)
        self.queue = queue(settings.redis_url, settings.queue_name)
        self.changes_queue = queue(settings.redis_url, changes_queue_name(settings.queue_name))
        self.scheduler = RQScheduler([self.queue], connection=self.queue.connection)
        self.last_maintenance = 0.0
        self.consumers_busy = False  # a consumer was behind and its job running at the last look
        self.last_retention = 0.0
        self.sequencer_renewal = 0.0  # when the sequencer lease this dispatcher holds is renewed

    def retry(self, kind: str = "notify-result") -> Retry:
        settings = self.settings
        if kind == "subscription-requested":  # the last try sets the Subscription's `error`
            tries = max(settings.subscription_max_failures - 1, 1)
            return Retry(max=tries, interval=list(settings.subscription_retry_intervals))
        return Retry(max=settings.notify_retries, interval=list(settings.notify_retry_intervals))

    def dispatch(self) -> int:
        """One round: the events it enqueued (0 when there was nothing to take)."""
        events = self.outbox.claim(self.name, self.settings.dispatch_batch)
        if not events:
            return 0
        consumed = [event for event in events if event["kind"] in JOBS]
        self.outbox.finish_without_job([event for event in events if event["kind"] not in JOBS], self.name)
        if not consumed:
            return 0
        try:
            self.enqueue(consumed)
        except RedisError:
            self.outbox.release(consumed, self.name)
            raise
        self.outbox.dispatched(consumed, self.name)
        return len(consumed)

    def enqueue(self, events: list[dict]) -> None:
        jobs = [
            self.queue.prepare_data(
                JOBS[event["kind"]],
                args=(str(event["_id"]),),
                kwargs={"payload": event.get("payload") or {}},
                job_id=str(event["_id"]),
                timeout=self.settings.notify_job_timeout,
                retry=self.retry(event["kind"]),
                description=f"{event['kind']} {event['_id']}",
            )
            for event in events
        ]
        with self.queue.connection.pipeline() as pipeline:
            self.queue.enqueue_many(jobs, pipeline=pipeline)
            pipeline.execute()

    def sequence(self) -> int:
        """Position the change log's new entries if this dispatcher holds the sequencer lease,
        then wake the consumers that are behind. Returns how many entries were positioned."""
        positioned = 0
        if self.holds_sequencer():
            positioned = self.changes.sequence(self.settings.change_log_batch)
        if positioned or self.consumers_busy:
            self.wake_consumers()
        return positioned

    def holds_sequencer(self) -> bool:
        """Take the sequencer lease, or renew it once half of it has run (not at every round:
        a held lease stays held until its end, and each renewal is a write)."""
        if time.monotonic() < self.sequencer_renewal:
            return True
        seconds = self.settings.lease_seconds
        if not self.leases.take(SEQUENCER, self.name, seconds):
            return False
        self.sequencer_renewal = time.monotonic() + seconds / 2
        return True

    def wake_consumers(self) -> None:
        """Enqueue the job of each consumer behind the last position. One still running may
        stop just short of what was positioned meanwhile: then the next rounds look again."""
        self.consumers_busy = False
        for name in self.changes.lagging(CONSUMERS):
            job = consumer_job_id(name)
            try:
                if Job.fetch(job, connection=self.queue.connection).get_status(refresh=False) in WAITING:
                    self.consumers_busy = True
                    continue
            except NoSuchJobError:
                pass
            self.changes_queue.enqueue(
                CONSUMERS[name], job_id=job, job_timeout=int(CONSUMER_JOB_SECONDS * 3), result_ttl=60, failure_ttl=3600
            )

    def schedule(self) -> None:
        """Put the retries that are due back in the queue, if this dispatcher holds the lock."""
        if not self.scheduler.acquired_locks:
            self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            self.scheduler.enqueue_scheduled_jobs()
            self.scheduler.heartbeat()

    def maintain(self, now: float | None = None) -> None:
        """What keeps the pipeline whole when a process dies (see the module's docstring)."""
        now = now if now is not None else time.monotonic()
        settings = self.settings
        self.outbox.take_back_stale_claims(timedelta(seconds=settings.dispatch_claim_seconds))
        self.queue.started_job_registry.cleanup()  # jobs of dead workers: retried or failed by RQ
        self.changes_queue.started_job_registry.cleanup()
        self.redispatch_vanished()
        self.wake_subscription_lanes()
        self.wake_consumers()
        self.changes.purge(CONSUMERS, timedelta(hours=settings.change_log_retention_hours))
        if now - self.last_retention >= settings.retention_sweep_seconds:
            self.last_retention = now
            hour = datetime.now(UTC).strftime("%Y%m%d%H%M")
            self.queue.enqueue(RETENTION_JOB, job_id=f"retention-{hour}", job_timeout=3600, result_ttl=86400)

    def wake_subscription_lanes(self) -> int:
        """Subscription delivery lanes whose next notification is due and that no job delivers (a
        backoff is over, a worker died mid-delivery): their job enqueued again."""
        from .subscriptions import enqueue_lanes, ready_lanes

        return enqueue_lanes(self.changes_queue, ready_lanes(self.db))

    def redispatch_vanished(self) -> None:
        for event in self.outbox.dispatched_before(timedelta(seconds=self.settings.dispatch_redispatch_seconds)):
            event_id = str(event["_id"])
            try:
                job = Job.fetch(event_id, connection=self.queue.connection)
            except NoSuchJobError:
                self.enqueue([event])
                self.outbox.redispatched(event_id)
                continue
            status = job.get_status(refresh=False)
            if status == JobStatus.FAILED:
                self.outbox.fail(event_id, "la tâche a échoué (voir la file de tâches)")

    def run(self, stop: threading.Event | None = None) -> None:
        """Dispatch until `stop` is set (or forever), maintaining every few seconds."""
        stop = stop or threading.Event()
        idle = self.settings.dispatch_idle_seconds
        while not stop.is_set():
            try:
                if time.monotonic() - self.last_maintenance >= max(idle * 4, 1.0):
                    self.last_maintenance = time.monotonic()
                    self.maintain()
                    self.schedule()
                positioned = self.sequence()
                dispatched = self.dispatch()
                if dispatched == 0 and positioned == 0:
                    stop.wait(idle)
                elif dispatched < self.settings.dispatch_batch and positioned < self.settings.change_log_batch:
                    stop.wait(self.settings.dispatch_gather_seconds)  # let the next round gather more
            except RedisError as exc:
                log.warning("queue unreachable (%s): events wait in the outbox", type(exc).__name__)
                stop.wait(max(idle, 1.0))
        self.scheduler.release_locks()
        self.leases.release(SEQUENCER, self.name)
        self.sequencer_renewal = 0.0


def main() -> None:
    import signal

    from fhir_server.logs import install_filter

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    install_filter()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    dispatcher = Dispatcher(Settings.from_env())
    log.info("dispatcher %s started", dispatcher.name)
    dispatcher.run(stop)


if __name__ == "__main__":
    main()

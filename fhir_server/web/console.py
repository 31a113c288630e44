"""The operators' console: the RQ queue (depth, failed jobs, requeue), the outbox (events by
state, failed ones, reset to "new"), the change log (entries waiting for the sequencer, how far
behind each consumer is), and the identity conflicts of person records (an INS sent
with another birth date or sex: which laboratories' Patients disagree, on what — never the
values). What fails shows here, and the retry buttons put it back in line."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from ..storage.changes import Changes
from ..storage.outbox import Outbox
from ..storage.persons import Person, Persons


@dataclass
class FailedJob:
    id: str
    function: str
    enqueued_at: str
    ended_at: str
    error: str


def outbox() -> Outbox:
    return current_app.extensions["sidep.outbox"]


def identity_conflicts(limit: int = 100) -> tuple[int, list[Person]]:
    persons: Persons = current_app.extensions["sidep.persons"]
    return persons.count_conflicts(), persons.with_conflicts(limit)


# the change log's consumers (workers/consumers.py CONSUMERS), as operators know them
CONSUMER_LABELS = {
    "pseudonymised-feed": "Flux pseudonymisé (santé publique)",
    "subscriptions": "Abonnements (DMP, prescripteurs)",
}


def change_log() -> dict:
    """Positions given, entries waiting for one, and each consumer's delay in entries."""
    from workers.consumers import CONSUMERS

    changes = Changes(current_app.extensions["sidep.store"].db)
    head = changes.head()
    consumers = [
        {"name": name, "label": CONSUMER_LABELS.get(name, name), "behind": head - changes.cursor(name)}
        for name in CONSUMERS
    ]
    return {"head": head, "waiting": changes.waiting(), "consumers": consumers}


def redis_url() -> str | None:
    return current_app.config["SETTINGS"].redis_url


def queue_state() -> dict | None:
    """Depth of the queue and its failed jobs; None when no queue is configured (REDIS_URL)."""
    url = redis_url()
    if not url:
        return None
    from workers.queue import queue

    q = queue(url, current_app.config["SETTINGS"].queue_name)
    registry = q.failed_job_registry
    ids = registry.get_job_ids(0, 49, desc=True)
    jobs = []
    for job in q.job_class.fetch_many(ids, connection=q.connection):
        if job is None:
            continue
        error = (job.exc_info or "").strip().splitlines()
        jobs.append(
            FailedJob(
                job.id, job.func_name or "", _time(job.enqueued_at), _time(job.ended_at), error[-1] if error else ""
            )
        )
    return {
        "name": q.name,
        "depth": q.count,
        "failed": registry.count,
        "jobs": jobs,
        "started": q.started_job_registry.count,
        "scheduled": q.scheduled_job_registry.count,
    }


def requeue(job_id: str) -> bool:
    url = redis_url()
    if not url:
        return False
    from rq.exceptions import InvalidJobOperation, NoSuchJobError

    from workers.queue import queue

    try:
        queue(url, current_app.config["SETTINGS"].queue_name).failed_job_registry.requeue(job_id)
    except (InvalidJobOperation, NoSuchJobError):
        return False
    return True


def _time(moment) -> str:
    return moment.strftime("%d/%m/%Y %H:%M:%S") if moment else ""

"""Asynchronous requests (FHIR's `Prefer: respond-async` pattern): one record per request, from
its kick-off to its result, in `_async_tasks` (operational records: fhir_server/storage/records.py).

A task belongs to the principal that made the request (its owner key and its kind/id); it says
what was asked (the resource, the output format), its state (queued, running, done, failed) and,
once finished, the result the synchronous call would have answered (bytes, content type, file
name) or the error (status and OperationOutcome). Tasks expire: `AsyncTask.purge(now)` deletes
those whose time is up, results included.

The id is drawn by `secrets` (the address of the result, never logged); it is no credential on
its own: only the principal that made the request reaches the task.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from mongoengine import (
    BinaryField,
    DateTimeField,
    DictField,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentField,
    IntField,
    StringField,
)

from .records import ALIAS

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
STATES = (QUEUED, RUNNING, DONE, FAILED)
ID_BYTES = 32  # secrets.token_urlsafe(32): 43 characters, 256 bits


class Owner(EmbeddedDocument):
    """Who may poll and delete the task: the same principal (client or user) of the same owner."""

    key = StringField()  # Principal.owner_key (organisation, or rpps:<RPPS>); None without auth
    principal = StringField()  # "<kind>/<id>" of the principal; None without auth


class Request(EmbeddedDocument):
    resource_type = StringField(required=True)
    resource_id = StringField(required=True)
    format = StringField(required=True)
    certificate = StringField()
    lang = StringField(default="en")


class Result(EmbeddedDocument):
    body = BinaryField(required=True)
    content_type = StringField(required=True)
    filename = StringField()


class Failure(EmbeddedDocument):
    status = IntField(required=True)
    outcome = DictField(required=True)  # the OperationOutcome, in the request's language


class AsyncTask(Document):
    meta = {"collection": "_async_tasks", "db_alias": ALIAS, "indexes": ["expires"]}

    id = StringField(primary_key=True)
    kind = StringField(required=True)  # the operation, e.g. "generate-certificate"
    state = StringField(required=True, choices=STATES, default=QUEUED)
    owner = EmbeddedDocumentField(Owner, required=True)
    request = EmbeddedDocumentField(Request, required=True)
    result = EmbeddedDocumentField(Result)
    error = EmbeddedDocumentField(Failure)
    created = DateTimeField(required=True)
    expires = DateTimeField(required=True)

    @classmethod
    def record(cls, kind: str, owner: Owner, request: Request, keep_minutes: int, now: datetime | None = None):
        """A new queued task with an unguessable id, kept `keep_minutes` (again once finished)."""
        now = now or _now()
        task = cls(
            id=secrets.token_urlsafe(ID_BYTES),
            kind=kind,
            owner=owner,
            request=request,
            created=now,
            expires=now + timedelta(minutes=keep_minutes),
        )
        task.save(force_insert=True)
        return task

    @classmethod
    def find(cls, task_id: str, now: datetime | None = None) -> "AsyncTask | None":
        """The task, unless unknown or expired (an expired task not purged yet is gone all the same)."""
        task = cls.objects(id=task_id).first()
        if task is None or _aware(task.expires) <= (now or _now()):
            return None
        return task

    @classmethod
    def start(cls, task_id: str) -> "AsyncTask | None":
        """Mark a queued (or retried) task running; None when it was deleted or is already finished."""
        updated = cls.objects(id=task_id, state__in=[QUEUED, RUNNING]).update_one(set__state=RUNNING)
        return cls.objects(id=task_id).first() if updated else None

    @classmethod
    def finish(cls, task_id: str, result: Result, keep_minutes: int) -> None:
        cls._close(task_id, keep_minutes, set__state=DONE, set__result=result)

    @classmethod
    def fail(cls, task_id: str, status: int, outcome: dict, keep_minutes: int) -> None:
        cls._close(task_id, keep_minutes, set__state=FAILED, set__error=Failure(status=status, outcome=outcome))

    @classmethod
    def _close(cls, task_id: str, keep_minutes: int, **changes) -> None:
        # only a running task: a deleted one stays deleted, a finished one keeps its result
        expires = _now() + timedelta(minutes=keep_minutes)
        cls.objects(id=task_id, state=RUNNING).update_one(set__expires=expires, **changes)

    @classmethod
    def forget(cls, task_id: str) -> None:
        cls.objects(id=task_id).delete()

    @classmethod
    def purge(cls, now: datetime) -> int:
        """Delete the tasks expired at `now` (with their results); how many there were."""
        return cls.objects(expires__lte=now).delete()

    def belongs_to(self, owner: Owner) -> bool:
        return (self.owner.key, self.owner.principal) == (owner.key, owner.principal)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    """MongoDB gives naive UTC datetimes back."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

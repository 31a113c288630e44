"""Asynchronous requests (FHIR's `Prefer: respond-async` pattern): one record per request, from
its kick-off to its result, in `_async_tasks` (operational records: fhir_server/storage/records.py).

A task belongs to the principal that made the request (its owner key and its kind/id); it says
what was asked (the resource, the output format), its state (queued, running, done, failed) and,
once finished, the result the synchronous call would have answered (bytes, content type, file
name) or the error (status and OperationOutcome). A bulk `$export` task asks for resource types
(and a `_since`) rather than one resource, and its result is the list of the NDJSON files its job
wrote (`Export`: the files stay on disk, fhir_server/exports.py). Tasks expire:
`AsyncTask.purge(now)` deletes those whose time is up, results included (the export files go with
them: `expired_exports` says which, first).

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
    ListField,
    StringField,
)

from .records import ALIAS

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
STATES = (QUEUED, RUNNING, DONE, FAILED)
EXPORT = "export"  # the kind of a bulk $export task
ID_BYTES = 32  # secrets.token_urlsafe(32): 43 characters, 256 bits


class Owner(EmbeddedDocument):
    """Who may poll and delete the task: the same principal (client or user) of the same owner."""

    key = StringField()  # Principal.owner_key (organisation, or rpps:<RPPS>); None without auth
    principal = StringField()  # "<kind>/<id>" of the principal; None without auth


class Request(EmbeddedDocument):
    resource_type = StringField()  # the resource an operation on an instance is about
    resource_id = StringField()
    format = StringField(required=True)
    certificate = StringField()
    lang = StringField(default="en")
    # a bulk export: what it exports, changed at or after `since`, and the kick-off's URL
    types = ListField(StringField())
    since = DateTimeField()
    url = StringField()


class ExportFile(EmbeddedDocument):
    """One NDJSON file of an export: its type, its name in the export's directory, its lines."""

    type = StringField(required=True)
    name = StringField(required=True)
    count = IntField(required=True)
    bytes = IntField(required=True)


class Export(EmbeddedDocument):
    transaction_time = DateTimeField(required=True)  # nothing changed after it is exported
    files = ListField(EmbeddedDocumentField(ExportFile))


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
    export = EmbeddedDocumentField(Export)
    error = EmbeddedDocumentField(Failure)
    progress = StringField()  # what a running job says of how far it got (X-Progress)
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
    def finish_export(cls, task_id: str, export: Export, keep_minutes: int) -> bool:
        """False when the task was deleted meanwhile (its files are then the caller's to remove)."""
        return cls._close(task_id, keep_minutes, set__state=DONE, set__export=export, unset__progress=True)

    @classmethod
    def note_progress(cls, task_id: str, progress: str) -> bool:
        """Say how far a running job got; False when the task is no longer running (deleted:
        the job stops)."""
        return bool(cls.objects(id=task_id, state=RUNNING).update_one(set__progress=progress))

    @classmethod
    def fail(cls, task_id: str, status: int, outcome: dict, keep_minutes: int) -> None:
        cls._close(task_id, keep_minutes, set__state=FAILED, set__error=Failure(status=status, outcome=outcome))

    @classmethod
    def _close(cls, task_id: str, keep_minutes: int, **changes) -> bool:
        # only a running task: a deleted one stays deleted, a finished one keeps its result
        expires = _now() + timedelta(minutes=keep_minutes)
        return bool(cls.objects(id=task_id, state=RUNNING).update_one(set__expires=expires, **changes))

    @classmethod
    def forget(cls, task_id: str) -> None:
        cls.objects(id=task_id).delete()

    @classmethod
    def purge(cls, now: datetime) -> int:
        """Delete the tasks expired at `now` (with their results); how many there were."""
        return cls.objects(expires__lte=now).delete()

    @classmethod
    def expired_exports(cls, now: datetime) -> list[str]:
        """The ids of the export tasks expired at `now` (whose files are to be removed)."""
        return [task.id for task in cls.objects(kind=EXPORT, expires__lte=now).only("id")]

    @classmethod
    def export_ids(cls) -> list[str]:
        """The ids of every export task still recorded (expired or not)."""
        return [task.id for task in cls.objects(kind=EXPORT).only("id")]

    def belongs_to(self, owner: Owner) -> bool:
        return (self.owner.key, self.owner.principal) == (owner.key, owner.principal)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    """MongoDB gives naive UTC datetimes back."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

"""The FHIR asynchronous request pattern (https://hl7.org/fhir/R4/async.html, with the Bulk Data
kick-off and status conventions) for operations that take a while.

- Kick-off: an operation that `requested()` an asynchronous answer checks what it can at once,
  then calls `kick_off`: a task is recorded (fhir_server/storage/tasks.py), its job enqueued on
  RQ, and the client gets `202 Accepted` with `Content-Location: {base}/_async/{task id}`.
  Without a queue (no REDIS_URL, or Redis unreachable) the answer is 503: nothing is recorded.
- `GET {base}/_async/{id}` (`status`): 202 with `X-Progress` and `Retry-After` while the job has
  not finished; then 200 with what the synchronous call would have answered, or the job's error
  (its status and OperationOutcome).
- `DELETE {base}/_async/{id}` (`cancel`): the task and its result are forgotten, the job dropped.
- A bulk `$export` (operations/export.py) answers its finished poll with the Bulk Data manifest
  (`manifest_response`) and serves its NDJSON files at `{base}/_async/{id}/{file}` (`download`),
  streamed from disk (fhir_server/exports.py); deleting the task removes them.

Only the principal that made the request reaches its task; for anyone else, as for an unknown or
expired id, there is no such task (404, the same words). Polling a result is an access to patient
data: the audit interceptor records it against the resource the task is about
(`g.audit_resource`). The task id is the result's address: it is a route variable logs show as
`*` (fhir_server/logs.py), and the RQ job is named after a digest of it, not the id itself, since
the worker logs job ids.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from email.utils import format_datetime

from flask import Response, g, send_file
from redis.exceptions import RedisError
from rq import Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from workers.queue import connection, queue

from . import exports
from .auth.audit import note_query
from .auth.policy import note_refused, scope_refused
from .auth.principal import current_principal
from .context import settings, store
from .http import dumps, fhir_response, lang, private_response
from .outcome import FhirError, Issue, operation_outcome
from .search.dates import instant
from .storage.tasks import DONE, EXPORT, FAILED, QUEUED, RUNNING, AsyncTask, Owner, Request

PREFER_ASYNC = "respond-async"
RETRY_AFTER_SECONDS = 2  # what a poll in progress is told to wait
# a job failing on a transient error (a lost database connection) is run again after these
RETRY_INTERVALS = (5, 30, 120)
PROGRESS = {QUEUED: ("queued", "en attente"), RUNNING: ("in progress", "en cours")}
UNKNOWN_FILE = (
    "This export file is not known (or its export has expired)",
    "Ce fichier d'export est inconnu (ou son export a expiré)",
)
UNKNOWN = (
    "This asynchronous request is not known (or its result has expired)",
    "Cette requête asynchrone est inconnue (ou son résultat a expiré)",
)


def requested(request) -> bool:
    """Did the client ask for an asynchronous answer (`Prefer: respond-async`)?"""
    prefer = request.headers.get("Prefer", "") if request is not None else ""
    return any(part.split("=")[0].strip().lower() == PREFER_ASYNC for part in prefer.replace(";", ",").split(","))


def job_id(task_id: str) -> str:
    """The RQ job of a task: named after a digest of the task id, which logs must not show."""
    return "async-" + hashlib.sha256(task_id.encode()).hexdigest()[:32]


def kick_off(
    kind: str, request: Request, job: str, keep_minutes: int | None = None, job_timeout: int | None = None
) -> Response:
    """Record a task for `request`, enqueue `job` (a function's dotted name, called with the task
    id) and answer 202 with where the result will be. The task is kept `keep_minutes` and its job
    may run `job_timeout` seconds (by default ASYNC_RESULT_MINUTES and ASYNC_JOB_TIMEOUT)."""
    config = settings()
    if not config.redis_url:
        raise _unavailable()
    keep_minutes = keep_minutes or config.async_result_minutes
    task = AsyncTask.record(kind, _owner(), request, keep_minutes)
    try:
        queue(config.redis_url, config.queue_name).enqueue(
            job,
            task.id,
            job_id=job_id(task.id),
            description=kind,  # RQ logs the description; by default it shows the arguments
            job_timeout=job_timeout or config.async_job_timeout,
            retry=Retry(max=len(RETRY_INTERVALS), interval=list(RETRY_INTERVALS)),
            result_ttl=0,  # the result is the task's, in MongoDB
            failure_ttl=keep_minutes * 60,
        )
    except RedisError as error:
        AsyncTask.forget(task.id)
        raise _unavailable() from error
    outcome = _information(
        "The request is accepted; its result will be at the Content-Location address",
        "La requête est acceptée ; son résultat sera à l'adresse Content-Location",
    )
    return fhir_response(outcome, 202, {"Content-Location": f"{config.base_url}/_async/{task.id}"})


def status(task_id: str):
    """GET [base]/_async/{id}."""
    task = _own_task(task_id, audited=True)
    if task.state == DONE and task.kind == EXPORT:
        return manifest_response(task)
    if task.state == DONE:
        result = task.result
        return private_response(result.body, result.content_type, result.filename)
    if task.state == FAILED:
        return fhir_response(task.error.outcome, task.error.status)
    progress, french = PROGRESS[task.state]
    outcome = _information(f"The request is {progress}", f"La requête est {french}")
    if task.state == RUNNING and task.progress:  # what the job said of how far it got
        progress = f"{progress}: {task.progress}"
    return fhir_response(outcome, 202, {"X-Progress": progress, "Retry-After": str(RETRY_AFTER_SECONDS)})


def manifest_response(task: AsyncTask) -> Response:
    """The Bulk Data manifest of a finished export: its files (each type's, with its line count),
    fetched with the same token; `Expires` when the export and its files go."""
    base = settings().base_url
    manifest = {
        "transactionTime": instant(task.export.transaction_time),
        "request": task.request.url,
        "requiresAccessToken": True,
        "output": [
            {"type": file.type, "url": f"{base}/_async/{task.id}/{file.name}", "count": file.count}
            for file in task.export.files
        ],
        "error": [],
    }
    expires = format_datetime(_aware(task.expires), usegmt=True)
    headers = {"Expires": expires, "Cache-Control": "no-store"}
    return Response(dumps(manifest), content_type="application/json", headers=headers)


def download(task_id: str, file_name: str):
    """GET [base]/_async/{id}/{file}: one NDJSON file of a finished export, streamed from disk, to
    the export's principal alone (anyone else, an unknown file, an export not finished: 404)."""
    task = _own_task(task_id, audited=True)
    known = task.kind == EXPORT and task.state == DONE and any(f.name == file_name for f in task.export.files)
    path = exports.file_path(settings(), task.id, file_name) if known else None
    try:
        stream = open(path, "rb") if path else None  # noqa: SIM115 - closed by the response
    except FileNotFoundError:  # removed since (the task deleted meanwhile)
        stream = None
    if stream is None:
        raise FhirError.of(404, "not-found", *UNKNOWN_FILE)
    note_query(f"$export file of {file_name.split('-')[0]}")  # the audit names the type downloaded
    response = send_file(stream, mimetype=exports.NDJSON, conditional=False, etag=False)
    response.headers["Cache-Control"] = "no-store"
    return response


def cancel(task_id: str):
    """DELETE [base]/_async/{id}: forget the task and its result, drop its job if still waiting."""
    task = _own_task(task_id, audited=False)
    AsyncTask.forget(task.id)
    _drop_job(task.id)
    if task.kind == EXPORT:
        exports.remove(settings(), task.id)
    return fhir_response(
        _information("The request and its result are deleted", "La requête et son résultat sont supprimés"), 202
    )


def not_allowed(task_id: str):
    """Any other method on a task's address (matched here, not as a resource: logs hide the id)."""
    raise FhirError.of(
        405,
        "not-supported",
        "An asynchronous request is polled (GET) or deleted (DELETE)",
        "Une requête asynchrone se consulte (GET) ou se supprime (DELETE)",
    )


def _own_task(task_id: str, audited: bool) -> AsyncTask:
    """The caller's task, or 404 as for an id nobody has (another principal's task included)."""
    task = AsyncTask.find(task_id)
    if task is None:
        raise FhirError.of(404, "not-found", *UNKNOWN)
    rtype, rid = task.request.resource_type, task.request.resource_id
    if audited and rtype:
        g.audit_resource = (rtype, rid)  # the resource the result is made of (auth/audit.py)
    if not task.belongs_to(_owner()):
        record = store().current(rtype, rid) if audited and rtype and rid else None
        if record is not None:
            note_refused(record)
        raise FhirError.of(404, "not-found", *UNKNOWN)
    principal = current_principal()
    if rtype and principal is not None and not principal.scopes.allows(rtype, "r"):
        raise scope_refused(rtype, "r")
    return task


def _owner() -> Owner:
    principal = current_principal()
    if principal is None:
        return Owner(key=None, principal=None)
    return Owner(key=principal.owner_key, principal=f"{principal.kind}/{principal.id}")


def _aware(moment: datetime) -> datetime:
    """MongoDB gives naive UTC datetimes back."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _drop_job(task_id: str) -> None:
    """Best effort: a job that runs after its task is deleted finds nothing to do anyway."""
    url = settings().redis_url
    if not url:
        return
    try:
        Job.fetch(job_id(task_id), connection=connection(url)).cancel()
    except (NoSuchJobError, InvalidJobOperation, RedisError):  # gone, already cancelled, unreachable
        pass


def _unavailable() -> FhirError:
    return FhirError.of(
        503,
        "transient",
        "Asynchronous requests are unavailable now (no job queue): retry later, or ask without Prefer: respond-async",
        "Les requêtes asynchrones sont indisponibles (pas de file de tâches) : réessayez plus tard, "
        "ou sans Prefer: respond-async",
    )


def _information(en: str, fr: str) -> dict:
    return operation_outcome([Issue("information", "informational", en, fr)], lang())

"""FHIR Bulk Data `$export`: the job that writes the NDJSON files of one export task.

The web process checked the request (operations/export.py) and recorded the task with the types
to export and its `_since`; this job takes the moment it starts as the export's transaction time
(nothing changed after it is written), then streams each type from a database cursor into files
of at most EXPORT_FILE_BYTES (fhir_server/exports.py), EXPORT_BATCH lines read at a time: its
memory is one batch, whatever the export's size. After each batch it notes its progress on the
task, which is also how it learns that the task was deleted (it stops and removes its files).

Lines are what the server would answer: a Subscription's channel headers masked as in every
response (fhir_server/subscriptions.py `mask_secrets`), deleted resources left out. Nothing of the
content is logged. A retried job (a lost database connection) starts again from an empty
directory; a failed one leaves no file.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from pymongo.errors import ConnectionFailure
from rq import get_current_job

from fhir_server import exports
from fhir_server.outcome import FhirError, operation_outcome
from fhir_server.search.dates import utc_now
from fhir_server.storage.pseudonymised import PseudonymisedRecords
from fhir_server.storage.tasks import AsyncTask, Export
from fhir_server.subscriptions import mask_secrets
from workers.context import WorkerContext, context


def run_export(task_id: str) -> None:
    ctx = context()
    ctx.connect_records(AsyncTask)
    task = AsyncTask.start(task_id)
    if task is None:  # deleted, or finished by an earlier run
        return
    settings, request = ctx.settings, task.request
    exports.remove(settings, task_id)  # what an interrupted earlier run left
    folder = exports.directory(settings, task_id)
    folder.mkdir(parents=True, mode=0o700)
    transaction_time = utc_now()
    try:
        files = write_types(ctx, task_id, list(request.types), request.since, transaction_time)
    except ConnectionFailure:
        exports.remove(settings, task_id)
        if _last_attempt():
            _fail(task_id, request.lang, 503, "transient", *UNAVAILABLE, keep=settings.export_hours * 60)
        raise
    except Exception:
        exports.remove(settings, task_id)
        _fail(task_id, request.lang, 500, "exception", *FAULT, keep=settings.export_hours * 60)
        raise  # RQ logs the traceback (redacted by workers.Worker)
    finished = files is not None and AsyncTask.finish_export(
        task_id, Export(transaction_time=transaction_time, files=files), settings.export_hours * 60
    )
    if not finished:  # deleted while it ran
        exports.remove(settings, task_id)


def write_types(ctx: WorkerContext, task_id: str, types: list[str], since: datetime | None, until: datetime):
    """The files of every type, or None when the task was deleted meanwhile."""
    files = []
    for rtype in types:
        parts = exports.NdjsonParts(exports.directory(ctx.settings, task_id), rtype, ctx.settings.export_file_bytes)
        try:
            done = parts.write_all(
                lines(ctx, rtype, since, until),
                ctx.settings.export_batch,
                lambda written, rtype=rtype: AsyncTask.note_progress(task_id, f"{rtype}: {written} written"),
            )
        finally:
            parts.close()
        if not done:
            return None
        files.extend(parts.files())
    return files


def lines(ctx: WorkerContext, rtype: str, since: datetime | None, until: datetime) -> Iterator[dict]:
    batch = ctx.settings.export_batch
    if rtype == exports.PSEUDONYMISED:
        records = PseudonymisedRecords(ctx.store.db).current(since, batch_size=batch, until=until)
        return (exports.pseudonymised_line(doc) for doc in records)
    resources = ctx.store.stream_current(rtype, since, until, batch)
    return (mask_secrets(r) for r in resources) if rtype == "Subscription" else resources


UNAVAILABLE = (
    "The database was unreachable: ask for the export again later",
    "La base de données était injoignable : renouvelez la demande d'export plus tard",
)
FAULT = ("Internal server error; the incident is logged", "Erreur interne du serveur ; l'incident est journalisé")


def _last_attempt() -> bool:
    job = get_current_job()
    return job is None or not job.retries_left


def _fail(task_id: str, lang: str, status: int, code: str, en: str, fr: str, keep: int) -> None:
    AsyncTask.fail(task_id, status, operation_outcome(FhirError.of(status, code, en, fr).issues, lang), keep)

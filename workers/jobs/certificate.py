"""`$generate-certificate` asked for with `Prefer: respond-async`: the job that renders it.

The web process checked the request (format, the resource readable by the caller) and recorded
the task (fhir_server/storage/tasks.py); this job reads the resources as they are now, renders
exactly what the synchronous call would answer (operations.generate_certificate.render) and
stores it, or the error, on the task. A task already finished, or deleted, is left alone.

A lost database connection is transient: the exception goes back to RQ, which runs the job
again (the Retry of the enqueue); on its last attempt the task fails with 503 instead.
"""

from __future__ import annotations

from pymongo.errors import ConnectionFailure
from rq import get_current_job

from fhir_server.outcome import FhirError, operation_outcome
from fhir_server.storage.tasks import AsyncTask, Result
from operations.certificates.keys import load_keyring
from operations.generate_certificate import load_result_resources, render
from workers.context import context


def render_certificate(task_id: str) -> None:
    ctx = context()
    task = AsyncTask.start(task_id)
    if task is None:  # deleted, or finished by an earlier run
        return
    keep = ctx.settings.async_result_minutes
    request = task.request
    try:
        resources = load_result_resources(ctx.store, request.resource_type, request.resource_id)
        rendered = render(
            resources, request.format, request.certificate, request.resource_id, load_keyring(ctx.settings.var_dir)
        )
    except FhirError as error:  # what the synchronous call would have answered: the client's answer
        AsyncTask.fail(task_id, error.status, operation_outcome(error.issues, request.lang), keep)
        return
    except ConnectionFailure:
        if _last_attempt():
            AsyncTask.fail(task_id, 503, _outcome(request.lang, 503, "transient", *UNAVAILABLE), keep)
        raise
    except Exception:
        AsyncTask.fail(task_id, 500, _outcome(request.lang, 500, "exception", *FAULT), keep)
        raise  # RQ logs the traceback (redacted by workers.Worker) and keeps the job as failed
    result = Result(body=rendered.body, content_type=rendered.content_type, filename=rendered.filename)
    AsyncTask.finish(task_id, result, keep)


UNAVAILABLE = (
    "The database was unreachable: ask again later",
    "La base de données était injoignable : renouvelez la demande plus tard",
)
FAULT = ("Internal server error; the incident is logged", "Erreur interne du serveur ; l'incident est journalisé")


def _last_attempt() -> bool:
    job = get_current_job()
    return job is None or not job.retries_left


def _outcome(lang: str, status: int, code: str, en: str, fr: str) -> dict:
    return operation_outcome(FhirError.of(status, code, en, fr).issues, lang)

"""The request pipeline of the FHIR API: cross-cutting concerns applied in one place, in order,
before any interaction runs (format negotiation, body limits, then the interceptors the
application factory installs: authentication and authorisation), after it (audit), and every
error turned into an OperationOutcome.

A before-interceptor is a function `fn()` run before the handler (it may raise FhirError); an
after-interceptor gets `(response)` and returns it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import logs
from .http import JSON_TYPES, outcome_response
from .outcome import FhirError

log = logging.getLogger(__name__)

ACCEPTABLE_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir"}
BODY_METHODS = {"POST", "PUT", "PATCH"}
FORM = "application/x-www-form-urlencoded"
JSON_PATCH = "application/json-patch+json"  # the body of PATCH, and of PATCH only


def install_app_handlers(app, prefix: str) -> None:
    """Routing errors (no such URL, method not allowed) happen before the blueprint is chosen:
    answer them with an OperationOutcome too, under the FHIR prefix."""
    fallback = app.error_handler_spec.get(None, {}).get(None, {}).get(HTTPException)

    def handle(error: HTTPException):
        if request.path.startswith(prefix):
            return _http_error(error)
        return fallback(error) if fallback else error

    app.register_error_handler(HTTPException, handle)


def install(
    blueprint: Blueprint,
    max_body_bytes: int,
    before: Sequence[Callable[[], None]] = (),
    after: Sequence[Callable[[Response], Response]] = (),
) -> None:
    @blueprint.before_request
    def _run_before():
        negotiate_format()
        check_body(max_body_bytes)
        for fn in before:
            fn()

    @blueprint.after_request
    def _run_after(response: Response) -> Response:
        for fn in after:
            response = fn(response)
        return response

    blueprint.register_error_handler(FhirError, outcome_response)
    blueprint.register_error_handler(HTTPException, _http_error)
    blueprint.register_error_handler(Exception, _unexpected)


def is_operation() -> bool:
    return "/$" in request.path


def is_async_result() -> bool:
    return request.endpoint in ("fhir.async-status", "fhir.async-file")


def negotiate_format() -> None:
    """JSON only: other formats get 406. Operations negotiate their own outputs (PDF, PNG...),
    which their asynchronous results give as they are."""
    if is_operation() or is_async_result():
        return
    requested = request.args.get("_format")
    if requested is not None:
        if requested.split(";")[0].strip() not in ACCEPTABLE_FORMATS:
            raise _not_acceptable(requested)
        return
    accept = request.accept_mimetypes
    if accept and not any(accept[t] for t in ("application/fhir+json", "application/json")):
        raise _not_acceptable(request.headers.get("Accept", ""))


def _not_acceptable(what: str) -> FhirError:
    return FhirError.of(
        406,
        "not-supported",
        f"Only JSON is served (application/fhir+json), not '{what}'",
        f"Seul le JSON est servi (application/fhir+json), pas '{what}'",
    )


def check_body(max_body_bytes: int) -> None:
    if request.method not in BODY_METHODS:
        return
    length = request.content_length
    if length is not None and length > max_body_bytes:
        raise too_large(max_body_bytes)
    if not length and not request.headers.get("Transfer-Encoding"):
        return
    if length is None and _streamed_past(max_body_bytes):
        raise too_large(max_body_bytes)
    mimetype = request.mimetype
    allowed = JSON_TYPES | ({FORM} if request.path.endswith("/_search") else set())
    if request.method == "PATCH":
        allowed = {JSON_PATCH}
    if mimetype not in allowed:
        wanted = JSON_PATCH if request.method == "PATCH" else "application/fhir+json"
        raise FhirError.of(
            415,
            "not-supported",
            f"Content-Type '{mimetype or 'none'}' is not accepted; send {wanted}",
            f"Content-Type '{mimetype or 'aucun'}' n'est pas accepté ; envoyez {wanted}",
        )


def _streamed_past(limit: int) -> bool:
    """Whether a body sent without Content-Length (chunked) is longer than `limit`. Werkzeug stops
    reading such a stream at the limit without saying more was sent, which would hand the handlers
    a body cut short: read it now (it is cached for them) and look for one byte beyond."""
    if len(request.get_data(cache=True)) < limit:
        return False
    return bool(request.environ["wsgi.input"].read(1))


def too_large(limit: int) -> FhirError:
    return FhirError.of(
        413,
        "too-costly",
        f"The body is larger than the limit of {limit} bytes",
        f"Le corps dépasse la limite de {limit} octets",
    )


def _http_error(error: HTTPException):
    if isinstance(error, RequestEntityTooLarge):
        from flask import current_app

        return outcome_response(too_large(current_app.config["MAX_CONTENT_LENGTH"]))
    code = {404: "not-found", 405: "not-supported"}.get(error.code or 500, "processing")
    return outcome_response(FhirError.of(error.code or 500, code, error.description or error.name))


def _unexpected(error: Exception):
    if isinstance(error, HTTPException):
        return _http_error(error)
    # the route and the traceback, never the request data nor the exception's message (fhir_server/logs.py)
    log.error(
        "unexpected error on %s %s\n%s",
        request.method,
        logs.redact_path(request.path, request.method),
        logs.exception_summary(error),
    )
    return outcome_response(
        FhirError.of(
            500,
            "exception",
            "Internal server error; the incident is logged",
            "Erreur interne du serveur ; l'incident est journalisé",
        )
    )

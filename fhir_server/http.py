"""HTTP helpers shared by every interaction: JSON in and out, headers, Prefer, language."""

from __future__ import annotations

import json
import re
from datetime import UTC
from decimal import Decimal
from email.utils import format_datetime

import orjson
from flask import Response, current_app, g, request

from profiles.base_validation import TOO_COSTLY, TYPE_NAME, JsonLimits, json_issues

from .outcome import FhirError, Issue, operation_outcome
from .storage import Record

FHIR_JSON = "application/fhir+json"
JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir"}


def lang() -> str:
    accept = request.accept_languages.best_match(["fr", "en"]) if request else None
    return accept or "en"


# A number with a fraction or an exponent, outside a time of day ("10:00:00.5") or a dotted version.
_DECIMAL_LITERAL = re.compile(rb"(?<![\w.:])-?\d+(?:\.\d+(?:[eE][+-]?\d+)?|[eE][+-]?\d+)")


def _decimal_text(value):
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(body: dict) -> bytes:
    option = orjson.OPT_INDENT_2 if request and request.args.get("_pretty") == "true" else 0
    return orjson.dumps(body, default=_decimal_text, option=option)


def loads(data: bytes):
    """JSON with FHIR decimals kept as written: a number whose text a float would not give back
    (1.50, 1.0E-3, 66.899999999999991) becomes a Decimal, stored as Decimal128. Bodies without such
    numbers (nearly all) take the fast parser."""
    if any(repr(float(m)).encode() != m for m in _DECIMAL_LITERAL.findall(data)):
        return json.loads(data, parse_float=Decimal, parse_constant=_not_json)
    return orjson.loads(data)


def _not_json(constant: str):
    raise ValueError(f"{constant} is not a JSON value")


def fhir_response(body: dict | None, status: int = 200, headers: dict | None = None) -> Response:
    data = b"" if body is None else dumps(body)
    if b'"Subscription"' in data:  # its channel headers are secrets: masked in every answer
        from .subscriptions import mask_secrets  # imports the policy, which needs this module

        data = dumps(mask_secrets(body))
    response = Response(data, status=status, mimetype=FHIR_JSON if body is not None else None)
    if body is not None:
        response.headers["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def private_response(body: bytes, content_type: str, filename: str | None = None, attachment: bool = False) -> Response:
    """Health data that is not a resource read (a certificate, an operation's output): never kept
    by a shared cache or the browser; a file name makes it a document (`attachment`: to save
    rather than to show)."""
    headers = {"Cache-Control": "no-store"}
    if filename:
        headers["Content-Disposition"] = f'{"attachment" if attachment else "inline"}; filename="{filename}"'
    return Response(body, content_type=content_type, headers=headers)


def outcome_response(error: FhirError) -> Response:
    return fhir_response(operation_outcome(error.issues, lang()), error.status, error.headers)


def read_json_body() -> dict:
    """The request body as a JSON object that keeps the FHIR JSON rules and the request limits,
    or 400 / 413 with where it broke."""
    body = read_json()
    if not isinstance(body, dict):
        raise FhirError.of(
            400,
            "structure",
            "The body must be a JSON object (a FHIR resource)",
            "Le corps doit être un objet JSON (une ressource FHIR)",
        )
    check_fhir_json(body)
    return body


def read_json():
    """The request body as JSON of any kind: 400 when there is none or it is malformed, 413 when
    it is nested beyond the limit."""
    data = request.get_data(cache=True)
    if not data:
        raise FhirError.of(400, "required", "The request has no body", "La requête n'a pas de corps")
    try:
        body = loads(data)
    except RecursionError:
        raise too_deep() from None
    except (ValueError, orjson.JSONDecodeError) as exc:
        if "depth limit" in str(exc):
            raise too_deep() from None
        raise FhirError.of(400, "structure", f"Malformed JSON: {exc}", f"JSON mal formé : {exc}") from None
    return body


def check_fhir_json(body: dict) -> None:
    """413 beyond a request limit (string length, element count, nesting depth), 400 where the body
    breaks the FHIR JSON rules (null, empty elements, names that are no element names...)."""
    config = current_app.config["SETTINGS"]
    kind = body.get("resourceType")
    root = kind if isinstance(kind, str) and TYPE_NAME.fullmatch(kind) else "Resource"
    issues = json_issues(body, root, JsonLimits(config.max_string_length, config.max_elements, config.max_depth))
    if issues:
        raise FhirError(413 if issues[0].code == TOO_COSTLY else 400, issues)


def too_deep() -> FhirError:
    limit = current_app.config["SETTINGS"].max_depth
    return FhirError.of(
        413,
        "too-costly",
        f"JSON nested deeper than {limit} levels, the limit",
        f"JSON imbriqué sur plus de {limit} niveaux, la limite",
    )


def prefer(name: str) -> str | None:
    """A token of the Prefer header, e.g. prefer('return') -> 'minimal'."""
    for part in request.headers.get("Prefer", "").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip() == name:
            return value.strip().strip('"')
    return None


def location(record: Record) -> str:
    return f"{current_app.config['SETTINGS'].base_url}/{record.type}/{record.id}/_history/{record.version}"


def http_date(record: Record) -> str:
    return format_datetime(record.last_updated.replace(tzinfo=UTC), usegmt=True)


def version_headers(record: Record, with_location: bool = False) -> dict:
    headers = {"ETag": record.etag, "Last-Modified": http_date(record)}
    if with_location:
        headers["Location"] = location(record)
    return headers


def written(record: Record, status: int) -> Response:
    """The response to a create or update, honouring Prefer: return=... With OperationOutcome, the
    warnings the profiles raised (the write was accepted) come with it."""
    headers = version_headers(record, with_location=True)
    mode = prefer("return") or "representation"
    if mode == "minimal":
        return fhir_response(None, status, headers)
    if mode == "OperationOutcome":
        stored = Issue(
            "information",
            "informational",
            f"{record.type}/{record.id} stored as version {record.version}",
            f"{record.type}/{record.id} enregistré en version {record.version}",
        )
        return fhir_response(operation_outcome([stored] + g.get("warnings", []), lang()), status, headers)
    return fhir_response(record.resource, status, headers)


def parse_etag(value: str | None) -> int | None:
    """'W/"3"' -> 3; None when absent; 400 when unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise FhirError.of(
            400,
            "invalid",
            f"If-Match '{value}' is not a version ETag like W/\"1\"",
            f"If-Match '{value}' n'est pas un ETag de version comme W/\"1\"",
        )
    return int(text)

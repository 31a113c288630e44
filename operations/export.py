"""`[base]/$export`: FHIR Bulk Data export, system level (https://hl7.org/fhir/uv/bulkdata/, v2).

The kick-off (GET, or POST with a Parameters body) needs `Prefer: respond-async`; what it asks
is checked at once (400 at the parameter otherwise), then the job (workers/jobs/export.py) writes
the NDJSON files and the client polls the Content-Location of the 202 until it gets the manifest
(fhir_server/asynchronous.py), then downloads each file with the same token.

- `_outputFormat`: `application/fhir+ndjson` (default), `application/ndjson` or `ndjson`.
- `_since`: a FHIR instant; only what changed at or after it (a resource's `meta.lastUpdated`,
  a pseudonymised record's `at`).
- `_type`: a comma-separated list of the types to export.

Who gets what: public health, the pseudonymised records of the results alone, as the type
`PseudonymisedResult` (no FHIR resource: fhir_server/exports.py), the only `_type` it may ask;
operators, the FHIR resources of any type their scopes let them read (by default the patient
data of results: fhir_server/exports.py PATIENT_DATA_TYPES) and `PseudonymisedResult` when they
name it. Anyone else: 403. Deleted resources are left out; Subscriptions are exported as every
answer shows them, their channel headers masked.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from fhir_server import asynchronous
from fhir_server.auth.policy import forbidden, require_public_health
from fhir_server.auth.principal import ROLE_PUBLIC_HEALTH, Principal, current_principal
from fhir_server.context import settings
from fhir_server.exports import OUTPUT_FORMATS, PATIENT_DATA_TYPES, PSEUDONYMISED
from fhir_server.outcome import FhirError
from fhir_server.resources import SUPPORTED_TYPES
from fhir_server.storage import tasks
from operations.registry import OperationCall, operation

KIND = tasks.EXPORT
JOB = "workers.jobs.export.run_export"
# FHIR's instant: to the second at least, with its time zone
INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
# Bulk Data parameters this server does not support: refused rather than ignored, as the IG asks
UNSUPPORTED = ("_elements", "patient", "_typeFilter", "includeAssociatedData")
PARAMETERS = [
    {"name": "_outputFormat", "use": "in", "min": 0, "max": "1", "type": "string"},
    {"name": "_since", "use": "in", "min": 0, "max": "1", "type": "instant"},
    {"name": "_type", "use": "in", "min": 0, "max": "*", "type": "string"},
]


@operation(
    "export",
    system=True,
    description="FHIR Bulk Data export (Prefer: respond-async): public health's pseudonymised records "
    "(PseudonymisedResult), or for operators the FHIR resources, as NDJSON files.",
    parameters=PARAMETERS,
)
def export(call: OperationCall):
    principal = current_principal()
    check_role(principal)
    if not asynchronous.requested(call.request):
        raise FhirError.of(
            400,
            "invalid",
            "$export is asynchronous: send the header Prefer: respond-async",
            "$export est asynchrone : envoyez l'en-tête Prefer: respond-async",
        )
    check_accept(call)
    check_output_format(call.param("_outputFormat"))
    for name in UNSUPPORTED:
        if name in call.parameters:
            raise _invalid(name, f"{name} is not supported by this server", f"{name} n'est pas pris en charge")
    request = tasks.Request(
        format="ndjson",
        types=requested_types(call, principal),
        since=since(call.param("_since")),
        url=call.request.url,
        lang=call.lang,
    )
    config = settings()
    return asynchronous.kick_off(KIND, request, JOB, config.export_hours * 60, config.export_job_timeout)


def check_role(principal: Principal | None) -> None:
    """Public health and operators only (without authentication, in development: everything)."""
    require_public_health(
        principal,
        "$export is for public health agencies and platform operators",
        "$export est réservé aux agences de santé publique et aux opérateurs de la plateforme",
    )


def check_accept(call: OperationCall) -> None:
    """The kick-off answers FHIR JSON (an OperationOutcome), as the IG's Accept header asks."""
    accept = call.request.accept_mimetypes
    if accept and not any(accept[t] for t in ("application/fhir+json", "application/json")):
        raise FhirError.of(
            406,
            "not-supported",
            "The kick-off answers application/fhir+json: send Accept: application/fhir+json",
            "Le lancement répond en application/fhir+json : envoyez Accept: application/fhir+json",
        )


def check_output_format(value: str | None) -> None:
    if value is not None and value.strip() not in OUTPUT_FORMATS:
        raise _invalid(
            "_outputFormat",
            f"_outputFormat must be one of {', '.join(sorted(OUTPUT_FORMATS))}",
            f"_outputFormat doit être l'un de {', '.join(sorted(OUTPUT_FORMATS))}",
        )


def since(value: str | None) -> datetime | None:
    """`_since` as the naive UTC datetime MongoDB compares with (millisecond precision)."""
    if value is None:
        return None
    text = value.strip()
    try:
        if not INSTANT.match(text):
            raise ValueError(text)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(
            "_since",
            "_since must be a FHIR instant with its time zone, e.g. 2026-11-01T00:00:00Z (in a URL, write + as %2B)",
            "_since doit être un instant FHIR avec son fuseau, p. ex. 2026-11-01T00:00:00Z "
            "(dans une URL, + s'écrit %2B)",
        ) from None
    moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def requested_types(call: OperationCall, principal: Principal | None) -> list[str]:
    """The `_type` list (repeated or comma-separated), each one the principal may export; or
    the principal's default."""
    values = call.parameters.get("_type") or []
    if not values:
        return default_types(principal)
    names = [name.strip() for value in values for name in str(value).split(",")]
    types = list(dict.fromkeys(names))
    for name in types:
        if not name:
            raise _invalid("_type", "_type has an empty type name", "_type contient un nom de type vide")
        if name != PSEUDONYMISED and name not in SUPPORTED_TYPES:
            raise _invalid("_type", f"Unknown type in _type: {name}", f"Type inconnu dans _type : {name}")
        if not may_export(principal, name):
            raise _invalid(
                "_type", f"Exporting {name} is not allowed to you", f"L'export de {name} ne vous est pas permis"
            )
    return types


def default_types(principal: Principal | None) -> list[str]:
    if principal is not None and principal.role == ROLE_PUBLIC_HEALTH:
        candidates: tuple[str, ...] = (PSEUDONYMISED,)
    else:
        candidates = PATIENT_DATA_TYPES
    types = [rtype for rtype in candidates if may_export(principal, rtype)]
    if not types:
        raise forbidden(
            "The token's scopes allow to read nothing $export could give",
            "Les scopes du jeton ne permettent de lire rien de ce que $export peut donner",
        )
    return types


def may_export(principal: Principal | None, rtype: str) -> bool:
    """Public health: its pseudonymised records alone; operators: any type; both within the
    token's read scopes (`system/*.read` covers PseudonymisedResult, as any type but AuditEvent)."""
    if principal is None:
        return True
    if principal.role == ROLE_PUBLIC_HEALTH and rtype != PSEUDONYMISED:
        return False
    return principal.scopes.allows(rtype, "r")


def _invalid(parameter: str, en: str, fr: str) -> FhirError:
    return FhirError.of(400, "invalid", en, fr, parameter)

"""The resource types this server supports, and the one check every incoming resource goes
through before it is written: FHIR R4 structure (fhir.resources R4B models, wire-compatible with R4
for these types; 400), then the SI-DEP profiles when enforcement is on (422), then the stored form
(phones in E.164, the current FINESS system; with the profiles off, the resource as sent)."""

from __future__ import annotations

from flask import g

from profiles.base_validation import parse_errors
from profiles.engine import has_errors, normalise_resource, validate_resource

from .context import settings
from .outcome import FhirError, Issue

SUPPORTED_TYPES = (
    "Patient",
    "ServiceRequest",
    "Specimen",
    "Observation",
    "DiagnosticReport",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Binary",
    "Subscription",
    "Communication",
    "AuditEvent",
    "CodeSystem",
    "ValueSet",
)
READ_ONLY_TYPES = ("AuditEvent",)  # written by the server itself, never by clients


def require_supported(rtype: str) -> None:
    if rtype not in SUPPORTED_TYPES:
        raise FhirError.of(
            404,
            "not-supported",
            f"Resource type '{rtype}' is not supported by this server",
            f"Le type de ressource '{rtype}' n'est pas pris en charge par ce serveur",
        )


def _relocated(issues: list[Issue], rtype: str, root: str) -> list[Issue]:
    """Issues located from `rtype` (Patient.x) moved under `root` (Bundle.entry[2].resource.x)."""
    if root == rtype:
        return issues
    for issue in issues:
        issue.expression = [
            root + e[len(rtype) :] if e.startswith(rtype) else f"{root}.{e}" for e in issue.expression
        ] or [root]
    return issues


def check_resource(
    rtype: str,
    resource: dict,
    url_id: str | None = None,
    root: str | None = None,
    in_bundle: bool = False,
    json_checked: bool = False,
) -> dict:
    """The resource as it will be stored; raises FhirError 400 (not FHIR R4) or 422 (not SI-DEP).

    `url_id`: the id in the URL of an update, which the body's id must match.
    `root`: where the resource sits in the request, for error locations.
    `in_bundle`: an entry of a transaction or batch (urn:uuid: and conditional references resolve).
    `json_checked`: the resource comes from a request body, whose FHIR JSON rules the HTTP layer
    has checked (`fhir_server.http.read_json_body`).
    """
    root = root or rtype
    body_type = resource.get("resourceType")
    if body_type != rtype:
        raise FhirError.of(
            400,
            "invalid",
            f"The resource type in the body ('{body_type}') differs from the URL ('{rtype}')",
            f"Le type de ressource du corps ('{body_type}') diffère de l'URL ('{rtype}')",
            f"{root}.resourceType",
        )
    if url_id is not None and resource.get("id") != url_id:
        raise FhirError.of(
            400,
            "invalid",
            f"The id in the body ('{resource.get('id')}') differs from the URL ('{url_id}')",
            f"L'id du corps ('{resource.get('id')}') diffère de l'URL ('{url_id}')",
            f"{root}.id",
        )
    issues = parse_errors(rtype, resource, in_bundle, json_checked)
    if issues:
        raise FhirError(400, _relocated(issues, rtype, root))
    if not settings().enforce_profiles:
        return resource  # a plain R4 server stores what it was sent
    issues = validate_resource(resource)
    if has_errors(issues):
        raise FhirError(422, _relocated([i for i in issues if i.severity in ("error", "fatal")], rtype, root))
    if issues:  # warnings (e.g. a phone number that passes the rule but looks implausible)
        g.setdefault("warnings", []).extend(_relocated(issues, rtype, root))
    return normalise_resource(resource)

"""The resource types this server supports, and the check every incoming resource goes through:
FHIR R4 structure (fhir.resources R4B models, wire-compatible with R4 for these types), then the
SI-DEP profiles when enforcement is on."""
from __future__ import annotations

from functools import lru_cache

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from .outcome import FhirError, Issue

SUPPORTED_TYPES = (
    "Patient", "ServiceRequest", "Specimen", "Observation", "DiagnosticReport", "Organization",
    "Practitioner", "PractitionerRole", "Binary", "Subscription", "Communication", "AuditEvent",
    "CodeSystem", "ValueSet",
)
READ_ONLY_TYPES = ("AuditEvent",)  # written by the server itself, never by clients (issue 4)


def require_supported(rtype: str) -> None:
    if rtype not in SUPPORTED_TYPES:
        raise FhirError.of(404, "not-supported", f"Resource type '{rtype}' is not supported by this server",
                           f"Le type de ressource '{rtype}' n'est pas pris en charge par ce serveur")


@lru_cache(maxsize=None)
def model(rtype: str):
    return get_fhir_model_class(rtype)


def fhirpath(root: str, loc: tuple) -> str:
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "__root__":
            path += f".{part}"
    return path


def structure_issues(rtype: str, resource: dict, root: str | None = None) -> list[Issue]:
    """FHIR R4 structural errors of `resource`, each located by FHIRPath."""
    try:
        model(rtype).model_validate(resource)
    except ValidationError as exc:
        return [_issue(rtype if root is None else root, error) for error in exc.errors()]
    except (ValueError, TypeError) as exc:
        return [Issue("error", "structure", str(exc), None, [root or rtype])]
    return []


def _issue(root: str, error: dict) -> Issue:
    where = fhirpath(root, tuple(error.get("loc", ())))
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return Issue("error", "structure", f"Unknown element '{where}'", f"Élément inconnu '{where}'", [where])
    if kind == "missing":
        return Issue("error", "required", f"Missing required element '{where}'",
                     f"Élément obligatoire manquant '{where}'", [where])
    message = error.get("msg", "invalid value")
    return Issue("error", "value", f"Invalid value at '{where}': {message}",
                 f"Valeur invalide pour '{where}' : {message}", [where])


def check_resource(rtype: str, resource: dict, url_id: str | None = None, root: str | None = None) -> dict:
    """The resource, checked; raises FhirError (400 for structure) otherwise.

    `url_id`: the id in the URL of an update, which the body's id must match.
    """
    root = root or rtype
    body_type = resource.get("resourceType")
    if body_type != rtype:
        raise FhirError.of(400, "invalid",
                           f"The resource type in the body ('{body_type}') differs from the URL ('{rtype}')",
                           f"Le type de ressource du corps ('{body_type}') diffère de l'URL ('{rtype}')",
                           f"{root}.resourceType")
    if url_id is not None and resource.get("id") != url_id:
        raise FhirError.of(400, "invalid",
                           f"The id in the body ('{resource.get('id')}') differs from the URL ('{url_id}')",
                           f"L'id du corps ('{resource.get('id')}') diffère de l'URL ('{url_id}')",
                           f"{root}.id")
    issues = structure_issues(rtype, resource, root)
    if issues:
        raise FhirError(400, issues)
    return resource

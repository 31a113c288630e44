"""Base FHIR R4 validation: parse with fhir.resources (R4B models) and turn pydantic errors into Issues.

The R4B models are used for R4 content (the project's pinned choice); they check structure, datatypes,
primitive formats and unknown elements. The codes of R4's required bindings on core elements
(Observation.status, ContactPoint.system...) are checked here too, from the code lists generated out of
the R4 definitions (terminology/r4/definitions.json), in both server modes; the SI-DEP profiles
add their own code lists on top.
"""
from __future__ import annotations

import re
from functools import lru_cache

from pydantic import ValidationError

from fhir_server.outcome import Issue
from terminology.r4_definitions import load as load_r4_definitions

# pydantic error type -> (FHIR issue type, French wording)
_ERROR_KINDS = {
    "missing": ("required", "élément obligatoire manquant"),
    "extra_forbidden": ("structure", "élément inconnu dans ce type de ressource"),
    "list_type": ("structure", "une liste (tableau JSON) est attendue"),
    "dict_type": ("structure", "un objet JSON est attendu"),
    "model_type": ("structure", "un objet JSON est attendu"),
    "model_attributes_type": ("structure", "un objet JSON est attendu"),
    "string_type": ("value", "une chaîne de caractères est attendue"),
    "bool_type": ("value", "un booléen est attendu"),
    "bool_parsing": ("value", "un booléen est attendu"),
    "int_type": ("value", "un entier est attendu"),
    "int_parsing": ("value", "un entier est attendu"),
    "int_from_float": ("value", "un entier est attendu"),
    "decimal_type": ("value", "un nombre décimal est attendu"),
    "decimal_parsing": ("value", "un nombre décimal est attendu"),
    "float_type": ("value", "un nombre est attendu"),
    "float_parsing": ("value", "un nombre est attendu"),
    "string_pattern_mismatch": ("value", "la valeur ne respecte pas le format FHIR"),
    "string_too_short": ("value", "la valeur est trop courte"),
    "value_error": ("value", "valeur invalide"),
    "literal_error": ("value", "valeur non autorisée"),
    "enum": ("value", "valeur non autorisée"),
}
_FHIR_NAME = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]*$")


@lru_cache(maxsize=None)
def _model_class(resource_type: str):
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, ImportError, AttributeError):
        return None


def _fhirpath(resource_type: str, loc: tuple) -> str:
    """('name', 0, 'given') -> Patient.name[0].given; drops pydantic's internal union/validator labels."""
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and _FHIR_NAME.match(part) and part != "__root__":
            path += f".{part}"
    return path


def error_to_issue(resource_type: str, error: dict) -> Issue:
    kind, fr_text = _ERROR_KINDS.get(error.get("type"), ("invalid", "contenu invalide"))
    path = _fhirpath(resource_type, tuple(error.get("loc", ())))
    message = error.get("msg", "invalid")
    return Issue("error", kind, f"{path}: {message}", f"{path} : {fr_text} ({message})", [path])


def parse_errors(resource_type: str | None, resource) -> list[Issue]:
    """[] when the resource parses as a FHIR R4 `resource_type`, else one Issue per problem."""
    if not isinstance(resource, dict):
        return [Issue("error", "structure", "A resource must be a JSON object", "Une ressource doit être un objet JSON")]
    actual = resource.get("resourceType")
    if not actual:
        return [Issue("error", "required", "resourceType is missing", "resourceType est manquant", ["resourceType"])]
    if resource_type and actual != resource_type:
        return [Issue("error", "invalid", f"resourceType is {actual}, expected {resource_type}",
                      f"resourceType vaut {actual}, {resource_type} attendu", ["resourceType"])]
    model = _model_class(actual)
    if model is None:
        return [Issue("error", "not-supported", f"Unknown resource type {actual}",
                      f"Type de ressource inconnu {actual}", ["resourceType"])]
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        errors = [e for e in exc.errors(include_url=False) if not _extension_primitive_extension(e)]
        if not errors:  # only the library gap below: check again without those elements
            return parse_errors(resource_type, _without_extension_primitive_extensions(resource))
        return [error_to_issue(actual, error) for error in errors]
    except (ValueError, TypeError) as exc:  # some model validators raise outside pydantic's wrapper
        return [Issue("error", "invalid", f"{actual}: {exc}", f"{actual} : contenu invalide ({exc})", [actual])]
    return binding_errors(actual, resource)


def binding_errors(resource_type: str, resource: dict) -> list[Issue]:
    """One Issue per code outside the code list of its element's required binding."""
    bindings = load_r4_definitions()
    issues: list[Issue] = []
    _check_bindings(resource, resource_type, resource_type, bindings, issues)
    return issues


def _check_bindings(node: dict, structure: str, path: str, bindings: dict, issues: list[Issue]) -> None:
    table = bindings["elements"].get(structure)
    if table is None:  # a contained resource of a type this server does not take
        return
    for name, value in node.items():
        rule = table.get(name)
        if rule is None:
            continue
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            where = f"{path}.{name}[{i}]" if isinstance(value, list) else f"{path}.{name}"
            if "codes" in rule:
                if isinstance(item, str) and item not in bindings["valueSets"][rule["codes"]]:
                    issues.append(_code_issue(where, item, rule["codes"]))
            elif isinstance(item, dict):
                inner = item.get("resourceType") if rule["type"] == "Resource" else rule["type"]
                if isinstance(inner, str):
                    _check_bindings(item, inner, where, bindings, issues)


def _code_issue(where: str, code: str, value_set: str) -> Issue:
    return Issue("error", "code-invalid",
                 f"{where}: '{code}' is not a code of {value_set} (required binding)",
                 f"{where} : '{code}' n'est pas un code de {value_set} (liaison obligatoire)", [where])


# fhir.resources 8.3 (R4B models) gives Extension no `_valueX` fields, although R4 allows the
# primitive extensions of an extension's value (e.g. translations in the HL7 v2 code systems).
# Those elements are validated as Extension lists on their own and then left out of the model check.
def _extension_primitive_extension(error: dict) -> bool:
    loc = error.get("loc", ())
    return (error.get("type") == "extra_forbidden" and len(loc) >= 2 and isinstance(loc[-1], str)
            and loc[-1].startswith("_value") and any(p in ("extension", "modifierExtension") for p in loc))


def _without_extension_primitive_extensions(node, inside_extension: bool = False):
    if isinstance(node, list):
        return [_without_extension_primitive_extensions(item, inside_extension) for item in node]
    if not isinstance(node, dict):
        return node
    return {key: _without_extension_primitive_extensions(value, key in ("extension", "modifierExtension"))
            for key, value in node.items()
            if not (inside_extension and key.startswith("_value") and _valid_element_extension(value))}


def _valid_element_extension(value) -> bool:
    from fhir.resources.R4B.fhirprimitiveextension import FHIRPrimitiveExtension

    try:
        FHIRPrimitiveExtension.model_validate(value)
        return True
    except (ValidationError, ValueError, TypeError):
        return False

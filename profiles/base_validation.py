"""Base FHIR R4 validation: the FHIR JSON rules, the reference grammar, then parsing with
fhir.resources (R4B models), pydantic errors turned into Issues.

The JSON rules (https://hl7.org/fhir/R4/json.html) come first, on the raw JSON: no null (but the
aligned primitive arrays `given`/`_given`), no empty object, array or string, element names only
(never `$where` or `a.b`: nothing a client sends may read as a database operator), no control
characters or unpaired surrogates, integers within 64 bits. They also carry the request limits
(string length, element count, nesting depth) when given some.

The R4B models are used for R4 content (the project's pinned choice); they check structure, datatypes,
primitive formats and unknown elements. The codes of R4's required bindings on core elements
(Observation.status, ContactPoint.system...) are checked here too, from the code lists generated out of
the R4 definitions (terminology/r4/definitions.json), in both server modes; the SI-DEP profiles
add their own code lists on top.
"""

from __future__ import annotations

import math
import re
import typing
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from functools import cache

from bson.decimal128 import Decimal128
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


@cache
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


def parse_errors(
    resource_type: str | None, resource, in_bundle: bool = False, json_checked: bool = False
) -> list[Issue]:
    """[] when the resource parses as a FHIR R4 `resource_type`, else one Issue per problem.
    `in_bundle`: the resource is an entry of a transaction or batch, where `urn:uuid:` and
    conditional references are resolved. `json_checked`: it was read from a request body, which
    has passed the FHIR JSON rules (`json_issues`) already: only its references are left to check."""
    if not isinstance(resource, dict):
        return [
            Issue("error", "structure", "A resource must be a JSON object", "Une ressource doit être un objet JSON")
        ]
    actual = resource.get("resourceType")
    if not actual:
        return [Issue("error", "required", "resourceType is missing", "resourceType est manquant", ["resourceType"])]
    if not isinstance(actual, str) or not TYPE_NAME.fullmatch(actual):
        return [
            Issue(
                "error",
                "not-supported",
                "resourceType is not a resource type name",
                "resourceType n'est pas un nom de type de ressource",
                ["resourceType"],
            )
        ]
    if json_checked:
        issues = reference_issues(resource, actual, in_bundle)
    else:
        issues = json_issues(resource, actual, references=True, in_bundle=in_bundle)
    if issues:  # the models below would only say it again less precisely (or not at all: null)
        return issues
    if resource_type and actual != resource_type:
        return [
            Issue(
                "error",
                "invalid",
                f"resourceType is {actual}, expected {resource_type}",
                f"resourceType vaut {actual}, {resource_type} attendu",
                ["resourceType"],
            )
        ]
    model = _model_class(actual)
    if model is None:
        return [
            Issue(
                "error",
                "not-supported",
                f"Unknown resource type {actual}",
                f"Type de ressource inconnu {actual}",
                ["resourceType"],
            )
        ]
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        errors = [e for e in exc.errors(include_url=False) if not _extension_primitive_extension(e)]
        if not errors:  # only the library gap below: check again without those elements
            return parse_errors(
                resource_type, _without_extension_primitive_extensions(resource), in_bundle, json_checked
            )
        return [error_to_issue(actual, error) for error in errors]
    except (ValueError, TypeError) as exc:  # some model validators raise outside pydantic's wrapper
        return [Issue("error", "invalid", f"{actual}: {exc}", f"{actual} : contenu invalide ({exc})", [actual])]
    return _json_kind_issues(model, resource, actual) + binding_errors(actual, resource)


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
    return Issue(
        "error",
        "code-invalid",
        f"{where}: '{code}' is not a code of {value_set} (required binding)",
        f"{where} : '{code}' n'est pas un code de {value_set} (liaison obligatoire)",
        [where],
    )


# -- primitives in their JSON kind -------------------------------------------------------------
# The models coerce ("yes" and 1 to a boolean, "2" to an integer, 1 to a dateTime) but the server
# stores the JSON as sent: FHIR JSON writes booleans as true/false, integers and decimals as
# numbers, every other primitive as a string, and nothing else is accepted.
_KINDS = {
    "boolean": (lambda v: isinstance(v, bool), "a boolean (true or false)", "un booléen (true ou false)"),
    "integer": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer", "un entier"),
    "decimal": (lambda v: isinstance(v, (int, float, Decimal)) and not isinstance(v, bool), "a number", "un nombre"),
    "string": (lambda v: isinstance(v, str), "a string", "une chaîne"),
}
_PYTHON_KINDS = {
    bool: "boolean",
    int: "integer",
    Decimal: "decimal",
    str: "string",
    bytes: "string",
    date: "string",
    datetime: "string",
    time: "string",
}


def _json_kind_issues(model, node: dict, path: str) -> list[Issue]:
    issues: list[Issue] = []
    stack = [(model, node, path)]
    while stack:
        model, node, path = stack.pop()
        fields = _json_fields(model)
        for key, value in node.items():
            expected = fields.get(key)
            if expected is None:
                continue
            items = (
                [(v, f"{path}.{key}[{i}]") for i, v in enumerate(value)]
                if isinstance(value, list)
                else [(value, f"{path}.{key}")]
            )
            for item, where in items:
                if isinstance(expected, str) and expected in _KINDS:
                    fits, en, fr = _KINDS[expected]
                    if item is not None and not fits(item):
                        issues.append(
                            Issue(
                                "error",
                                "value",
                                f"{where}: FHIR JSON writes this element as {en}",
                                f"{where} : le JSON FHIR écrit cet élément comme {fr}",
                                [where],
                            )
                        )
                elif isinstance(item, dict):
                    child = _model_class(item.get("resourceType")) if expected == "resource" else expected
                    if child is not None and isinstance(item.get("resourceType", ""), str):
                        stack.append((child, item, where))
    return issues


@cache
def _json_fields(model) -> dict:
    """JSON name -> what its values are: a kind of _KINDS, a model class, or "resource"."""
    return {field.alias or name: _expected(field.annotation) for name, field in model.model_fields.items()}


def _expected(annotation):
    while typing.get_origin(annotation) is not None:  # Optional[List[Annotated[date, Date()]]] -> date
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if not args:
            return None
        annotation = args[0]
    if annotation in _PYTHON_KINDS:
        return _PYTHON_KINDS[annotation]
    if getattr(annotation, "__name__", "") == "ResourceType":
        return "resource"
    klass = getattr(annotation, "get_model_klass", None)
    return klass() if klass else None


# fhir.resources 8.3 (R4B models) gives Extension no `_valueX` fields, although R4 allows the
# primitive extensions of an extension's value (e.g. translations in the HL7 v2 code systems).
# Those elements are validated as Extension lists on their own and then left out of the model check.
def _extension_primitive_extension(error: dict) -> bool:
    loc = error.get("loc", ())
    return (
        error.get("type") == "extra_forbidden"
        and len(loc) >= 2
        and isinstance(loc[-1], str)
        and loc[-1].startswith("_value")
        and any(p in ("extension", "modifierExtension") for p in loc)
    )


def _without_extension_primitive_extensions(node, inside_extension: bool = False):
    if isinstance(node, list):
        return [_without_extension_primitive_extensions(item, inside_extension) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: _without_extension_primitive_extensions(value, key in ("extension", "modifierExtension"))
        for key, value in node.items()
        if not (inside_extension and key.startswith("_value") and _valid_element_extension(value))
    }


def _valid_element_extension(value) -> bool:
    from fhir.resources.R4B.fhirprimitiveextension import FHIRPrimitiveExtension

    try:
        FHIRPrimitiveExtension.model_validate(value)
        return True
    except (ValidationError, ValueError, TypeError):
        return False


# -- references ------------------------------------------------------------------------------
# The one grammar of Reference.reference on this server: writes refuse any other form, and search
# extraction, profile checks and authorisation read references through these functions.
_TYPE = r"[A-Z][A-Za-z]{1,63}"
_ID = r"[A-Za-z0-9\-.]{1,64}"  # FHIR id
TYPE_NAME = re.compile(_TYPE)  # a resource type's name
_RELATIVE = re.compile(rf"({_TYPE})/({_ID})(?:/_history/{_ID})?")
_ABSOLUTE = re.compile(rf"https?://[^/?#\s]+(?:/[^/?#\s]+)*?/({_TYPE})/{_ID}(?:/_history/{_ID})?")
_CONTAINED = re.compile(rf"#(?:{_ID})?")
_BUNDLE_LOCAL = re.compile(rf"urn:uuid:{_ID}|urn:oid:[0-2](?:\.[0-9]+)+")
_CONDITIONAL = re.compile(rf"({_TYPE})\?[^#\s]*=[^#\s]*")


def relative_reference(text: str) -> tuple[str, str] | None:
    """('Patient', '1') for 'Patient/1' or 'Patient/1/_history/2'; None for any other form."""
    match = _RELATIVE.fullmatch(text)
    return (match[1], match[2]) if match else None


def reference_type(text: str) -> str | None:
    """The resource type a literal or conditional reference names ('Patient/1',
    'http://x/fhir/Patient/1', 'Patient?identifier=...'); None for urn:, #contained, or no type."""
    match = _RELATIVE.fullmatch(text) or _ABSOLUTE.fullmatch(text) or _CONDITIONAL.fullmatch(text)
    return match[1] if match else None


def reference_problem(text: str, in_bundle: bool) -> tuple[str, str] | None:
    """(English, French) of what is wrong with a Reference.reference, None when it is accepted."""
    if _RELATIVE.fullmatch(text) or _ABSOLUTE.fullmatch(text) or _CONTAINED.fullmatch(text):
        return None
    if _BUNDLE_LOCAL.fullmatch(text) or _CONDITIONAL.fullmatch(text):
        if in_bundle:
            return None
        return (
            f"'{_shown(text)}' is resolved only inside a transaction or batch Bundle",
            f"« {_shown(text)} » ne se résout que dans un Bundle transaction ou batch",
        )
    return (
        f"'{_shown(text)}' is not a reference this server accepts: Type/id, Type/id/_history/version, "
        "an absolute URL ending so, #contained, or inside a Bundle urn:uuid:, urn:oid: or Type?criteria",
        f"« {_shown(text)} » n'est pas une référence acceptée : Type/id, Type/id/_history/version, "
        "une URL absolue qui finit ainsi, #contenu, ou dans un Bundle urn:uuid:, urn:oid: ou Type?critères",
    )


def _shown(text: str, limit: int = 100) -> str:
    """A client's text as quoted back in a message: bounded, control characters escaped."""
    text = text if len(text) <= limit else text[:limit] + "…"
    return text.encode("unicode_escape", "backslashreplace").decode("ascii") if not text.isprintable() else text


# -- FHIR JSON rules and request limits -------------------------------------------------------
@dataclass(frozen=True)
class JsonLimits:
    """What one request body may hold (fhir_server.settings: MAX_STRING_LENGTH, MAX_ELEMENTS, MAX_DEPTH)."""

    max_string_length: int
    max_elements: int
    max_depth: int


TOO_COSTLY = "too-costly"  # the issue code of a limit: the HTTP layer answers 413
MAX_ISSUES = 100  # issues listed for one body at most (a body of nulls needs no 200,000 of them)
_ELEMENT_NAME = re.compile(r"_?[A-Za-z][A-Za-z0-9_]*")
_FORBIDDEN_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
_INT64 = (-(2**63), 2**63 - 1)
_EMPTY = {dict: ("object", "un objet vide"), list: ("array", "un tableau vide"), str: ("string", "une chaîne vide")}


def json_issues(
    body, root: str, limits: JsonLimits | None = None, references: bool = False, in_bundle: bool = False
) -> list[Issue]:
    """Where `body` breaks the FHIR JSON rules (module docstring) or `limits` (issues coded
    too-costly; the walk stops at the first), located by FHIRPath from `root`. With `references`,
    each Reference.reference is checked against the grammar (urn:uuid: and conditional forms
    accepted `in_bundle`, or anywhere inside a Bundle resource)."""
    issues: list[Issue] = []
    stack = [(body, root, 0, in_bundle)]
    count = 0
    while stack and len(issues) < MAX_ISSUES:
        node, path, depth, bundled = stack.pop()
        count += 1
        if limits and count > limits.max_elements:
            return [
                _limit(
                    root,
                    f"The body holds more than {limits.max_elements} JSON values, the limit",
                    f"Le corps contient plus de {limits.max_elements} valeurs JSON, la limite",
                )
            ]
        if isinstance(node, (dict, list)) and limits and depth >= limits.max_depth:
            return [
                _limit(
                    path,
                    f"{path}: JSON nested deeper than {limits.max_depth} levels, the limit",
                    f"{path} : JSON imbriqué sur plus de {limits.max_depth} niveaux, la limite",
                )
            ]
        if isinstance(node, dict):
            bundled = bundled or node.get("resourceType") == "Bundle"
            for key, value in node.items():
                if not isinstance(key, str) or not _ELEMENT_NAME.fullmatch(key):
                    issues.append(_key_issue(path, key))
                    continue
                if references and key == "reference" and isinstance(value, str):
                    issues += _reference_issue(path, value, bundled)
                if isinstance(value, list):
                    issues += _array_nulls(node, key, value, path)
                    stack.extend(
                        (item, f"{path}.{key}[{i}]", depth + 2, bundled)
                        for i, item in enumerate(value)
                        if item is not None
                    )
                    count += 1
                    if not value:
                        issues.append(_empty(f"{path}.{key}", list))
                else:
                    stack.append((value, f"{path}.{key}", depth + 1, bundled))
        elif isinstance(node, list):  # an array in an array: never FHIR, checked all the same
            issues += [_null(f"{path}[{i}]") for i, item in enumerate(node) if item is None]
            stack.extend((item, f"{path}[{i}]", depth + 1, bundled) for i, item in enumerate(node) if item is not None)
            if not node:
                issues.append(_empty(path, list))
        else:
            problem = _scalar_issue(node, path, limits)
            if problem is not None:
                if problem.code == TOO_COSTLY:
                    return [problem]
                issues.append(problem)
        if isinstance(node, dict) and not node:
            issues.append(_empty(path, dict))
    return issues[:MAX_ISSUES]


def reference_issues(body, root: str, in_bundle: bool = False) -> list[Issue]:
    """The reference check of `json_issues` alone, for a body that has passed the rest of it
    already (every request body does, as the HTTP layer reads it)."""
    issues: list[Issue] = []
    stack = [(body, root, in_bundle)]
    while stack and len(issues) < MAX_ISSUES:
        node, path, bundled = stack.pop()
        if isinstance(node, list):
            stack.extend(
                (item, f"{path}[{i}]", bundled) for i, item in enumerate(node) if isinstance(item, (dict, list))
            )
            continue
        bundled = bundled or node.get("resourceType") == "Bundle"
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                stack.append((value, f"{path}.{key}", bundled))
            elif key == "reference" and isinstance(value, str):
                issues += _reference_issue(path, value, bundled)
    return issues[:MAX_ISSUES]


def _reference_issue(path: str, value: str, bundled: bool) -> list[Issue]:
    problem = reference_problem(value, bundled)
    if not problem:
        return []
    return [
        Issue(
            "error",
            "value",
            f"{path}.reference: {problem[0]}",
            f"{path}.reference : {problem[1]}",
            [f"{path}.reference"],
        )
    ]


def _array_nulls(node: dict, key: str, items: list, path: str) -> list[Issue]:
    """null is allowed in an array only where its primitive twin (`given` / `_given`) has a value."""
    twin = node.get(key[1:] if key.startswith("_") else f"_{key}")
    aligned = isinstance(twin, list) and len(twin) == len(items)
    return [
        _null(f"{path}.{key}[{i}]")
        for i, item in enumerate(items)
        if item is None and not (aligned and twin[i] is not None)
    ]


def _scalar_issue(value, path: str, limits: JsonLimits | None) -> Issue | None:
    if value is None:
        return _null(path)
    if isinstance(value, str):
        if limits and len(value) > limits.max_string_length:
            return _limit(
                path,
                f"{path}: a string of {len(value)} characters, over the limit of {limits.max_string_length}",
                f"{path} : une chaîne de {len(value)} caractères, au-delà de la limite de {limits.max_string_length}",
            )
        if not value:
            return _empty(path, str)
        if _FORBIDDEN_CHARACTERS.search(value):
            return Issue(
                "error",
                "value",
                f"{path}: control characters and unpaired surrogates are not allowed",
                f"{path} : caractères de contrôle et demi-paires de substitution interdits",
                [path],
            )
    elif isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
        return _out_of_range(path)
    elif isinstance(value, float) and not math.isfinite(value):
        return _out_of_range(path)
    elif isinstance(value, Decimal):
        try:
            if not value.is_finite():
                return _out_of_range(path)
            Decimal128(value)
        except Exception:  # noqa: BLE001 - bson raises several kinds for what Decimal128 cannot hold
            return _out_of_range(path)
    return None


def _null(path: str) -> Issue:
    return Issue(
        "error",
        "structure",
        f"{path}: null is not allowed in FHIR JSON (leave the element out)",
        f"{path} : null n'est pas permis en JSON FHIR (omettre l'élément)",
        [path],
    )


def _empty(path: str, kind: type) -> Issue:
    en, fr = _EMPTY[kind]
    return Issue(
        "error",
        "structure",
        f"{path}: an empty {en} is not allowed in FHIR JSON (leave the element out)",
        f"{path} : {fr} n'est pas permis en JSON FHIR (omettre l'élément)",
        [path],
    )


def _key_issue(path: str, key) -> Issue:
    shown = _shown(str(key), 64)
    return Issue(
        "error",
        "structure",
        f"{path}: '{shown}' is not a FHIR element name",
        f"{path} : « {shown} » n'est pas un nom d'élément FHIR",
        [path],
    )


def _out_of_range(path: str) -> Issue:
    return Issue(
        "error",
        "value",
        f"{path}: number out of the range this server stores",
        f"{path} : nombre hors de l'intervalle que ce serveur enregistre",
        [path],
    )


def _limit(path: str, en: str, fr: str) -> Issue:
    return Issue("error", TOO_COSTLY, en, fr, [path])

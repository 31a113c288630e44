"""$operations: [base]/$op, [base]/[type]/$op, [base]/[type]/[id]/$op, dispatched to the modules
registered in operations/."""

from __future__ import annotations

from decimal import Decimal

from flask import Response, request

from operations import OperationCall, find

from ..context import store
from ..http import fhir_response, lang, read_json_body
from ..outcome import FhirError
from ..resources import require_supported


def system_operation(name: str):
    return _dispatch(name, "system", None, None)


def type_operation(rtype: str, name: str):
    require_supported(rtype)
    return _dispatch(name, "type", rtype, None)


def instance_operation(rtype: str, rid: str, name: str):
    require_supported(rtype)
    return _dispatch(name, "instance", rtype, rid)


def _dispatch(name: str, level: str, rtype: str | None, rid: str | None):
    op = find(name, level, rtype)
    if op is None:
        where = f"{rtype or ''}{'/' + rid if rid else ''}"
        raise FhirError.of(
            404,
            "not-supported",
            f"Operation ${name} is not supported on {where or 'the system'}",
            f"L'opération ${name} n'est pas prise en charge sur {where or 'le système'}",
        )
    if op.affects_state and request.method != "POST":
        raise FhirError.of(
            405, "not-supported", f"${name} changes data: use POST", f"${name} modifie des données : utilisez POST"
        )
    body = _body()
    params = _parameters(body)
    _check_types(op, params)
    call = OperationCall(name, level, rtype, rid, params, body, store(), request, lang())
    result = op.handler(call)
    return result if isinstance(result, Response) else fhir_response(result)


def _body() -> dict | None:
    if request.method != "POST" or not request.get_data(cache=True):
        return None
    return read_json_body()


def _parameters(body: dict | None) -> dict[str, list]:
    """Query parameters and Parameters.parameter values, merged; a non-Parameters body counts as
    the `resource` parameter (as $validate takes it)."""
    params: dict[str, list] = {}
    for key, value in request.args.items(multi=True):
        params.setdefault(key, []).append(value)
    if body and body.get("resourceType") == "Parameters":
        parts = body.get("parameter", [])
        if not isinstance(parts, list) or not all(
            isinstance(p, dict) and isinstance(p.get("name", ""), str) for p in parts
        ):
            raise FhirError.of(
                400,
                "structure",
                "Parameters.parameter must be an array of objects with a name",
                "Parameters.parameter doit être un tableau d'objets nommés",
                "Parameters.parameter",
            )
        for part in parts:
            value = part.get("resource")
            if value is None:
                value = next((v for k, v in part.items() if k.startswith("value")), part.get("part"))
            params.setdefault(part.get("name", ""), []).append(value)
    elif body:
        params.setdefault("resource", []).append(body)
    return params


# FHIR primitive types whose JSON value is a number (the query string gives every value as text)
_NUMBERS = {"integer": int, "positiveInt": int, "unsignedInt": int, "decimal": (int, float, Decimal)}


def _check_types(op, params: dict[str, list]) -> None:
    """Each declared input parameter with a value of its type's JSON kind, so that handlers read
    them without checking again: text (a boolean, a number where the type is one) for a primitive;
    a JSON object, which only a Parameters body carries, for a datatype or a resource (Coding...)."""
    for declared in op.parameters:
        name, fhir_type = declared["name"], declared.get("type", "string")
        if declared.get("use") != "in" or name not in params or all(_fits(v, fhir_type) for v in params[name]):
            continue
        kind = (
            ("a JSON object (in a Parameters body)", "un objet JSON (dans un corps Parameters)")
            if fhir_type[:1].isupper()
            else (f"a {fhir_type}", f"de type {fhir_type}")
        )
        raise FhirError.of(
            400,
            "invalid",
            f"Parameter '{name}' of ${op.name} must be {kind[0]}",
            f"Le paramètre « {name} » de ${op.name} doit être {kind[1]}",
            name,
        )


def _fits(value, fhir_type: str) -> bool:
    if fhir_type[:1].isupper():
        return isinstance(value, dict)
    if isinstance(value, bool):
        return fhir_type == "boolean"
    return isinstance(value, (str, _NUMBERS.get(fhir_type, str)))

"""$operations: [base]/$op, [base]/[type]/$op, [base]/[type]/[id]/$op, dispatched to the modules
registered in operations/."""
from __future__ import annotations

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
        raise FhirError.of(404, "not-supported", f"Operation ${name} is not supported on {where or 'the system'}",
                           f"L'opération ${name} n'est pas prise en charge sur {where or 'le système'}")
    if op.affects_state and request.method != "POST":
        raise FhirError.of(405, "not-supported", f"${name} changes data: use POST",
                           f"${name} modifie des données : utilisez POST")
    body = _body()
    call = OperationCall(name, level, rtype, rid, _parameters(body), body, store(), request, lang())
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
        for part in body.get("parameter", []):
            value = part.get("resource")
            if value is None:
                value = next((v for k, v in part.items() if k.startswith("value")), part.get("part"))
            params.setdefault(part.get("name", ""), []).append(value)
    elif body:
        params.setdefault("resource", []).append(body)
    return params

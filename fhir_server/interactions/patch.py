"""patch: PATCH [base]/[type]/[id] with a JSON Patch document (RFC 6902,
application/json-patch+json), and conditional patch PATCH [base]/[type]?criteria.

The patch is applied to the current version inside the unit of work, so a concurrent writer makes
it start again from the newer version; what it gives is then an update like any other: the same
checks (check_resource), the same write hooks (update_resource), If-Match and Prefer: return.
A patch document that is not one is 400; a valid one that cannot be applied to this resource (a
failed `test`, a path that is not there, a change of id or resourceType) is 422, as RFC 5789 says.
"""

from __future__ import annotations

import copy

import jsonpatch
from flask import g, request
from jsonpointer import JsonPointer, JsonPointerException

from ..context import store
from ..http import parse_etag, read_json, written
from ..outcome import FhirError
from ..resources import check_resource, require_supported
from ..storage import Record, UnitOfWork
from ..subscriptions import as_shown
from .conditional import criteria_pairs, matches, several
from .update import update_resource


def patch(rtype: str, rid: str):
    require_supported(rtype)
    operations = read_patch_document()
    if_match = parse_etag(request.headers.get("If-Match"))
    record, status = store().run(lambda uow: patch_resource(uow, rtype, rid, operations, if_match))
    return written(record, status)


def conditional_patch(rtype: str):
    require_supported(rtype)
    criteria = request.query_string.decode()
    operations = read_patch_document()
    if_match = parse_etag(request.headers.get("If-Match"))
    record, status = store().run(lambda uow: conditional_patch_resource(uow, rtype, criteria, operations, if_match))
    return written(record, status)


def conditional_patch_resource(
    uow: UnitOfWork, rtype: str, criteria: str, operations: list[dict], if_match: int | None = None
) -> tuple[Record, int]:
    found = matches(uow, rtype, criteria_pairs(criteria))
    if len(found) > 1:
        raise several(rtype, criteria)
    if not found:
        raise FhirError.of(
            404,
            "not-found",
            f"No {rtype} matches {rtype}?{criteria}",
            f"Aucune ressource {rtype} ne correspond à {rtype}?{criteria}",
        )
    return patch_resource(uow, rtype, found[0], operations, if_match)


def patch_resource(
    uow: UnitOfWork, rtype: str, rid: str, operations: list[dict], if_match: int | None = None
) -> tuple[Record, int]:
    current = uow.read(rtype, rid)  # another organisation's is refused before its content can show in an error
    # a patch works on what a read shows: a `test` of a Subscription's header would reveal its secret
    patched = apply_patch(rtype, as_shown(current.resource), operations)
    g.pop("warnings", None)  # a retried unit of work checks again: warnings are not repeated
    resource = check_resource(rtype, patched, url_id=rid)
    return update_resource(uow, rtype, rid, resource, if_match)


def read_patch_document() -> list[dict]:
    """The body as a list of RFC 6902 operations, or 400."""
    operations = read_json()
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise FhirError.of(
            400,
            "structure",
            "A JSON Patch is an array of operation objects (RFC 6902)",
            "Un JSON Patch est un tableau d'objets opération (RFC 6902)",
        )
    return operations


def apply_patch(rtype: str, resource: dict, operations: list[dict]) -> dict:
    """`resource` with the operations applied one by one, so that an error names its operation."""
    document = copy.deepcopy(resource)
    for index, operation in enumerate(operations):
        where = f"operation {index} ({operation.get('op')} {operation.get('path')})"
        step = _operation(where, operation)
        try:
            document = step.apply(document)
        except jsonpatch.InvalidJsonPatch as exc:  # members the library only reads when applying
            raise _bad_document(where, exc) from None
        except jsonpatch.JsonPatchTestFailed:  # its message quotes the stored value: not repeated
            raise _not_applicable(
                where, "the value there is not the tested one", "la valeur présente n'est pas celle testée"
            ) from None
        except (jsonpatch.JsonPatchConflict, JsonPointerException, TypeError, KeyError, IndexError) as exc:
            raise _not_applicable(where, str(exc), str(exc)) from None
    if not isinstance(document, dict):
        raise _not_applicable(
            "the patch",
            "it replaces the whole resource by a non-object",
            "il remplace la ressource entière par autre chose qu'un objet",
        )
    for element in ("resourceType", "id"):
        if document.get(element) != resource.get(element):
            raise _not_applicable(
                "the patch",
                f"it changes {element}, which a patch may not change",
                f"il modifie {element}, qu'un patch ne peut pas modifier",
                f"{rtype}.{element}",
            )
    return document


def _operation(where: str, operation: dict) -> jsonpatch.JsonPatch:
    """One operation, its members and JSON pointers checked (400 when it is not RFC 6902)."""
    try:
        for member in ("path", "from"):
            if isinstance(operation.get(member), str):
                JsonPointer(operation[member])
        return jsonpatch.JsonPatch([operation])
    except (jsonpatch.InvalidJsonPatch, JsonPointerException, TypeError, ValueError, AttributeError) as exc:
        raise _bad_document(where, exc) from None


def _bad_document(where: str, exc: Exception) -> FhirError:
    return FhirError.of(
        400,
        "structure",
        f"JSON Patch {where} is not a valid RFC 6902 operation: {exc}",
        f"L'opération JSON Patch {where} n'est pas une opération RFC 6902 valide : {exc}",
    )


def _not_applicable(where: str, en: str, fr: str, expression: str | None = None) -> FhirError:
    return FhirError.of(
        422,
        "processing",
        f"JSON Patch {where} cannot be applied: {en}",
        f"JSON Patch {where} ne peut pas être appliqué : {fr}",
        expression,
    )

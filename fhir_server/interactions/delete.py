"""delete: DELETE [base]/[type]/[id], and conditional delete DELETE [base]/[type]?criteria.

A deleted resource reads 410 Gone; its history keeps every version and the deletion."""

from __future__ import annotations

from flask import request

from ..context import store
from ..http import fhir_response
from ..resources import require_supported
from ..storage import Record, UnitOfWork
from .conditional import criteria_pairs, matches, several
from .write_hooks import after_delete


def delete_resource(uow: UnitOfWork, rtype: str, rid: str) -> Record | None:
    record = uow.delete(rtype, rid)
    if record is not None:
        after_delete(uow, record)
    return record


def conditional_delete_resource(uow: UnitOfWork, rtype: str, criteria: str) -> Record | None:
    found = matches(uow, rtype, criteria_pairs(criteria))
    if len(found) > 1:
        raise several(rtype, criteria)
    return delete_resource(uow, rtype, found[0]) if found else None


def _deleted(record: Record | None):
    return fhir_response(None, 204, {"ETag": record.etag} if record else {})


def delete(rtype: str, rid: str):
    require_supported(rtype)
    return _deleted(store().run(lambda uow: delete_resource(uow, rtype, rid)))


def conditional_delete(rtype: str):
    require_supported(rtype)
    criteria = request.query_string.decode()
    return _deleted(store().run(lambda uow: conditional_delete_resource(uow, rtype, criteria)))

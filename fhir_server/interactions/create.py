"""create: POST [base]/[type], with conditional create (If-None-Exist)."""

from __future__ import annotations

from flask import request

from ..context import store
from ..http import read_json_body, written
from ..resources import check_resource, require_supported
from ..storage import Record, UnitOfWork
from .conditional import claim_key, criteria_pairs, matches, several
from .update import update_resource
from .write_hooks import after_write, existing_match, extra_fields, prepared


def create_resource(
    uow: UnitOfWork, rtype: str, resource: dict, if_none_exist: str | None = None, rid: str | None = None
) -> tuple[Record, int]:
    """(record, 201) when created; (the existing record, 200) when If-None-Exist matched one;
    (the updated record, 200) when it is a resource already known (e.g. the same patient)."""
    if rid is None and not if_none_exist:
        known = existing_match(uow, rtype, resource)
        if known:
            return update_resource(uow, rtype, known, resource)
    if if_none_exist:
        pairs = criteria_pairs(if_none_exist)
        found = matches(uow, rtype, pairs)
        if len(found) > 1:
            raise several(rtype, if_none_exist)
        if found:
            return uow.current(rtype, found[0]), 200
        rid = rid or uow.new_id(rtype)
        uow.claim(rtype, rid, claim_key(rtype, pairs))
    rid = rid or uow.new_id(rtype)
    resource = prepared(uow, rtype, rid, resource)
    record, previous = uow.put(rtype, rid, resource, method="POST", fields=extra_fields(rtype, resource))
    after_write(uow, record, previous)
    return record, 201


def create(rtype: str):
    require_supported(rtype)
    resource = check_resource(rtype, read_json_body(), json_checked=True)
    if_none_exist = request.headers.get("If-None-Exist")
    record, status = store().run(lambda uow: create_resource(uow, rtype, resource, if_none_exist))
    return written(record, status)

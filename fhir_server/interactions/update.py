"""update: PUT [base]/[type]/[id] (create-on-update with a client id), and conditional update
PUT [base]/[type]?criteria."""

from __future__ import annotations

from flask import request

from ..context import store
from ..http import parse_etag, read_json_body, written
from ..outcome import FhirError
from ..resources import check_resource, require_supported
from ..storage import Record, UnitOfWork
from .conditional import claim_key, criteria_pairs, matches, several
from .write_hooks import after_write, extra_fields, prepared


def update_resource(
    uow: UnitOfWork, rtype: str, rid: str, resource: dict, if_match: int | None = None
) -> tuple[Record, int]:
    resource = prepared(uow, rtype, rid, resource)
    record, previous = uow.put(rtype, rid, resource, if_match=if_match, fields=extra_fields(rtype, resource))
    after_write(uow, record, previous)
    return record, 201 if previous is None or previous.deleted else 200


def conditional_update_resource(
    uow: UnitOfWork, rtype: str, criteria: str, resource: dict, if_match: int | None = None
) -> tuple[Record, int]:
    pairs = criteria_pairs(criteria)
    found = matches(uow, rtype, pairs)
    if len(found) > 1:
        raise several(rtype, criteria)
    body_id = resource.get("id")
    if found:
        if body_id and body_id != found[0]:
            raise FhirError.of(
                400,
                "invalid",
                f"The id in the body ('{body_id}') is not the matched resource ({found[0]})",
                f"L'id du corps ('{body_id}') n'est pas celui de la ressource trouvée ({found[0]})",
                f"{rtype}.id",
            )
        return update_resource(uow, rtype, found[0], resource, if_match)
    rid = body_id or uow.new_id(rtype)
    uow.claim(rtype, rid, claim_key(rtype, pairs))
    return update_resource(uow, rtype, rid, resource, if_match)


def update(rtype: str, rid: str):
    require_supported(rtype)
    resource = check_resource(rtype, read_json_body(), url_id=rid, json_checked=True)
    if_match = parse_etag(request.headers.get("If-Match"))
    record, status = store().run(lambda uow: update_resource(uow, rtype, rid, resource, if_match))
    return written(record, status)


def conditional_update(rtype: str):
    require_supported(rtype)
    criteria = request.query_string.decode()
    resource = check_resource(rtype, read_json_body(), json_checked=True)
    if_match = parse_etag(request.headers.get("If-Match"))
    record, status = store().run(lambda uow: conditional_update_resource(uow, rtype, criteria, resource, if_match))
    return written(record, status)

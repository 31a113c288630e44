"""URL rules of the FHIR RESTful API, each pointing at its interaction module."""

from __future__ import annotations

from flask_smorest import Blueprint

from . import asynchronous
from .interactions import (
    capabilities,
    create,
    delete,
    history,
    operation,
    patch,
    read,
    search,
    transaction,
    update,
    vread,
)

RULES = [
    ("/metadata", "capabilities", capabilities.capabilities, ["GET"]),
    ("/", "transaction", transaction.transaction_or_batch, ["POST"]),
    ("/_history", "history-system", history.system_history, ["GET"]),
    ("/$<name>", "operation-system", operation.system_operation, ["GET", "POST"]),
    # asynchronous requests' status and results; the task id is no public variable (logs show `*`)
    ("/_async/<task_id>", "async-status", asynchronous.status, ["GET"]),
    ("/_async/<task_id>", "async-cancel", asynchronous.cancel, ["DELETE"]),
    ("/_async/<task_id>", "async-other", asynchronous.not_allowed, ["POST", "PUT", "PATCH"]),
    # a bulk $export's files (the file's name is no public variable either: logs show `*/*`)
    ("/_async/<task_id>/<file_name>", "async-file", asynchronous.download, ["GET"]),
    ("/<rtype>", "search-type", search.search, ["GET"]),
    ("/<rtype>", "create", create.create, ["POST"]),
    ("/<rtype>", "conditional-update", update.conditional_update, ["PUT"]),
    ("/<rtype>", "conditional-delete", delete.conditional_delete, ["DELETE"]),
    ("/<rtype>", "conditional-patch", patch.conditional_patch, ["PATCH"]),
    ("/<rtype>/_search", "search-post", search.search, ["POST"]),
    ("/<rtype>/_history", "history-type", history.type_history, ["GET"]),
    ("/<rtype>/$<name>", "operation-type", operation.type_operation, ["GET", "POST"]),
    ("/<rtype>/<rid>", "read", read.read, ["GET"]),
    ("/<rtype>/<rid>", "update", update.update, ["PUT"]),
    ("/<rtype>/<rid>", "delete", delete.delete, ["DELETE"]),
    ("/<rtype>/<rid>", "patch", patch.patch, ["PATCH"]),
    ("/<rtype>/<rid>/_history", "history-instance", history.instance_history, ["GET"]),
    ("/<rtype>/<rid>/_history/<vid>", "vread", vread.vread, ["GET"]),
    ("/<rtype>/<rid>/$<name>", "operation-instance", operation.instance_operation, ["GET", "POST"]),
]


def fhir_blueprint() -> Blueprint:
    blueprint = Blueprint(
        "fhir", __name__, url_prefix="/fhir", description="FHIR R4 RESTful API (application/fhir+json)"
    )
    for rule, endpoint, view, methods in RULES:
        # [base] is posted to without a trailing slash by most clients: no redirect for it
        blueprint.add_url_rule(rule, endpoint, view, methods=methods, strict_slashes=rule != "/")
    return blueprint

"""AuditEvents for the web pages that show or write patient data, made by the API's own audit
code (fhir_server.auth.audit.build_event) from the FHIR content the page was built from: the same
coding, agents (the user, their organisation), entities (the patients and resources concerned,
the query of a search) and outcome as the same access over the API."""

from __future__ import annotations

import logging

import orjson
from flask import Response, current_app, g

from ..auth import audit as api_audit
from ..outcome import FhirError, operation_outcome

log = logging.getLogger(__name__)


def record(interaction: str, rtype: str | None, body: dict | None, status: int = 200) -> None:
    """Queue the AuditEvent of a page: `interaction` as the API names it (read, search-type,
    transaction ...), `body` the FHIR content shown or the transaction-response written."""
    audit_log = current_app.extensions.get("sidep.audit")
    if audit_log is None:
        return
    principal = g.get("principal")
    response = Response(
        orjson.dumps(body) if body is not None else b"", status=status, mimetype="application/fhir+json"
    )
    try:
        event = api_audit.build_event(interaction, rtype, response, principal)
        event["source"]["site"] = "SI-DEP web"
        audit_log.record(event, [principal.owner_key] if principal and principal.owner_key else None)
    except Exception:  # noqa: BLE001 - as the API does: a failure to audit is logged, loudly
        log.exception("could not audit the web page %s", interaction)


def refused(interaction: str, rtype: str | None, error: FhirError) -> None:
    record(interaction, rtype, operation_outcome(error.issues, "fr"), error.status)

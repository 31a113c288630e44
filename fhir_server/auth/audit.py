"""An AuditEvent for every access to patient data: who (client or user, its organisation), what
(the patients concerned and the resources, or the query), when, from where, and the outcome —
refused accesses included. Written by one after-interaction interceptor, through the buffered
audit log (fhir_server.storage.audit), so a request does not wait for it.

Coding (FHIR R4 AuditEvent, DICOM audit conventions): type `rest`; subtype the FHIR restful
interaction (read, vread, history-instance, search-type, create, update, delete, transaction,
batch, operation ...); action C R U D or E (searches, transactions, operations); outcome 0
(success), 4 (minor failure: the request was wrong or found nothing), 8 (serious failure: access
refused — 401, 403, or patient data of another organisation, which the client is told is not
known — or a server error).
"""

from __future__ import annotations

import base64
import logging

import orjson
from flask import Response, current_app, g, request

from profiles.validators import FINESS, RPPS

from ..search.dates import instant, utc_now
from .policy import interaction
from .principal import Principal

log = logging.getLogger(__name__)

AUDITED_TYPES = frozenset(
    {"Patient", "ServiceRequest", "Specimen", "Observation", "DiagnosticReport", "Communication", "Binary"}
)
# audited whatever they are about (a bulk export's file holds every organisation's data)
SYSTEM_LEVEL = frozenset({"transaction", "history-system", "async-file"})
SUBTYPE = {
    "read": "read",
    "vread": "vread",
    "history-instance": "history-instance",
    "history-type": "history-type",
    "history-system": "history-system",
    "search-type": "search-type",
    "search-post": "search-type",
    "create": "create",
    "update": "update",
    "conditional-update": "update",
    "delete": "delete",
    "conditional-delete": "delete",
    "patch": "patch",
    "conditional-patch": "patch",
    "operation-instance": "operation",
    "operation-type": "operation",
    "operation-system": "operation",
    "async-status": "operation",  # the result of an operation asked for asynchronously
    "async-file": "operation",  # a file of a bulk $export
}
ACTION = {
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "history-type": "R",
    "history-system": "R",
    "search-type": "E",
    "search-post": "E",
    "create": "C",
    "update": "U",
    "conditional-update": "U",
    "delete": "D",
    "conditional-delete": "D",
    "patch": "U",
    "conditional-patch": "U",
    "transaction": "E",
    "batch": "E",
    "operation-instance": "E",
    "operation-type": "E",
    "operation-system": "E",
    "async-status": "R",
    "async-file": "R",
}
MAX_ENTITIES = 100
# What the client was told is "not known" (what it may not see answers as what does not exist);
# the audit log says what happened.
REFUSED = "Access refused: the resource does not belong to the client's organisation"

EVENT_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "RESTful Operation",
}
INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
CLIENT_SYSTEM = "https://sidep.example.fr/oauth/client"
USER_SYSTEM = "https://sidep.example.fr/user"


def outcome_code(status: int) -> str:
    if status < 400:
        return "0"
    if status in (401, 403) or status >= 500:
        return "8"
    return "4"


def audited(endpoint: str, rtype: str | None) -> bool:
    return (
        endpoint in SYSTEM_LEVEL
        or (rtype in AUDITED_TYPES and endpoint in SUBTYPE)
        or (endpoint == "operation-system" and _audited_operation())
    )


def _audited_operation() -> bool:
    """A system operation that reads patient data, even as counts (`$aggregates`), says so."""
    from operations import find

    op = find((request.view_args or {}).get("name", ""), "system", None)
    return bool(op and op.audited)


def after_request(response: Response) -> Response:
    """The after-interaction interceptor: queue this request's AuditEvent, if it concerns patient data."""
    audit_log = current_app.extensions.get("sidep.audit")
    if audit_log is None:
        return response
    endpoint = interaction()
    rtype = _about()[0]
    if not (audited(endpoint, rtype) or g.get("audit_query")):
        return response
    try:
        principal: Principal | None = g.get("principal")
        event = build_event(endpoint, rtype, response, principal)
        audit_log.record(event, [principal.owner_key] if principal and principal.owner_key else None)
    except Exception:  # noqa: BLE001 - the response is made; a failure to audit is logged, loudly
        log.exception("could not audit %s %s", request.method, request.path)
    return response


def note_query(description: str) -> None:
    """Audit this request, whose answer is patient data that is not resources (a file of an
    export; operations declare themselves `audited`): the AuditEvent names `description` (no
    personal value in it) and the query."""
    g.audit_query = description


def _about() -> tuple[str | None, str | None]:
    """The resource type and id a request is about: its URL's, else what the handler named
    (`g.audit_resource`: an asynchronous result is fetched at an URL without them)."""
    view = request.view_args or {}
    if view.get("rtype"):
        return view["rtype"], view.get("rid")
    return g.get("audit_resource") or (None, None)


def build_event(endpoint: str, rtype: str | None, response: Response, principal: Principal | None) -> dict:
    body = _body(response)
    subtype = SUBTYPE.get(endpoint, endpoint)
    if endpoint == "transaction":
        subtype = "batch" if (body or {}).get("type") == "batch-response" else "transaction"
    event = {
        "type": EVENT_TYPE,
        "subtype": [{"system": INTERACTION_SYSTEM, "code": subtype}],
        "action": ACTION.get(subtype if endpoint == "transaction" else endpoint, "E"),
        "recorded": instant(utc_now()),
        "outcome": "8" if g.get("refused") else outcome_code(response.status_code),
        "agent": _agents(principal),
        "source": {
            "site": "SI-DEP",
            "observer": {
                "display": "SI-DEP FHIR server",
                "identifier": {"value": current_app.config["SETTINGS"].base_url},
            },
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    if response.status_code >= 400 or g.get("refused"):
        description = REFUSED if g.get("refused") else _diagnostics(body)
        if description:
            event["outcomeDesc"] = description[:1000]
    entities = _entities(endpoint, rtype, response, body)
    if entities:
        event["entity"] = entities
    return event


def _agents(principal: Principal | None) -> list[dict]:
    network = {"address": request.remote_addr or "unknown", "type": "2"}
    if principal is None:
        return [{"who": {"display": "anonymous"}, "requestor": True, "network": network}]
    if principal.kind == "client":
        who = {
            "reference": f"Device/{principal.id}",
            "identifier": {"system": CLIENT_SYSTEM, "value": principal.id},
            "display": principal.name,
        }
        kind = {"system": DCM, "code": "110150", "display": "Application"}
    else:
        identifier = (
            {"system": RPPS, "value": principal.rpps}
            if principal.rpps
            else {"system": USER_SYSTEM, "value": principal.id}
        )
        who = {"identifier": identifier, "display": principal.name}
        kind = {
            "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
            "code": "humanuser",
            "display": "human user",
        }
    agents = [
        {
            "type": {"coding": [kind]},
            "who": who,
            "altId": principal.id,
            "name": principal.name,
            "requestor": True,
            "network": network,
        }
    ]
    if principal.organisation:
        agents.append(
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-RoleClass",
                            "code": "PROV",
                            "display": "healthcare provider",
                        }
                    ]
                },
                "who": {
                    "identifier": {"system": FINESS, "value": principal.organisation},
                    "display": principal.organisation_name or principal.organisation,
                },
                "requestor": False,
            }
        )
    return agents


def _body(response: Response) -> dict | None:
    if response.direct_passthrough or response.is_streamed or "json" not in (response.mimetype or ""):
        return None
    try:
        body = orjson.loads(response.get_data())
    except (orjson.JSONDecodeError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _diagnostics(body: dict | None) -> str | None:
    if not body or body.get("resourceType") != "OperationOutcome":
        return None
    return "; ".join(i.get("diagnostics", "") for i in body.get("issue", []) if i.get("diagnostics")) or None


def _entities(endpoint: str, rtype: str | None, response: Response, body: dict | None) -> list[dict]:
    patients: dict[str, None] = {}
    objects: dict[str, None] = {}

    def see(resource: dict | None) -> None:
        if not isinstance(resource, dict) or not resource.get("resourceType") or not resource.get("id"):
            return
        key = f"{resource['resourceType']}/{resource['id']}"
        if resource["resourceType"] == "OperationOutcome":
            return
        objects[key] = None
        if resource["resourceType"] == "Patient":
            patients[key] = None
        for element in ("subject", "patient"):
            value = resource.get(element)
            reference = value.get("reference") if isinstance(value, dict) else None
            if isinstance(reference, str) and reference.startswith("Patient/"):
                patients[reference] = None

    def see_key(key: str | None) -> None:
        if key:
            parts = key.split("/")
            if len(parts) >= 2 and parts[0][:1].isupper():
                objects[f"{parts[0]}/{parts[1]}"] = None
                if parts[0] == "Patient":
                    patients[f"{parts[0]}/{parts[1]}"] = None

    if body and body.get("resourceType") == "Bundle":
        for entry in body.get("entry") or []:
            see(entry.get("resource"))
            see_key(((entry.get("response") or {}).get("location") or "").replace(_base() + "/", ""))
    elif body:
        see(body)
    about_type, about_id = _about()
    if about_id and about_type:
        see_key(f"{about_type}/{about_id}")
    location = response.headers.get("Location")
    if location:
        see_key(location.replace(_base() + "/", ""))
    for record in g.get("refused", []):  # what access control examined and refused
        see(record.resource)
        see_key(f"{record.type}/{record.id}")
    entities = [
        {
            "what": {"reference": key},
            "type": _coding(ENTITY_TYPE, "1", "Person"),
            "role": _coding(OBJECT_ROLE, "1", "Patient"),
        }
        for key in list(patients)[:MAX_ENTITIES]
    ]
    entities += [
        {
            "what": {"reference": key},
            "type": _coding(ENTITY_TYPE, "2", "System Object"),
            "role": _coding(OBJECT_ROLE, "4", "Domain Resource"),
        }
        for key in list(objects)[:MAX_ENTITIES]
        if key not in patients
    ]
    if g.get("audit_query"):  # a response that is patient data but not resources (an export's file)
        entities.append(
            {
                "type": _coding(ENTITY_TYPE, "2", "System Object"),
                "role": _coding(OBJECT_ROLE, "24", "Query"),
                "description": g.audit_query,
                "query": base64.b64encode(request.query_string or b"").decode(),
            }
        )
    if endpoint in ("search-type", "search-post", "history-type", "history-system", "operation-system"):
        query = request.query_string or b""
        if request.method == "POST" and request.form:
            query = request.get_data()
        entities.append(
            {
                "type": _coding(ENTITY_TYPE, "2", "System Object"),
                "role": _coding(OBJECT_ROLE, "24", "Query"),
                "description": f"{request.method} {request.path}",
                "query": base64.b64encode(query).decode(),
            }
        )
    return entities


def platform_event(
    event: tuple[str, str],
    agent: tuple[tuple[str, str], str],
    observer: str,
    base_url: str,
    entities: list[tuple[str | None, str | None]],
    outcome: str = "0",
) -> dict:
    """The AuditEvent of an access the platform itself makes, off the FHIR request path (the
    notification job, the citizen portal): `event` a DICOM (code, display), `agent` (its DICOM
    role (code, display), its name), `entities` (reference, description) — a Patient's as the
    patient, any other as a domain resource; those without reference are left out."""
    return {
        "type": _coding(DCM, *event),
        "action": "R",
        "recorded": instant(utc_now()),
        "outcome": outcome,
        "agent": [{"type": {"coding": [_coding(DCM, *agent[0])]}, "who": {"display": agent[1]}, "requestor": True}],
        "source": {
            "site": "SI-DEP",
            "observer": {"display": observer, "identifier": {"value": base_url}},
            "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
        },
        "entity": [_entity(reference, description) for reference, description in entities if reference],
    }


def _entity(reference: str, description: str | None) -> dict:
    patient = reference.startswith("Patient/")
    entity = {
        "what": {"reference": reference},
        "type": _coding(ENTITY_TYPE, "1", "Person") if patient else _coding(ENTITY_TYPE, "2", "System Object"),
        "role": _coding(OBJECT_ROLE, "1", "Patient") if patient else _coding(OBJECT_ROLE, "4", "Domain Resource"),
    }
    if description:
        entity["description"] = description
    return entity


def _coding(system: str, code: str, display: str) -> dict:
    return {"system": system, "code": code, "display": display}


def _base() -> str:
    return current_app.config["SETTINGS"].base_url

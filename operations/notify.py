"""`$notify` on DiagnosticReport and Observation instances (POST): notify the result's patient
again, e.g. after a correction made outside the platform.

It writes a `notify-result` outbox event (in a transaction, like ingestion: it works while the
queue is down) with a fresh round, so that the job sends again even to addresses already notified
of this version; the answer is 202 with the ids of the Communications the deliveries will be
recorded as. Only an operator or the laboratory the result belongs to may ask (a professional who
can read the result as its requester may not); a result the caller may not read is not there.
"""

from __future__ import annotations

import uuid

from fhir_server import notifications
from fhir_server.auth.policy import forbidden
from fhir_server.auth.principal import current_principal
from fhir_server.http import fhir_response
from fhir_server.outcome import FhirError
from fhir_server.submission import FINAL_STATUSES, NOTIFY
from operations.registry import OperationCall, operation

PARAMETERS = [
    {"name": "communication", "use": "out", "min": 0, "max": "*", "type": "Reference"},
    {"name": "event", "use": "out", "min": 1, "max": "1", "type": "string"},
]


@operation(
    "notify",
    instance_types=("DiagnosticReport", "Observation"),
    affects_state=True,
    description="Notify the result's patient again (SMS and e-mail with the personal link, or the "
    "laboratory's MSSanté mailbox); 202 with the Communications it will produce.",
    parameters=PARAMETERS,
)
def notify(call: OperationCall):
    record = call.store.read(call.resource_type, call.resource_id)  # 404 for what the caller may not read
    _check_caller(record)
    report_id = record.id if record.type == "DiagnosticReport" else _report_of(call, record.id)
    report = call.store.read("DiagnosticReport", report_id)
    if report.resource.get("status") not in FINAL_STATUSES:
        raise FhirError.of(
            422,
            "business-rule",
            "Only a final result is notified",
            "Seul un résultat définitif est notifié",
            "DiagnosticReport.status",
        )
    round = uuid.uuid4().hex
    plan = notifications.plan(call.store, report_id, round, _router())
    event = call.store.run(lambda uow: _emit(uow, report, round))
    parameters = [{"name": "event", "valueString": event}]
    for planned in plan.deliveries if plan else []:
        parameters.append(
            {"name": "communication", "valueReference": {"reference": f"Communication/{planned.communication_id}"}}
        )
    return fhir_response({"resourceType": "Parameters", "parameter": parameters}, 202)


def _check_caller(record) -> None:
    principal = current_principal()
    if principal is not None and not principal.belongs(record.owner):
        raise forbidden(
            "$notify is for the result's laboratory and for operators",
            "$notify est réservée au laboratoire du résultat et aux opérateurs",
        )


def _report_of(call: OperationCall, observation_id: str) -> str:
    ids = call.store.find(
        "DiagnosticReport",
        {"s.result": f"Observation/{observation_id}", "del": False},
        sort=[("ts", -1)],
        limit=1,
        projection={"_id": 1},
    )
    if not ids:
        raise FhirError.of(
            422,
            "business-rule",
            f"No DiagnosticReport has Observation/{observation_id} as result: notify its report",
            f"Aucun DiagnosticReport n'a Observation/{observation_id} pour résultat : notifier son compte rendu",
        )
    return ids[0]["_id"]


def _emit(uow, report, round: str) -> str:
    patient = (report.resource.get("subject") or {}).get("reference")
    return uow.emit(NOTIFY, {"report": report.id, "patient": patient, "reasons": ["requested"], "round": round})


def _router():
    from fhir_server.storage.mailboxes import Directory

    return Directory().route

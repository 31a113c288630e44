"""The laboratory submission contract (SI-DEP laboratory guide, "retransmission du dossier").

- The same patient is the same Patient: a POSTed Patient carrying an INS (NIR, NIA) already known
  updates that Patient; without INS, the identity traits (birth family name, first given name,
  birth date, sex) matched exactly within the same laboratory (or the same professional, for one
  without organisation); never on a partial match.
- Each new version records what changed (contact, identity, result) in its history entry.
- Only a change of contact details (phone, e-mail) or of the result marks a result for
  re-notification ("seul un changement ultérieur des coordonnées (courriel, téléphone) ou du
  résultat engendrerait un renvoi de notification"); a new final result is notified once. The
  decision is an outbox event committed in the same transaction as the write.

Resent dossiers update rather than duplicate because their entries are conditional on the dossier
number (ServiceRequest.identifier scoped to the laboratory): see interactions/conditional.py.
"""
from __future__ import annotations

from profiles.validators import INS_SYSTEMS

from .context import principal_owner
from .interactions.write_hooks import match_existing, on_write, stored_fields
from .search.normalize import fold
from .storage import Record, UnitOfWork

NOTIFY = "notify-result"
RESULT_ELEMENTS = ("status", "valueCodeableConcept", "valueQuantity", "valueString", "interpretation",
                   "code", "dataAbsentReason")
REPORT_RESULT_ELEMENTS = ("status", "conclusion", "conclusionCode", "result", "code")
IDENTITY_ELEMENTS = ("name", "birthDate", "gender", "identifier", "extension")
FINAL_STATUSES = ("final", "amended", "corrected", "appended")


# -- patient matching ---------------------------------------------------------------------------
def ins_tokens(patient: dict) -> list[str]:
    return [f"{i['system']}|{i['value']}" for i in patient.get("identifier", [])
            if i.get("system") in INS_SYSTEMS and i.get("value")]


def traits_key(patient: dict, laboratory: str | None) -> str | None:
    """lab|birth name|first given name|birth date|sex, folded; None when a trait is missing or the
    laboratory is unknown (traits are only compared within one laboratory)."""
    if not laboratory:
        return None
    names = patient.get("name") or []
    official = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    given = (official.get("given") or [None])[0]
    traits = (official.get("family"), given, patient.get("birthDate"), patient.get("gender"))
    if not all(traits):
        return None
    return "|".join([laboratory] + [fold(t) for t in traits])


@match_existing("Patient")
def match_patient(uow: UnitOfWork, patient: dict) -> str | None:
    tokens = ins_tokens(patient)
    if tokens:
        found = uow.find_current("Patient", {"s.identifier": {"$in": tokens}, "del": False}, 1)
        return found[0] if found else None
    key = traits_key(patient, principal_owner())
    if key is None:
        return None
    found = uow.find_current("Patient", {"m": key, "del": False}, 2)
    return found[0] if len(found) == 1 else None


@stored_fields("Patient")
def patient_fields(patient: dict) -> dict:
    """Stored beside a Patient: its identity-traits key (matching without INS)."""
    key = traits_key(patient, principal_owner())
    return {"m": key} if key else {}


# -- what changed, and who must be told ---------------------------------------------------------
def _differs(before: dict | None, after: dict, elements) -> bool:
    return any((before or {}).get(e) != after.get(e) for e in elements)


def _contact(patient: dict | None) -> list:
    return sorted((t.get("system", ""), t.get("value", "")) for t in (patient or {}).get("telecom", [])
                  if t.get("system") in ("phone", "sms", "email"))


def changes(record: Record, previous: Record | None) -> list[str]:
    before = previous.resource if previous and not previous.deleted else None
    after = record.resource
    found = []
    if record.type == "Patient" and before is not None:
        if _contact(before) != _contact(after):
            found.append("contact")
        if _differs(before, after, IDENTITY_ELEMENTS):
            found.append("identity")
    elif record.type == "Observation" and before is not None and _differs(before, after, RESULT_ELEMENTS):
        found.append("result")
    elif record.type == "DiagnosticReport" and _differs(before, after, REPORT_RESULT_ELEMENTS):
        found.append("result" if before is not None else "new")
    return found


@on_write
def record_and_notify(uow: UnitOfWork, record: Record, previous: Record | None) -> None:
    found = changes(record, previous)
    if not found:
        return
    uow.annotate_history(record, found)
    if record.type == "Patient" and "contact" in found:
        for report in final_reports(uow, {"s.patient": f"Patient/{record.id}"},
                                    lambda r: _reference(r, "subject") == f"Patient/{record.id}"):
            notify(uow, report, "contact-changed")
    elif record.type == "Observation":
        key = f"Observation/{record.id}"
        for report in final_reports(uow, {"s.result": key},
                                    lambda r: key in [x.get("reference") for x in r.get("result", [])]):
            notify(uow, report, "result-changed")
    elif record.type == "DiagnosticReport" and record.resource.get("status") in FINAL_STATUSES:
        notify(uow, record, "new-result" if "new" in found or previous is None else "result-changed")


def final_reports(uow: UnitOfWork, query: dict, written_matches) -> list[Record]:
    """Final DiagnosticReports matching `query` in the database, and those this unit wrote."""
    stored = uow.find_current("DiagnosticReport", {**query, "del": False}, 0)
    reports = {rid: uow.current("DiagnosticReport", rid) for rid in stored}
    for report in uow.written("DiagnosticReport"):
        if written_matches(report.resource):
            reports[report.id] = report
    return [r for r in reports.values() if r and not r.deleted and r.resource.get("status") in FINAL_STATUSES]


def notify(uow: UnitOfWork, report: Record, reason: str) -> None:
    patient = _reference(report.resource, "subject")
    uow.emit(NOTIFY, {"report": report.id, "patient": patient, "reasons": [reason]},
             key=f"DiagnosticReport/{report.id}")


def _reference(resource: dict, element: str) -> str | None:
    value = resource.get(element)
    return value.get("reference") if isinstance(value, dict) else None

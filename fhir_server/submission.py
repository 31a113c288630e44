"""The laboratory submission contract (SI-DEP laboratory guide, "retransmission du dossier").

- The same patient is the same Patient within one laboratory: a POSTed Patient carrying an INS
  (NIR, NIA) that laboratory already sent updates its Patient; without INS, the identity traits
  (birth family name, first given name, birth date, sex) matched exactly within the same
  laboratory (or the same professional, for one without organisation); never on a partial match.
  Another laboratory's Patient is never matched nor changed: each laboratory's certificates carry
  the identity it sent. The same person across laboratories is linked by INS in a person record
  (identity.py).
- Business identifiers are unique where the domain says so (UNIQUE_IDENTIFIERS, enforced by a
  unique index on the stored keys): a plain create of one already held updates the holder.
- Each new version records what changed (contact, identity, result) in its history entry.
- Only a change of contact details (phone, e-mail) or of the result marks a result for
  re-notification ("seul un changement ultérieur des coordonnées (courriel, téléphone) ou du
  résultat engendrerait un renvoi de notification"); a new final result is notified once. The
  decision is an outbox event committed in the same transaction as the write.

Resent dossiers update rather than duplicate because their entries are conditional on the dossier
number (ServiceRequest.identifier scoped to the laboratory): see interactions/conditional.py.
"""

from __future__ import annotations

from profiles.validators import DOSSIER_SYSTEM_PREFIX, FINESS, FINESS_SYSTEMS, INS_SYSTEMS

from .context import principal_owner
from .interactions.write_hooks import WriteHooks
from .search.normalize import fold
from .storage import Record, UnitOfWork

NOTIFY = "notify-result"
RESULT_ELEMENTS = (
    "status",
    "valueCodeableConcept",
    "valueQuantity",
    "valueString",
    "interpretation",
    "code",
    "dataAbsentReason",
)
REPORT_RESULT_ELEMENTS = ("status", "conclusion", "conclusionCode", "result", "code")
IDENTITY_ELEMENTS = ("name", "birthDate", "gender", "identifier", "extension")
FINAL_STATUSES = ("final", "amended", "corrected", "appended")

# Identifiers one resource at most may hold: type -> (whether a system is one, whether it is
# unique within the writing organisation rather than nationally).
UNIQUE_IDENTIFIERS = {
    "Patient": (lambda system: system in INS_SYSTEMS, True),  # the INS, within a laboratory
    "ServiceRequest": (lambda system: system.startswith(DOSSIER_SYSTEM_PREFIX), True),  # the dossier number
    "Organization": (lambda system: system in FINESS_SYSTEMS, False),  # a FINESS number, nationally
}
# The older FINESS spelling names the same number.
SAME_SYSTEM = {system: FINESS for system in FINESS_SYSTEMS}


def register(hooks: WriteHooks) -> None:
    for rtype in UNIQUE_IDENTIFIERS:
        hooks.matchers[rtype] = match_by_identifier
        hooks.stored_fields[rtype] = identifier_fields
    hooks.matchers["Patient"] = match_patient
    hooks.stored_fields["Patient"] = patient_fields
    hooks.on_write.append(record_and_notify)


# -- business identifiers and patient matching -------------------------------------------------
def unique_identifiers(resource: dict) -> list[str]:
    """The resource's business identifiers of UNIQUE_IDENTIFIERS, as `system|value` (the older
    FINESS spelling as the current one), sorted, each once."""
    is_unique, _ = UNIQUE_IDENTIFIERS.get(resource.get("resourceType", ""), (None, False))
    if is_unique is None:
        return []
    found = {
        f"{SAME_SYSTEM.get(i['system'], i['system'])}|{i['value']}"
        for i in resource.get("identifier") or []
        if isinstance(i, dict)
        and isinstance(i.get("system"), str)
        and isinstance(i.get("value"), str)
        and is_unique(i["system"])
    }
    return sorted(found)


def business_keys(resource: dict, owner: str | None) -> list[str]:
    """The stored unique keys of a resource's business identifiers: `Type|system|value`, and
    `@owner` for those unique within an organisation."""
    rtype = resource.get("resourceType", "")
    scope = f"@{owner or '-'}" if UNIQUE_IDENTIFIERS.get(rtype, (None, False))[1] else ""
    return [f"{rtype}|{identifier}{scope}" for identifier in unique_identifiers(resource)]


def identifier_fields(resource: dict) -> dict:
    keys = business_keys(resource, principal_owner())
    return {"k": keys} if keys else {}


def match_by_identifier(uow: UnitOfWork, resource: dict) -> str | None:
    keys = business_keys(resource, principal_owner())
    return uow.holder(resource["resourceType"], keys) if keys else None


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


def match_patient(uow: UnitOfWork, patient: dict) -> str | None:
    """The laboratory's own Patient with this INS, else with exactly these identity traits."""
    known = match_by_identifier(uow, patient)
    if known or unique_identifiers(patient):
        return known
    key = traits_key(patient, principal_owner())
    return uow.single_with_traits(key) if key else None


def patient_fields(patient: dict) -> dict:
    """Stored beside a Patient: its INS keys and its identity-traits key (matching without INS)."""
    key = traits_key(patient, principal_owner())
    return {**identifier_fields(patient), **({"m": key} if key else {})}


# -- what changed, and who must be told ---------------------------------------------------------
def _differs(before: dict | None, after: dict, elements) -> bool:
    return any((before or {}).get(e) != after.get(e) for e in elements)


def _contact(patient: dict | None) -> list:
    return sorted(
        (t.get("system", ""), t.get("value", ""))
        for t in (patient or {}).get("telecom", [])
        if t.get("system") in ("phone", "sms", "email")
    )


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


def record_and_notify(uow: UnitOfWork, record: Record, previous: Record | None) -> None:
    found = changes(record, previous)
    if not found:
        return
    uow.annotate_history(record, found)
    if record.type == "Patient" and "contact" in found:
        for report in final_reports(
            uow, "patient", f"Patient/{record.id}", lambda r: _reference(r, "subject") == f"Patient/{record.id}"
        ):
            notify(uow, report, "contact-changed")
    elif record.type == "Observation":
        key = f"Observation/{record.id}"
        for report in final_reports(
            uow, "result", key, lambda r: key in [x.get("reference") for x in r.get("result", [])]
        ):
            notify(uow, report, "result-changed")
    elif record.type == "DiagnosticReport" and record.resource.get("status") in FINAL_STATUSES:
        notify(uow, record, "new-result" if "new" in found or previous is None else "result-changed")


def final_reports(uow: UnitOfWork, parameter: str, reference: str, written_matches) -> list[Record]:
    """Final DiagnosticReports whose reference `parameter` is `reference`, in the database and
    among those this unit wrote."""
    stored = uow.referring("DiagnosticReport", parameter, reference)
    reports = {rid: uow.current("DiagnosticReport", rid) for rid in stored}
    for report in uow.written("DiagnosticReport"):
        if written_matches(report.resource):
            reports[report.id] = report
    return [r for r in reports.values() if r and not r.deleted and r.resource.get("status") in FINAL_STATUSES]


def notify(uow: UnitOfWork, report: Record, reason: str) -> None:
    patient = _reference(report.resource, "subject")
    uow.emit(
        NOTIFY, {"report": report.id, "patient": patient, "reasons": [reason]}, key=f"DiagnosticReport/{report.id}"
    )


def _reference(resource: dict, element: str) -> str | None:
    value = resource.get(element)
    return value.get("reference") if isinstance(value, dict) else None

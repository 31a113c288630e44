"""Who is told of a result, by which channel, under which keys: the plan of one notification,
made from what is stored (the job that sends, and `$notify` that announces what it will send,
both make it here).

- The recipient is the result's own Patient: the contact details that the result's laboratory
  sent, never another laboratory's for the same person (each laboratory's Patient is its own).
- A valid mobile number gets an SMS, an e-mail address an e-mail; both when both exist, as the
  SI-DEP guide recommends. With neither, the certificate goes to the laboratory's MSSanté mailbox
  (the route the directory gives, or a routing failure that operators see).
- Each delivery's key names the result, its version (the report's and its Observations'), the
  channel, the address and the round (empty for what ingestion asked; a fresh one per `$notify`):
  a job run twice finds the same keys and sends nothing twice; a new phone number is a new key.
- The personal deep link carries a token derived from the notification (HMAC with the platform's
  key), so that a retried send carries the same link; only its hash is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from dateutil.relativedelta import relativedelta

from operations.certificates.keys import private_secret
from profiles.validators import FINESS_SYSTEMS, email_is_valid, mobile_e164

from .search.dates import DateFormatError, instant, parse_range, utc_now
from .settings import Settings
from .storage import Record, Store

CHANNELS = ("sms", "email", "mssante")
TOKEN_BYTES = 16  # 128 bits: the deep link's token
COMMUNICATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"
PARTICIPATION_MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
MEDIUM = {"sms": ("SMSWRIT", "SMS"), "email": ("EMAILWRIT", "e-mail"), "mssante": ("EMAILWRIT", "MSSanté")}
CONTACT_POINT_EXTENSION = "https://sidep.example/fhir/StructureDefinition/recipient-contact-point"


@dataclass(frozen=True)
class Planned:
    channel: str
    address: str  # E.164 phone, e-mail, MSSanté mailbox; "" when no MSSanté route was found
    key: str
    route_failure: str | None = None  # why no mailbox was found (operators' words, no personal value)

    @property
    def communication_id(self) -> str:
        return self.key


@dataclass
class Notification:
    report: Record
    patient: Record | None
    observations: list[Record]
    result_version: str
    round: str
    site: Record | None = None  # the performing site (FINESS géographique)
    site_finess: str | None = None
    legal_finess: str | None = None
    deliveries: list[Planned] = field(default_factory=list)

    @property
    def owners(self) -> list[str]:
        return list(self.report.owner or [])

    @property
    def patient_reference(self) -> str | None:
        return f"Patient/{self.patient.id}" if self.patient else None


Router = Callable[[str | None, str | None], object]  # (site FINESS, legal FINESS) -> a Route


def plan(store: Store, report_id: str, round: str = "", route: Router | None = None) -> Notification | None:
    """The notification of DiagnosticReport `report_id` as stored now; None when there is nothing
    to notify (deleted, not final)."""
    from .submission import FINAL_STATUSES

    report = store.current("DiagnosticReport", report_id)
    if report is None or report.deleted or report.resource.get("status") not in FINAL_STATUSES:
        return None
    patient = _referenced(store, report.resource.get("subject"), "Patient")
    observations = [
        record
        for record in (_referenced(store, ref, "Observation") for ref in report.resource.get("result", []))
        if record
    ]
    notification = Notification(report, patient, observations, result_version(report, observations), round)
    mobiles, emails = contacts(patient.resource if patient else {})
    for channel, addresses in (("sms", mobiles), ("email", emails)):
        for address in addresses:
            notification.deliveries.append(Planned(channel, address, delivery_key(notification, channel, address)))
    if not notification.deliveries:  # the laboratory's mailbox: where its site is
        notification.site, notification.site_finess, notification.legal_finess = _performer(store, report)
        notification.deliveries.append(_mssante(notification, route))
    return notification


def result_version(report: Record, observations: list[Record]) -> str:
    """The version of a result: its report's and its Observations' (a corrected Observation is a
    new version of the result even when the report is unchanged)."""
    return ",".join(
        [f"DiagnosticReport/{report.id}/{report.version}"] + [f"Observation/{o.id}/{o.version}" for o in observations]
    )


def delivery_key(notification: Notification, channel: str, address: str) -> str:
    text = "\n".join((notification.report.id, notification.result_version, channel, address, notification.round))
    return hashlib.sha256(text.encode()).hexdigest()


def contacts(patient: dict) -> tuple[list[str], list[str]]:
    """(valid mobile numbers in E.164, valid e-mail addresses) of a Patient, each once, in order."""
    mobiles: list[str] = []
    emails: list[str] = []
    for point in patient.get("telecom") or []:
        value, system = point.get("value"), point.get("system")
        if not isinstance(value, str) or (point.get("period") or {}).get("end"):
            continue
        if system in ("phone", "sms"):
            number = mobile_e164(value)
            if number and number not in mobiles:
                mobiles.append(number)
        elif system == "email" and email_is_valid(value) and value not in emails:
            emails.append(value)
    return mobiles, emails


def _mssante(notification: Notification, route: Router | None) -> Planned:
    if route is None:
        return Planned("mssante", "", delivery_key(notification, "mssante", ""), "annuaire MSSanté non disponible")
    found = route(notification.site_finess, notification.legal_finess)
    address = getattr(found, "address", None)
    if address:
        return Planned("mssante", address, delivery_key(notification, "mssante", address))
    return Planned("mssante", "", delivery_key(notification, "mssante", ""), getattr(found, "reason", None) or "")


def _referenced(store: Store, reference: dict | None, rtype: str) -> Record | None:
    parts = ((reference or {}).get("reference") or "").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2 or parts[-2] != rtype:
        return None
    record = store.current(rtype, parts[-1])
    return record if record and not record.deleted else None


def finess_of(organization: dict | None) -> str | None:
    for identifier in (organization or {}).get("identifier") or []:
        if identifier.get("system") in FINESS_SYSTEMS and identifier.get("value"):
            return identifier["value"]
    return None


def _performer(store: Store, report: Record) -> tuple[Record | None, str | None, str | None]:
    """The performing site, its FINESS, and its legal entity's FINESS (partOf, else the
    organisation the result belongs to)."""
    organizations = [_referenced(store, ref, "Organization") for ref in report.resource.get("performer") or []]
    organizations = [o for o in organizations if o]
    site = next((o for o in organizations if o.resource.get("partOf")), organizations[0] if organizations else None)
    legal = _referenced(store, (site.resource if site else {}).get("partOf"), "Organization")
    legal_finess = finess_of(legal.resource if legal else None) or next(
        (owner for owner in report.owner or [] if owner.isdigit()), None
    )
    return site, finess_of(site.resource if site else None), legal_finess


# -- deep links ------------------------------------------------------------------------------------
def deep_link_key(settings: Settings) -> bytes:
    """The HMAC key tokens derive from: DEEP_LINK_KEY_FILE, else one generated under VAR_DIR/keys
    (every web and worker process of a platform must share it)."""
    path = Path(settings.deep_link_key_file or Path(settings.var_dir) / "keys" / "deep-link.key")
    return private_secret(path)


def deep_link_token(key: bytes, notification: Notification) -> str:
    message = "\n".join(
        (
            "deep-link",
            notification.patient_reference or "",
            notification.report.id,
            notification.result_version,
            notification.round,
        )
    )
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()[:TOKEN_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def deep_link(settings: Settings, token: str) -> str:
    """The URL carries the token after `#`: browsers never send a fragment, so it never reaches a
    server's or a proxy's log."""
    return f"{settings.portal}#{token}"


def expires(settings: Settings, notification: Notification) -> datetime:
    """When the result's retention ends: months after its sampling (else its issue), as stored."""
    start = sampled_at(notification) or utc_now()
    return start + relativedelta(months=settings.result_retention_months)


def sampled_at(notification: Notification) -> datetime | None:
    """The sampling time as the report states it (its effective time), else its issue time."""
    return effective_time(notification.report.resource, "issued")


def effective_time(report: dict, *fallbacks: str) -> datetime | None:
    """A DiagnosticReport's effective time (dateTime, else the start of its period), else the
    first of `fallbacks` (element names) it holds, as naive UTC."""
    for value in (
        report.get("effectiveDateTime"),
        (report.get("effectivePeriod") or {}).get("start"),
        *(report.get(name) for name in fallbacks),
    ):
        if isinstance(value, str):
            try:
                return parse_range(value)[0]
            except DateFormatError:
                continue
    return None


# -- the record of a delivery ------------------------------------------------------------------------
def communication(
    notification: Notification, planned: Planned, status: str, sent: datetime | None, reason: str | None
) -> dict:
    """The FHIR Communication recording one delivery (searchable by patient)."""
    code, label = MEDIUM[planned.channel]
    resource: dict = {
        "resourceType": "Communication",
        "status": status,
        "category": [{"coding": [{"system": COMMUNICATION_CATEGORY, "code": "notification"}]}],
        "medium": [{"coding": [{"system": PARTICIPATION_MODE, "code": code}], "text": label}],
        "about": [{"reference": f"DiagnosticReport/{notification.report.id}"}],
    }
    if notification.patient:
        resource["subject"] = {"reference": notification.patient_reference}
    if planned.channel == "mssante":
        if notification.site:
            resource["recipient"] = [{"reference": f"Organization/{notification.site.id}"}]
    elif notification.patient:
        resource["recipient"] = [{"reference": notification.patient_reference}]
    if planned.address:
        system = "sms" if planned.channel == "sms" else "email"
        resource["extension"] = [
            {"url": CONTACT_POINT_EXTENSION, "valueContactPoint": {"system": system, "value": planned.address}}
        ]
    if sent:
        resource["sent"] = instant(sent)
    if reason:
        resource["statusReason"] = {"text": reason}
    return resource


def disclosure_event(notification: Notification, planned: Planned, sent: bool, base_url: str) -> dict:
    """The AuditEvent of one delivery: the platform read the patient's contact details and sent
    (or tried to send) a notice or a certificate out (DICOM "Export")."""
    from .auth.audit import platform_event

    return platform_event(
        ("110106", "Export"),
        (("110150", "Application"), f"SI-DEP notification ({MEDIUM[planned.channel][1]})"),
        "SI-DEP workers",
        base_url,
        [
            (notification.patient_reference, None),
            (f"DiagnosticReport/{notification.report.id}", None),
            (f"Communication/{planned.communication_id}", None),
        ],
        outcome="0" if sent else "4",
    )

"""`notify_result(event_id)`: tell a patient that a result is ready (SMS and e-mail with the
personal deep link), or send the certificate to the laboratory's MSSanté mailbox when the patient
can't be reached. One run per `notify-result` outbox event; idempotent.

Each delivery is recorded (`storage.deliveries`) before it is sent and marked sent after; a run
that finds it sent skips it; one that finds it `sending` (a worker died mid-send) sends again under
the same key — the SMS gateway's idempotency key, the e-mail's Message-ID — so that the receiver
drops the duplicate. A transient failure raises, for RQ to retry with backoff, while what was sent
stays sent; after the last try the delivery, its Communication and the event are `failed`, for the
operators' console.
"""

from __future__ import annotations

import email
import email.policy
from datetime import timedelta

from dateutil.relativedelta import relativedelta
from rq import get_current_job

from fhir_server import notifications
from fhir_server.notifications import Notification, Planned
from fhir_server.outcome import FhirError
from fhir_server.storage.deliveries import DeepLinks, Deliveries
from fhir_server.storage.outbox import Outbox
from workers.channels import DeliveryError, Permanent, Transient
from workers.context import WorkerContext, context


class Pending(Transient):
    """Some deliveries of the event failed for now: the job is retried (the sent ones stay sent)."""


def notify_result(event_id: str, payload: dict | None = None) -> dict:
    """`payload`: the event's, which the dispatcher passes (a read of the outbox less per
    notification); a job enqueued without it reads the event."""
    ctx = context()
    channels = Channels.of(ctx)
    outbox = Outbox(ctx.store.db)
    payload = outbox.pending_payload(event_id, payload)
    if payload is None:
        return {"skipped": "no such event or done"}
    notification = notifications.plan(ctx.store, payload.get("report", ""), payload.get("round", ""), channels.route)
    if notification is None:
        outbox.done(event_id, {"skipped": "not final or deleted"})
        return {"skipped": "not final or deleted"}
    last_try = _last_try()
    outcomes = [
        _deliver(ctx, channels, event_id, notification, planned, last_try) for planned in notification.deliveries
    ]
    if "pending" in outcomes:
        raise Pending(f"{outcomes.count('pending')} delivery(ies) to retry")
    failures = sorted({outcome for outcome in outcomes if outcome != "sent"})
    counts = {"sent": outcomes.count("sent"), "failed": len(outcomes) - outcomes.count("sent")}
    if failures:
        outbox.fail(event_id, "; ".join(failures), counts)
    else:
        outbox.done(event_id, counts)
    return counts


def _last_try() -> bool:
    """Is this the job's last try (no RQ retry left, or run outside RQ)?"""
    job = get_current_job()
    return job is None or not job.retries_left


def _deliver(
    ctx: WorkerContext,
    channels: "Channels",
    event_id: str,
    notification: Notification,
    planned: Planned,
    last_try: bool,
) -> str:
    """ "sent", "pending" (retry later), or the failure's reason."""
    deliveries = Deliveries()
    record = deliveries.begin(
        key=planned.key,
        event=str(event_id),
        report=notification.report.id,
        patient=notification.patient.id if notification.patient else None,
        owners=notification.owners,
        result_version=notification.result_version,
        channel=planned.channel,
        address=planned.address or "-",
        expires=notifications.expires(ctx.settings, notification),
    )
    if record.state == "sent":
        return "sent"
    try:
        receipt = channels.send(ctx, notification, planned, record)
    except Transient as exc:
        if not last_try:
            return "pending"
        return _failed(ctx, deliveries, notification, planned, exc)
    except Permanent as exc:
        return _failed(ctx, deliveries, notification, planned, exc)
    _record_communication(ctx, notification, planned, "completed", None)
    deliveries.sent(planned.key, receipt, planned.communication_id)
    _audit(ctx, notification, planned, sent=True)
    return "sent"


def _failed(
    ctx: WorkerContext, deliveries: Deliveries, notification: Notification, planned: Planned, error: DeliveryError
) -> str:
    reason = f"{planned.channel} : {error.reason}"
    _record_communication(ctx, notification, planned, "not-done", reason)
    deliveries.failed(planned.key, reason, planned.communication_id)
    _audit(ctx, notification, planned, sent=False)
    return reason


def _audit(ctx: WorkerContext, notification: Notification, planned: Planned, sent: bool) -> None:
    event = notifications.disclosure_event(notification, planned, sent, ctx.settings.base_url)
    ctx.audit.record(event, notification.owners)


def _record_communication(
    ctx: WorkerContext, notification: Notification, planned: Planned, status: str, reason: str | None
) -> None:
    """The Communication of a delivery, owned by the result's organisations (they search it by
    patient); written again only when its content changes."""

    def write(uow):
        sent = uow.now if status == "completed" else None
        resource = notifications.communication(notification, planned, status, sent, reason)
        record, _ = uow.put("Communication", planned.communication_id, resource, method="PUT")
        uow.grant("Communication", record.id, notification.owners)

    ctx.store.run(write)


class Channels:
    """The channels of this worker process, built from its settings once."""

    _built: dict[int, "Channels"] = {}

    def __init__(self, ctx: WorkerContext):
        from fhir_server.storage.mailboxes import Directory
        from workers.channels.email import Mailer
        from workers.channels.sms import SmsGateway

        settings = ctx.settings
        self.sms = SmsGateway.from_settings(settings)
        self.mailer = Mailer.from_settings(settings)
        self.mssante = Mailer.from_mssante(settings)
        self.directory = Directory()
        self.deep_link_key = notifications.deep_link_key(settings)

    @classmethod
    def of(cls, ctx: WorkerContext) -> "Channels":
        from fhir_server.storage import mailboxes
        from fhir_server.storage.deliveries import MODELS

        ctx.connect_records(*MODELS, *mailboxes.MODELS)
        if id(ctx) not in cls._built:
            cls._built[id(ctx)] = cls(ctx)
        return cls._built[id(ctx)]

    def route(self, site_finess: str | None, legal_finess: str | None):
        return self.directory.route(site_finess, legal_finess)

    def send(self, ctx: WorkerContext, notification: Notification, planned: Planned, record) -> str:
        if planned.channel == "mssante":
            return self._send_mssante(ctx, notification, planned, record)
        link = self._deep_link(ctx, notification)
        if planned.channel == "sms":
            if self.sms is None:
                raise Permanent("aucune passerelle SMS configurée (SMS_GATEWAY_URL)")
            return self.sms.send(planned.address, ctx.settings.sms_template.format(link=link), planned.key)
        from workers.channels.email import message_id, patient_email

        if self.mailer is None:
            raise Permanent("aucun relais SMTP configuré (SMTP_HOST)")
        identifier = message_id(planned.key, ctx.settings.mail_from)
        self.mailer.send(patient_email(ctx.settings.mail_from, planned.address, link, identifier))
        return identifier

    def _deep_link(self, ctx: WorkerContext, notification: Notification) -> str:
        token = notifications.deep_link_token(self.deep_link_key, notification)
        DeepLinks().issue(
            token,
            notification.patient.id if notification.patient else "",
            notification.report.id,
            notification.owners,
            notifications.expires(ctx.settings, notification),
        )
        return notifications.deep_link(ctx.settings, token)

    def _send_mssante(self, ctx: WorkerContext, notification: Notification, planned: Planned, record) -> str:
        if planned.route_failure is not None or not planned.address:
            raise Permanent(planned.route_failure or "aucune BAL MSSanté")
        if self.mssante is None:
            raise Permanent("aucun relais MSSanté configuré (MSSANTE_SMTP_HOST ou SMTP_HOST)")
        from workers.channels.email import message_id

        identifier = message_id(planned.key, ctx.settings.mssante_from)
        if record.message:  # a retry sends exactly what the first try built
            message = email.message_from_bytes(record.message, policy=email.policy.SMTP)
        else:
            message = certificate_message(ctx, notification, planned.address, identifier)
            Deliveries().keep_message(planned.key, message.as_bytes(), message_copy_expires(ctx, notification))
        self.mssante.send(message)
        return identifier


def certificate_message(ctx: WorkerContext, notification: Notification, to: str, identifier: str):
    """The guide's e-mail to the laboratory's mailbox, with the certificate rendered here."""
    from fhir_server.mssante import certificate_email, certificate_facts, service_request_id
    from operations.certificates.pdf import render_pdf
    from operations.generate_certificate import load_result_resources

    try:
        resources = load_result_resources(ctx.store, "DiagnosticReport", notification.report.id)
        pdf = render_pdf(_certificates(ctx, resources))
    except FhirError as error:
        raise Permanent(f"certificat impossible à produire (HTTP {error.status})") from None
    request_id = service_request_id(resources)
    request = ctx.store.current("ServiceRequest", request_id) if request_id else None
    facts = certificate_facts(resources, request.resource if request else None, notification.report.last_updated)
    settings = ctx.settings
    return certificate_email(facts, settings.mssante_from, to, pdf, identifier, settings.mssante_max_bytes)


def _certificates(ctx: WorkerContext, resources: dict):
    """The signed certificates of the result; when no EU certificate can be made (a rapid antigen
    test without its device), the French result sheet alone, which the laboratory still needs."""
    from operations.certificates.facts import facts_from_resources
    from operations.certificates.generate import issue_certificates
    from operations.certificates.keys import load_keyring

    keyring = load_keyring(ctx.settings.var_dir)
    return issue_certificates(facts_from_resources(**resources), keyring, sheet_without_dcc=True)


def message_copy_expires(ctx: WorkerContext, notification: Notification):
    """The guide's retention of an MSSanté message: 72 h after sampling for a negative result,
    6 months for a positive one."""
    sampled = notifications.sampled_at(notification) or notification.report.last_updated
    if is_positive(notification):
        return sampled + relativedelta(months=ctx.settings.mssante_positive_months)
    return sampled + timedelta(hours=ctx.settings.mssante_negative_hours)


def is_positive(notification: Notification) -> bool:
    from operations.certificates.facts import RESULTS

    for observation in notification.observations:
        for coding in (observation.resource.get("valueCodeableConcept") or {}).get("coding") or []:
            if RESULTS.get(coding.get("code")) == "detected":
                return True
        for interpretation in observation.resource.get("interpretation") or []:
            if any(c.get("code") in ("POS", "DET", "A", "H") for c in interpretation.get("coding") or []):
                return True
    return False

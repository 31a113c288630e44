"""`send_otp(otp_id)`: send a portal one-time code to the linked Patient's mobiles (SMS) and
e-mail addresses, as the result's laboratory sent them.

The job is given the code record's id only: it computes the live code again from the record's
issue counter and the platform's key (fhir_server/portal/otp.py), and sends it only if it is still
the live one (a newer code, a used or an expired one: nothing is sent). Neither the code nor an
address is ever logged or returned (RQ keeps a job's result). A transient failure raises, for RQ
to retry within the code's short validity.
"""

from __future__ import annotations

import hashlib
from email.message import EmailMessage

from fhir_server.notifications import contacts
from fhir_server.portal.otp import EMAIL_BODY, EMAIL_SUBJECT, otp_code, otp_hash, otp_key, sms_text
from fhir_server.search.dates import utc_now
from fhir_server.storage.otps import MODELS, Otps
from workers.channels import Permanent, Transient
from workers.channels.email import Mailer, message_id, plain_email
from workers.channels.sms import SmsGateway
from workers.context import context


def send_otp(otp_id: str) -> dict:
    ctx = context()
    ctx.connect_records(*MODELS)
    settings = ctx.settings
    record = Otps().get(otp_id)
    if record is None or not record.code_hash or not record.code_expires or record.code_expires <= utc_now():
        return {"skipped": "no live code"}
    key = otp_key(settings)
    code = otp_code(key, record.id, record.counter)
    if otp_hash(key, record.id, record.counter, code) != record.code_hash:
        return {"skipped": "a newer code was issued"}
    patient = ctx.store.current("Patient", record.patient)
    mobiles, emails = contacts(patient.resource if patient and not patient.deleted and patient.resource else {})
    sent, failures = 0, []
    for channel, addresses in (("sms", mobiles), ("email", emails)):
        for address in addresses:
            delivery_key = _key(record.id, record.counter, channel, address)
            try:
                _send(settings, channel, address, code, delivery_key)
                sent += 1
            except Permanent as error:
                failures.append(error.reason)
            except Transient as error:
                if sent:  # what went out stays out: a retry would send it twice
                    failures.append(error.reason)
                else:
                    raise
    return {"sent": sent, "failed": len(failures), "reasons": sorted(set(failures))}


def _key(otp_id: str, counter: int, channel: str, address: str) -> str:
    """The idempotency key / Message-ID of one send: a retried send is the same message."""
    return hashlib.sha256(f"otp\n{otp_id}\n{counter}\n{channel}\n{address}".encode()).hexdigest()


def _send(settings, channel: str, address: str, code: str, key: str) -> None:
    if channel == "sms":
        gateway = SmsGateway.from_settings(settings)
        if gateway is None:
            raise Permanent("aucune passerelle SMS configurée (SMS_GATEWAY_URL)")
        gateway.send(address, sms_text(code, settings.otp_minutes), key)
        return
    mailer = Mailer.from_settings(settings)
    if mailer is None:
        raise Permanent("aucun relais SMTP configuré (SMTP_HOST)")
    mailer.send(
        code_email(settings.mail_from, address, code, settings.otp_minutes, message_id(key, settings.mail_from))
    )


def code_email(sender: str, to: str, code: str, minutes: int, identifier: str) -> EmailMessage:
    return plain_email(sender, to, EMAIL_SUBJECT, EMAIL_BODY.format(code=code, minutes=minutes), identifier)

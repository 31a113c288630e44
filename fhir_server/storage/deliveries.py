"""Delivery records and deep links: what the notification job sent, to whom, and the tokens of
the personal links it sent (operational records, mongoengine documents).

A delivery is recorded before anything is sent, under a key naming the result, its version, the
channel, the address and the notification round: a job that runs again finds the record and sends
nothing twice (a record already `sent`), or sends again under the same key (`sending` left by a
worker that died: the gateway or the receiving mail server drops the duplicate by that key).
Deep links are stored by the hash of their token only.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import mongoengine as me

from .accounts import utc_now
from .records import ALIAS

STATES = ("sending", "sent", "failed")


class Delivery(me.Document):
    key = me.StringField(primary_key=True)
    event = me.StringField(required=True)  # the outbox event that asked for it
    report = me.StringField(required=True)  # DiagnosticReport id
    patient = me.StringField()  # Patient id
    owners = me.ListField(me.StringField())  # the organisations the result belongs to
    result_version = me.StringField(required=True)
    channel = me.StringField(required=True, choices=("sms", "email", "mssante"))
    address = me.StringField(required=True)  # phone (E.164), e-mail or MSSanté mailbox: never logged
    state = me.StringField(required=True, choices=STATES, default="sending")
    attempts = me.IntField(default=0)
    reason = me.StringField()  # why it failed (no personal value)
    created = me.DateTimeField(default=utc_now)
    started = me.DateTimeField()
    sent = me.DateTimeField()
    receipt = me.StringField()  # the gateway's message id, or the Message-ID
    communication = me.StringField()  # the Communication resource recording it
    message = me.BinaryField()  # an MSSanté message as sent (a retry sends the same bytes)
    message_expires = me.DateTimeField()  # when that copy must be gone
    expires = me.DateTimeField(required=True)  # the result's retention
    meta = {
        "collection": "_deliveries",
        "db_alias": ALIAS,
        "indexes": ["event", ("state", "-started"), "expires", "message_expires"],
        "auto_create_index": False,
    }


class DeepLink(me.Document):
    hash = me.StringField(primary_key=True)  # SHA-256 of the token: the token itself is never stored
    patient = me.StringField(required=True)
    report = me.StringField(required=True)
    owners = me.ListField(me.StringField())
    created = me.DateTimeField(default=utc_now)
    expires = me.DateTimeField(required=True)
    meta = {
        "collection": "_deep_links",
        "db_alias": ALIAS,
        "indexes": [{"fields": ["expires"], "expireAfterSeconds": 0}, "patient"],
        "auto_create_index": False,
    }


MODELS = (Delivery, DeepLink)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


class Deliveries:
    """The delivery records, in the vocabulary of the notification job."""

    def begin(self, **fields) -> Delivery:
        """The record of this delivery, created if new, and marked `sending` (one more attempt)
        unless it was sent already (then returned as it is, and nothing should be sent)."""
        key = fields.pop("key")
        try:  # one round trip in the common case: new, or not sent yet
            return Delivery.objects(key=key, state__ne="sent").modify(
                upsert=True,
                new=True,
                set__state="sending",
                set__started=utc_now(),
                inc__attempts=1,
                unset__reason=True,
                **{f"set_on_insert__{name}": value for name, value in fields.items()},
            )
        except me.NotUniqueError:  # it exists and was sent: the upsert could not insert it again
            return Delivery.objects.get(key=key)

    def sent(self, key: str, receipt: str, communication: str) -> None:
        Delivery.objects(key=key).update_one(
            set__state="sent", set__sent=utc_now(), set__receipt=receipt, set__communication=communication
        )

    def failed(self, key: str, reason: str, communication: str) -> None:
        Delivery.objects(key=key, state__ne="sent").update_one(
            set__state="failed", set__reason=reason, set__communication=communication
        )

    def keep_message(self, key: str, message: bytes, expires: datetime) -> None:
        Delivery.objects(key=key).update_one(set__message=message, set__message_expires=expires)

    def get(self, key: str) -> Delivery | None:
        return Delivery.objects(key=key).first()

    def of_event(self, event_id: str) -> list[Delivery]:
        return list(Delivery.objects(event=event_id).order_by("created"))

    def count(self, **conditions) -> int:
        return Delivery.objects(**conditions).count()

    def recent_failures(self, limit: int = 50) -> list[Delivery]:
        return list(Delivery.objects(state="failed").order_by("-started").limit(limit).exclude("message"))

    def expired_communications(self, now: datetime) -> list[str]:
        """The Communications of the records past the result's retention (gone with them)."""
        return [d.communication for d in Delivery.objects(expires__lte=now).only("communication") if d.communication]

    def purge(self, now: datetime) -> dict[str, int]:
        """What retention allows no longer: message copies past their date, records past the
        result's."""
        copies = Delivery.objects(message_expires__lte=now).update(unset__message=True, unset__message_expires=True)
        records = Delivery.objects(expires__lte=now).delete()
        return {"message copies": copies, "delivery records": records}


class DeepLinks:
    def issue(self, token: str, patient: str, report: str, owners: list[str], expires: datetime) -> None:
        """Record a deep link (by its token's hash); issuing the same token again changes nothing."""
        DeepLink.objects(hash=token_hash(token)).modify(
            upsert=True,
            new=True,
            set_on_insert__patient=patient,
            set_on_insert__report=report,
            set_on_insert__owners=owners,
            set_on_insert__expires=expires,
            set_on_insert__created=utc_now(),
        )

    def resolve(self, token: str, now: datetime | None = None) -> DeepLink | None:
        """The link this token opens, unless unknown or expired."""
        link = DeepLink.objects(hash=token_hash(token)).first()
        if link is None or link.expires <= (now or utc_now()):
            return None
        return link

    def purge(self, now: datetime) -> dict[str, int]:
        return {"deep links": DeepLink.objects(expires__lte=now).delete()}

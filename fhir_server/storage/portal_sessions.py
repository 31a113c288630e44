"""Sessions of the citizen portal (operational records, mongoengine): stored by the SHA-256 of
their cookie's value only, with the form token, where the person is in the sign-in steps (the
deep link's hash, the birth date confirmed) and, once signed in, the Patients they may see."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

import mongoengine as me

from .accounts import utc_now
from .records import ALIAS


class PortalSessionRecord(me.Document):
    hash = me.StringField(primary_key=True)  # SHA-256 of the cookie's value
    csrf = me.StringField(required=True)
    link = me.StringField()  # the deep link being used: its hash, never its token
    birth_confirmed = me.BooleanField(default=False)
    patients = me.ListField(me.StringField())  # Patient ids, once signed in
    method = me.StringField()  # "deep-link" | "franceconnect"
    signed_in = me.DateTimeField()
    oidc = me.DictField()  # FranceConnect: the login under way (state, nonce, verifier), the ID token
    expires = me.DateTimeField(required=True)
    meta = {
        "collection": "_portal_sessions",
        "db_alias": ALIAS,
        "indexes": [{"fields": ["expires"], "expireAfterSeconds": 0}],
        "auto_create_index": False,
    }


MODELS = (PortalSessionRecord,)


def cookie_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class PortalSessions:
    def start(self, expires: datetime, **fields) -> tuple[str, PortalSessionRecord]:
        """A new session: (the cookie's value, its record)."""
        value = secrets.token_urlsafe(32)
        record = PortalSessionRecord(
            hash=cookie_hash(value), csrf=secrets.token_urlsafe(24), expires=expires, **fields
        ).save(force_insert=True)
        return value, record

    def live(self, value: str, now: datetime | None = None) -> PortalSessionRecord | None:
        if not value:
            return None
        record = PortalSessionRecord.objects(hash=cookie_hash(value)).first()
        if record is None or record.expires <= (now or utc_now()):
            return None
        return record

    def touch(self, record: PortalSessionRecord, expires: datetime) -> None:
        PortalSessionRecord.objects(hash=record.hash).update_one(set__expires=expires)

    def update(self, record: PortalSessionRecord, **changes) -> None:
        PortalSessionRecord.objects(hash=record.hash).update_one(**{f"set__{k}": v for k, v in changes.items()})

    def end(self, record: PortalSessionRecord) -> None:
        PortalSessionRecord.objects(hash=record.hash).delete()

    def purge(self, now: datetime) -> dict[str, int]:
        return {"portal sessions": PortalSessionRecord.objects(expires__lte=now).delete()}

"""One-time codes of the citizen portal's deep links (operational records, mongoengine).

One record per deep link (by the link's hash), which keeps what the limits need:
- the code now valid, as a hash only (`code_hash`), until `code_expires`; the code itself is
  derived from the record's id and its issue counter (fhir_server/portal/otp.py), so that the
  sending job, given the id alone, computes it again and nothing stores it;
- the wrong answers (birth dates and codes together) since the last lock, and the lock's end;
- the codes sent in the current period (`period_start`, as long as a lock) and the last send time.

Every change is one atomic update conditioned on the state it expects, so two requests at once
never both use a code, nor both pass a limit.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import mongoengine as me

from .records import ALIAS


class LinkOtp(me.Document):
    id = me.StringField(primary_key=True)  # random: what the sending job is given
    link = me.StringField(required=True)  # the deep link's hash (never its token)
    patient = me.StringField(required=True)  # the linked Patient's id: where the code is sent
    counter = me.IntField(default=0)  # codes issued so far; the live code derives from (id, counter)
    code_hash = me.StringField()  # the live code's hash; unset once used, withdrawn or locked
    code_expires = me.DateTimeField()
    failures = me.IntField(default=0)  # wrong birth dates and codes since the last lock
    locked_until = me.DateTimeField()
    sends = me.IntField(default=0)  # codes sent in the current period
    period_start = me.DateTimeField()
    last_sent = me.DateTimeField()
    expires = me.DateTimeField(required=True)  # with the deep link
    meta = {
        "collection": "_link_otps",
        "db_alias": ALIAS,
        "indexes": [{"fields": ["link"], "unique": True}, {"fields": ["expires"], "expireAfterSeconds": 0}],
        "auto_create_index": False,
    }

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now


MODELS = (LinkOtp,)


class Otps:
    """The codes' records, in the portal's vocabulary."""

    def of_link(self, link: str, patient: str, expires: datetime) -> LinkOtp:
        """The record of this deep link, made at its first use."""
        found = LinkOtp.objects(link=link).first()
        if found is not None:
            return found
        try:
            return LinkOtp(id=secrets.token_hex(12), link=link, patient=patient, expires=expires).save(
                force_insert=True
            )
        except me.NotUniqueError:  # made at the same moment by another request
            return LinkOtp.objects.get(link=link)

    def get(self, otp_id: str) -> LinkOtp | None:
        return LinkOtp.objects(id=otp_id).first()

    def fail(self, otp_id: str, now: datetime, max_attempts: int, lockout: timedelta) -> bool:
        """Count one wrong answer; True when it locks the link (the live code goes with it)."""
        record = LinkOtp.objects(id=otp_id).modify(new=True, inc__failures=1)
        if record is None or record.failures < max_attempts:
            return False
        LinkOtp.objects(id=otp_id, failures__gte=max_attempts).update_one(
            set__failures=0, set__locked_until=now + lockout, unset__code_hash=True, unset__code_expires=True
        )
        return True

    def issue(self, otp_id: str, now: datetime, resend: timedelta, max_sends: int, period: timedelta) -> LinkOtp | str:
        """Take the next issue number for a new code: the record as updated (its `counter` is the
        new code's), or why not: "locked", "too-soon", "too-many"."""
        LinkOtp.objects(id=otp_id, period_start__lte=now - period).update_one(set__sends=0, unset__period_start=True)
        record = LinkOtp.objects(
            me.Q(id=otp_id)
            & (me.Q(locked_until=None) | me.Q(locked_until__lte=now))
            & (me.Q(last_sent=None) | me.Q(last_sent__lte=now - resend))
            & me.Q(sends__lt=max_sends)
        ).modify(new=True, inc__counter=1, inc__sends=1, set__last_sent=now, unset__code_hash=True)
        if record is not None:
            if record.period_start is None:
                LinkOtp.objects(id=otp_id, period_start=None).update_one(set__period_start=now)
            return record
        current = LinkOtp.objects.get(id=otp_id)
        if current.locked(now):
            return "locked"
        if current.sends >= max_sends:
            return "too-many"
        return "too-soon"

    def arm(self, otp_id: str, counter: int, code_hash: str, expires: datetime) -> None:
        """Make the code of issue `counter` the live one (unless a newer one was issued meanwhile)."""
        LinkOtp.objects(id=otp_id, counter=counter).update_one(set__code_hash=code_hash, set__code_expires=expires)

    def withdraw(self, otp_id: str, counter: int) -> None:
        """A code that could not be handed to the queue: as if it had not been asked for."""
        LinkOtp.objects(id=otp_id, counter=counter).update_one(
            dec__sends=1, unset__last_sent=True, unset__code_hash=True, unset__code_expires=True
        )

    def use(self, otp_id: str, code_hash: str, now: datetime) -> bool:
        """Spend the live code if `code_hash` is its hash and it is still valid (once only)."""
        used = LinkOtp.objects(id=otp_id, code_hash=code_hash, code_expires__gt=now).update_one(
            unset__code_hash=True, unset__code_expires=True, set__failures=0
        )
        return used == 1

    def purge(self, now: datetime) -> dict[str, int]:
        return {"one-time code records": LinkOtp.objects(expires__lte=now).delete()}

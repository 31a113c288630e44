"""TousAntiCovid declaration codes: the one single-use code each positive result gets, so that its
patient declares the test in the contact-tracing app (operational records, mongoengine documents).

The code is stored as it is, not hashed: the patient sees it again (and its QR code) every time
they open the result. One record per result, enforced by the unique index on `report`: two
concurrent first requests insert one record, and the loser reads the winner's. Codes are unique
too (`code`), so that a code redeemed at `POST /tac/verify` names one result.
"""

from __future__ import annotations

from datetime import datetime

import mongoengine as me

from .accounts import utc_now
from .records import ALIAS


class DeclarationCode(me.Document):
    report = me.StringField(required=True, unique=True)  # DiagnosticReport id: one code per result
    code = me.StringField(required=True, unique=True)
    patient = me.StringField(required=True)  # Patient id
    owners = me.ListField(me.StringField())  # the organisations the result belongs to
    provider = me.StringField(required=True, choices=("built-in", "http"))
    created = me.DateTimeField(default=utc_now)
    valid_until = me.DateTimeField(required=True)  # the code's own expiry (the provider's answer)
    expires = me.DateTimeField(required=True)  # the result's retention: the record is purged then
    redeemed = me.DateTimeField()  # when the app declared it (built-in provider); None: not yet
    meta = {
        "collection": "_declaration_codes",
        "db_alias": ALIAS,
        "indexes": [{"fields": ["expires"], "expireAfterSeconds": 0}, "patient"],
        "auto_create_index": False,
    }


MODELS = (DeclarationCode,)


class DuplicateCode(Exception):
    """The code is held by another result already (a provider that repeated itself)."""


class DeclarationCodes:
    """The declaration-code records, in the vocabulary of `fhir_server.declaration_codes`."""

    def of_report(self, report: str) -> DeclarationCode | None:
        return DeclarationCode.objects(report=report).first()

    def of_code(self, code: str) -> DeclarationCode | None:
        return DeclarationCode.objects(code=code).first()

    def code_taken(self, code: str) -> bool:
        return DeclarationCode.objects(code=code).count() > 0

    def claim(self, **fields) -> tuple[DeclarationCode, bool]:
        """Store the code of `fields["report"]` unless that result has one: the record kept, and
        whether it is this one. Raises DuplicateCode when another result holds the code."""
        record = DeclarationCode(**fields)
        try:
            record.save(force_insert=True)
            return record, True
        except me.NotUniqueError:
            existing = self.of_report(fields["report"])
            if existing is None:  # the report is free: the code was the duplicate
                raise DuplicateCode() from None
            return existing, False

    def redeem(self, code: str, now: datetime) -> DeclarationCode | None:
        """Mark the code redeemed if it is known, valid at `now` and not redeemed yet (atomically:
        two simultaneous declarations redeem it once); the record, or None when it was not."""
        return DeclarationCode.objects(code=code, redeemed=None, valid_until__gt=now).modify(
            set__redeemed=now, new=True
        )

    def purge_expired(self, now: datetime) -> int:
        return DeclarationCode.objects(expires__lte=now).delete()

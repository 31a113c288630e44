"""TousAntiCovid declaration codes: a positive patient gets one single-use code, with its QR
code, to declare the positive test in the contact-tracing app (as SI-DEP did).

SI-DEP took these codes from the app's submission-code server over a private HTTP API; here a
provider gives them:

- `HttpCodeProvider(url, user, password, timeout)`: such a server. The protocol (the one
  `fhir_server.code_server.start_code_server` serves locally): `POST url` with JSON
  `{"validUntil": "<ISO 8601 instant>"}` (the latest expiry the platform wants), HTTP basic auth
  when credentials are set; a 2xx answer is JSON `{"code": "<code>", "validUntil": "<ISO 8601
  instant>"}` (its expiry may be earlier than asked). Anything else is a `CodeProviderError`.
- `BuiltInCodeProvider()`, the embedded default (DECLARATION_CODE_PROVIDER_URL unset): codes made
  here, 12 characters (the length of the codes TousAntiCovid gave for a test result) from an
  alphabet without the look-alikes 0/O, 1/I/L, so that a code read aloud or typed is typed
  right; they are redeemed once at `POST /tac/verify` (`fhir_server.tac`).

`code_for(report_id, patient_id, owners, expires)` gives the one code of a positive result: stored
with the result (storage/declaration_codes.py), fetched from the provider the first time only.
One code per result, never reused for another, the same for concurrent first calls (a unique
index on the report decides; a code fetched by the loser of that race is dropped, never shown).
The code keeps the expiry it got first: a result whose code expired does not get a second one.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import requests
from dateutil.relativedelta import relativedelta

from operations.certificates.qr import qr_png

from .settings import Settings
from .storage.accounts import utc_now
from .storage.declaration_codes import DeclarationCode, DeclarationCodes, DuplicateCode

CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L
CODE_LENGTH = 12
# What a code from a server may look like: printable, short (it is typed into the app).
_SERVER_CODE = re.compile(r"[0-9A-Za-z-]{6,64}")
# The app opened on its declaration screen with the code filled in, which the QR code carries.
APP_LINK = "https://bonjour.tousanticovid.gouv.fr/app/code/{code}"
MAX_ATTEMPTS = 5  # fresh codes tried when one turns out to be taken already


class CodeProviderError(Exception):
    """No code could be had from the provider; `reason` is for operators (no personal value)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class IssuedCode:
    code: str
    valid_until: datetime  # naive UTC, as the records store it


class CodeProvider(Protocol):
    name: str  # "http" | "built-in"

    def new_code(self, valid_until: datetime) -> IssuedCode:
        """A code never given before, valid at most until `valid_until` (naive UTC)."""


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _instant(moment: datetime) -> str:
    return _naive_utc(moment).replace(microsecond=0).isoformat() + "Z"


class HttpCodeProvider:
    """A client of a submission-code server (the protocol above)."""

    name = "http"

    def __init__(self, url: str, user: str | None = None, password: str | None = None, timeout: float = 10.0):
        self.url = url
        self.auth = (user, password or "") if user else None
        self.timeout = timeout

    def new_code(self, valid_until: datetime) -> IssuedCode:
        try:
            response = requests.post(
                self.url,
                json={"validUntil": _instant(valid_until)},
                headers={"Accept": "application/json"},
                auth=self.auth,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            raise CodeProviderError("serveur de codes TousAntiCovid : délai dépassé") from None
        except requests.RequestException:
            raise CodeProviderError("serveur de codes TousAntiCovid : injoignable") from None
        if not 200 <= response.status_code < 300:
            raise CodeProviderError(f"serveur de codes TousAntiCovid : HTTP {response.status_code}")
        return self._issued(response)

    @staticmethod
    def _issued(response: requests.Response) -> IssuedCode:
        try:
            body = response.json()
            code, until = body["code"], datetime.fromisoformat(body["validUntil"].replace("Z", "+00:00"))
        except (ValueError, TypeError, KeyError, AttributeError):
            raise CodeProviderError("serveur de codes TousAntiCovid : réponse illisible") from None
        if not isinstance(code, str) or not _SERVER_CODE.fullmatch(code) or until.tzinfo is None:
            raise CodeProviderError("serveur de codes TousAntiCovid : réponse illisible")
        return IssuedCode(code, _naive_utc(until))


class BuiltInCodeProvider:
    """Codes made here; uniqueness is the records' unique index (code_for tries another)."""

    name = "built-in"

    def __init__(self, length: int = CODE_LENGTH):
        self.length = length

    def new_code(self, valid_until: datetime) -> IssuedCode:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(self.length))
        return IssuedCode(code, _naive_utc(valid_until))


def provider_from_settings(settings: Settings) -> CodeProvider:
    if settings.declaration_code_provider_url:
        return HttpCodeProvider(
            settings.declaration_code_provider_url,
            settings.declaration_code_provider_user,
            settings.declaration_code_provider_password,
            settings.declaration_code_provider_timeout,
        )
    return BuiltInCodeProvider()


def retention_end(settings: Settings, sampled_at: datetime) -> datetime:
    """When a result's records go (as `fhir_server.notifications.expires`): months after sampling."""
    return _naive_utc(sampled_at) + relativedelta(months=settings.result_retention_months)


def _current_provider() -> CodeProvider:
    from flask import current_app, has_app_context

    if has_app_context() and "sidep.declaration_codes" in current_app.extensions:
        return current_app.extensions["sidep.declaration_codes"]
    return provider_from_settings(Settings.from_env())


def code_for(
    report_id: str,
    patient_id: str,
    owners,
    expires: datetime,
    provider: CodeProvider | None = None,
    now: datetime | None = None,
) -> DeclarationCode:
    """The one declaration code of this positive result (a stored record: `.code`, `.valid_until`,
    `.redeemed`), asked from the provider the first time. `expires`: the result's retention
    (`retention_end`). Raises CodeProviderError when the provider gives none."""
    records = DeclarationCodes()
    existing = records.of_report(report_id)
    if existing is not None:
        return existing
    provider = provider or _current_provider()
    expires = _naive_utc(expires)
    for _ in range(MAX_ATTEMPTS):
        issued = provider.new_code(expires)
        try:
            record, _mine = records.claim(
                report=report_id,
                code=issued.code,
                patient=patient_id,
                owners=list(owners or []),
                provider=provider.name,
                created=now or utc_now(),
                valid_until=min(issued.valid_until, expires),
                expires=expires,
            )
            return record
        except DuplicateCode:  # another result holds this code: never give it twice
            continue
    raise CodeProviderError("codes TousAntiCovid : le fournisseur ne donne que des codes déjà attribués")


def app_link(code: str) -> str:
    return APP_LINK.format(code=code)


def qr_code_png(code: str) -> bytes:
    """The QR code of a declaration code: the app's link with the code filled in."""
    return qr_png(app_link(code))

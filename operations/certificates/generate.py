"""From the facts of one result to its signed EU DCC(s): plan, build, validate, sign.

Nothing here is stored: certificates are made again on every request from the current data, so a
corrected name gives a corrected certificate (same UVCI while the result version is the same).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fhir_server.outcome import FhirError, Issue

from . import hcert
from .dcc_schema import DccPayloadError
from .facts import CertificateFacts, kind_of_loinc, loinc_table
from .icao import transliterate
from .keys import KeyRing
from .select import PlannedDcc, plan_certificates, rules
from .uvci import uvci_for


@dataclass(frozen=True)
class IssuedDcc:
    type: str  # "test" | "recovery"
    uvci: str
    payload: dict
    hc1: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class CertificateSet:
    facts: CertificateFacts
    dccs: tuple[IssuedDcc, ...]
    generated_at: dt.datetime
    # why the DCCs this result would give were not made (e.g. a rapid antigen test without its
    # device): the result sheet stands alone, the QR and HC1 outputs answer with this error
    withheld: FhirError | None = None

    def dcc(self, certificate_type: str) -> IssuedDcc | None:
        return next((d for d in self.dccs if d.type == certificate_type), None)


def _unprocessable(en: str, fr: str, expressions: list[str]) -> FhirError:
    return FhirError(422, Issue("error", "processing", en, fr, expressions))


def _require_dcc_inputs(facts: CertificateFacts) -> None:
    """What the schema alone does not catch but a verifier app would reject."""
    if facts.test_kind == "antigen" and not facts.device_id:
        raise _unprocessable(
            "A rapid antigen test certificate needs the test device identifier from the EU list "
            "(Observation.device.identifier, system https://covid-19-diagnostics.jrc.ec.europa.eu/devices).",
            "Un certificat de test antigénique nécessite l'identifiant du dispositif de test de la "
            "liste européenne (Observation.device.identifier).",
            ["Observation.device"],
        )
    for name in (facts.family_name, facts.given_names):
        if name and not transliterate(name):
            raise _unprocessable(
                f"The name '{name}' has no ICAO 9303 Latin transliteration.",
                f"Le nom « {name} » n'a pas de translittération latine OACI 9303.",
                ["Patient.name"],
            )


def _fhir_expressions(error: DccPayloadError) -> list[str]:
    mapping = rules()["fhir_expression_of_dcc_field"]
    found = []
    for path, _ in error.problems:
        expression = next((v for k, v in mapping.items() if path == k or path.startswith(k + ".")), None)
        found.append(expression or f"DCC {path}")
    return sorted(set(found))


def _payload(facts: CertificateFacts, plan: PlannedDcc, uvci: str, issuer: str) -> dict:
    if plan.group == "t":
        test_type = loinc_table()["kinds"][kind_of_loinc(facts.loinc)]["dcc_test_type"]
        entry = hcert.test_entry(facts, uvci, test_type, issuer)
    else:
        entry = hcert.recovery_entry(facts, uvci, plan.valid_from, plan.valid_until, issuer)
    try:
        return hcert.dcc_payload(facts, plan.group, entry)
    except DccPayloadError as error:
        raise _unprocessable(
            f"The result cannot give a valid EU digital COVID certificate: {error}",
            f"Le résultat ne permet pas de produire un certificat COVID numérique européen valide : {error}",
            _fhir_expressions(error),
        ) from None


def issue_certificates(
    facts: CertificateFacts,
    keyring: KeyRing,
    now: dt.datetime | None = None,
    issuer: str = hcert.DEFAULT_ISSUER,
    sheet_without_dcc: bool = False,
) -> CertificateSet:
    """Sign every DCC this result gives now (none for serology or inconclusive results).

    Raises FhirError: 410 past retention, 422 when no valid payload can be made; with
    `sheet_without_dcc` (the PDF), a result whose DCC lacks an input (the rapid antigen test's
    device, a name without Latin transliteration) gives its result sheet alone, the reason kept
    in `withheld`.
    """
    now = now or dt.datetime.now(dt.UTC)
    plans = plan_certificates(facts, now)
    if plans:
        try:
            _require_dcc_inputs(facts)
        except FhirError as error:
            if not sheet_without_dcc:
                raise
            return CertificateSet(facts, (), now, withheld=error)
    signer = keyring.current_signer(now)
    # A CWT must not outlive the certificate that lets verifiers check it.
    signer_end = signer.certificate.not_valid_after_utc
    issued = []
    for plan in plans:
        uvci = uvci_for(facts.version_key, plan.type)
        payload = _payload(facts, plan, uvci, issuer)
        expires = min(plan.expires_at, signer_end)
        hc1 = hcert.sign_hcert(payload, signer, now, expires)
        issued.append(IssuedDcc(plan.type, uvci, payload, hc1, expires))
    return CertificateSet(facts, tuple(issued), now)

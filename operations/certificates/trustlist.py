"""The public trust list: every active DSC certificate by kid, for verifiers.

Served by the core at `GET /trust-list` (JSON). Shape:
    {"country": "FR", "certificates": {"<kid base64>": {"kid": ..., "certificate": "<DER base64>",
     "country": "FR", "notBefore": ISO 8601, "notAfter": ISO 8601,
     "keyUsage": ["test", "recovery"]}}}
"""

from __future__ import annotations

import base64

from cryptography import x509

from .keys import DCC_EKU_RECOVERY, DCC_EKU_TEST, DCC_EKU_VACCINATION, KeyRing

_EKU_NAMES = {DCC_EKU_TEST: "test", DCC_EKU_VACCINATION: "vaccination", DCC_EKU_RECOVERY: "recovery"}
# Early versions of the DCC specification printed these OIDs with an extra ".0" arc, and some
# issuers' DSCs carry them: verifiers accept both spellings.
_EKU_NAMES.update(
    {
        x509.ObjectIdentifier(oid.dotted_string.replace(".4.1.1847.", ".4.1.0.1847.")): name
        for oid, name in list(_EKU_NAMES.items())
    }
)


def dcc_key_usages(certificate: x509.Certificate) -> list[str]:
    """The DCC types the certificate may sign; none listed means all (DCC rule)."""
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []
    return [_EKU_NAMES[oid] for oid in usages if oid in _EKU_NAMES]


def trust_list(keyring: KeyRing) -> dict:
    entries = {}
    for signer in keyring.signers:
        kid = base64.b64encode(signer.kid).decode("ascii")
        entries[kid] = {
            "kid": kid,
            "certificate": base64.b64encode(signer.der).decode("ascii"),
            "country": "FR",
            "notBefore": signer.certificate.not_valid_before_utc.isoformat(),
            "notAfter": signer.certificate.not_valid_after_utc.isoformat(),
            "keyUsage": dcc_key_usages(signer.certificate),
        }
    return {"country": "FR", "certificates": entries}

"""HCERT (EU Digital COVID Certificate): payload, signature, encoding, and verification.

Issuing path, built for speed (the signature is most of the cost):
    payload (DCC schema 1.3.x) -> CWT claims {1: iss, 6: iat, 4: exp, -260: {1: payload}} (CBOR)
    -> COSE_Sign1, CBOR tag 18, protected header {1: -7 (ES256), 4: kid}, signed here with
       `cryptography` over the Sig_structure built with cbor2 (signature = raw r||s, 64 bytes)
    -> zlib -> Base45 -> "HC1:" prefix.
Every payload is validated against the official schema and value sets before it is signed.

`decode_and_verify` is the verifier side (tests, diagnostics): it relies on independent code
(the `base45` package, jsonschema) and on the published trust list only.
"""
from __future__ import annotations

import base64
import datetime as dt
import sys
import zlib
from array import array
from dataclasses import dataclass
from functools import lru_cache

import base45 as base45_reference
import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature,
                                                             encode_dss_signature)

from .dcc_schema import reference_validator, validate_payload
from .facts import CertificateFacts
from .icao import transliterate
from .keys import DocumentSigner
from .trustlist import dcc_key_usages

DCC_VERSION = "1.3.0"  # the 1.3 line every verifier app knows; valid against the vendored 1.3.3
COUNTRY = "FR"
DEFAULT_ISSUER = "SI-DEP - Ministère chargé de la santé"
DISEASE_COVID19 = "840539006"
TEST_RESULT_CODES = {"detected": "260373001", "not-detected": "260415000"}
HC1_PREFIX = "HC1:"
COSE_SIGN1_TAG = 18
ALG_ES256, ALG_PS256 = -7, -37
HEADER_ALG, HEADER_KID = 1, 4
CLAIM_ISS, CLAIM_EXP, CLAIM_IAT, CLAIM_HCERT = 1, 4, 6, -260
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
# zlib header, CBOR tag 18, CBOR array of 4: uncompressed COSE is tolerated when verifying.
_ZLIB_OR_COSE_FIRST_BYTES = (b"\x78", b"\xd2", b"\x84")


# ---- payload ----------------------------------------------------------------------------------

def name_part(facts: CertificateFacts) -> dict:
    """`nam`: names as stored, plus their ICAO 9303 forms; an empty name part is left out."""
    nam = {}
    if facts.family_name:
        nam["fn"], nam["fnt"] = facts.family_name, transliterate(facts.family_name)
    if facts.given_names:
        nam["gn"], nam["gnt"] = facts.given_names, transliterate(facts.given_names)
    return nam


def utc_timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_entry(facts: CertificateFacts, uvci: str, test_type: str,
               issuer: str = DEFAULT_ISSUER) -> dict:
    entry = {"tg": DISEASE_COVID19, "tt": test_type}
    if facts.test_kind == "antigen" and facts.device_id:
        entry["ma"] = facts.device_id
    if facts.test_kind == "naat" and facts.test_name:
        entry["nm"] = facts.test_name[:80]
    entry.update({"sc": utc_timestamp(facts.sampled_at), "tr": TEST_RESULT_CODES[facts.result]})
    if facts.lab_name:
        entry["tc"] = facts.lab_name[:80]
    entry.update({"co": COUNTRY, "is": issuer, "ci": uvci})
    return entry


def recovery_entry(facts: CertificateFacts, uvci: str, valid_from: dt.date,
                   valid_until: dt.date, issuer: str = DEFAULT_ISSUER) -> dict:
    first_positive = facts.sampled_at.astimezone(dt.timezone.utc).date()
    return {"tg": DISEASE_COVID19, "fr": first_positive.isoformat(), "co": COUNTRY, "is": issuer,
            "df": valid_from.isoformat(), "du": valid_until.isoformat(), "ci": uvci}


def dcc_payload(facts: CertificateFacts, group: str, entry: dict) -> dict:
    """A complete DCC: group is "t" (test) or "r" (recovery); validated before it is returned."""
    payload = {"ver": DCC_VERSION, "nam": name_part(facts), "dob": facts.birth_date, group: [entry]}
    validate_payload(payload)
    return payload


# ---- signing ----------------------------------------------------------------------------------

_B45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


# The 2-character Base45 form of every value below 45*45: a table small enough to stay in the
# CPU cache (a 65,536-entry table of whole words measured 2x slower once signing ran between).
_B45_PAIRS = [_B45_ALPHABET[v % 45] + _B45_ALPHABET[v // 45] for v in range(45 * 45)]


def b45encode(data: bytes) -> str:
    """RFC 9285 Base45 (the `base45` package's pure-Python loop costs more than the signature)."""
    pairs, alphabet = _B45_PAIRS, _B45_ALPHABET
    even = len(data) & ~1
    words = array("H", data[:even])
    if sys.byteorder == "little":
        words.byteswap()  # Base45 reads each pair of bytes big-endian
    text = "".join([pairs[v % 2025] + alphabet[v // 2025] for v in words])
    if len(data) & 1:
        text += pairs[data[-1]]
    return text


@lru_cache(maxsize=64)
def _protected_header(kid: bytes) -> bytes:
    return cbor2.dumps({HEADER_ALG: ALG_ES256, HEADER_KID: kid})


def _raw_signature(der_signature: bytes) -> bytes:
    r, s = decode_dss_signature(der_signature)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def cwt_claims(payload: dict, issued_at: dt.datetime, expires_at: dt.datetime) -> bytes:
    return cbor2.dumps({CLAIM_ISS: COUNTRY, CLAIM_IAT: int(issued_at.timestamp()),
                        CLAIM_EXP: int(expires_at.timestamp()), CLAIM_HCERT: {1: payload}})


def sign_cose(claims: bytes, signer: DocumentSigner) -> bytes:
    """COSE_Sign1 (tag 18) over CBOR claims, ES256, kid in the protected header."""
    protected = _protected_header(signer.kid)
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", claims])
    signature = _raw_signature(signer.private_key.sign(to_be_signed, _ECDSA_SHA256))
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, claims, signature]))


def encode_hc1(cose: bytes) -> str:
    return HC1_PREFIX + b45encode(zlib.compress(cose, 9))


def sign_hcert(payload: dict, signer: DocumentSigner, issued_at: dt.datetime,
               expires_at: dt.datetime) -> str:
    """The `HC1:` string of an already validated payload."""
    return encode_hc1(sign_cose(cwt_claims(payload, issued_at, expires_at), signer))


def issue_hcert(payload: dict, signer: DocumentSigner, issued_at: dt.datetime,
                expires_at: dt.datetime) -> str:
    """Validate (schema + value sets), then sign: an invalid payload is never signed."""
    validate_payload(payload)
    return sign_hcert(payload, signer, issued_at, expires_at)


# ---- verification -----------------------------------------------------------------------------

class HcertVerificationError(ValueError):
    """`reason`: prefix, base45, zlib, cose, kid, signature, expired, not-yet-valid, schema,
    key-usage."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(f"{reason}: {message}")


@dataclass(frozen=True)
class VerifiedHcert:
    payload: dict
    claims: dict
    kid: bytes
    certificate: x509.Certificate


def _trusted_certificates(trust_list: dict) -> dict[str, dict]:
    return trust_list.get("certificates", trust_list)


def _cose_parts(hc1: str) -> list:
    if not hc1.startswith(HC1_PREFIX):
        raise HcertVerificationError("prefix", "not an HC1: string")
    try:
        compressed = base45_reference.b45decode(hc1[len(HC1_PREFIX):])
    except ValueError as error:
        raise HcertVerificationError("base45", str(error)) from None
    if compressed[:1] not in _ZLIB_OR_COSE_FIRST_BYTES:
        raise HcertVerificationError("zlib", "neither zlib data nor a COSE message")
    try:
        cose = zlib.decompress(compressed) if compressed[:1] == b"\x78" else compressed
    except zlib.error as error:
        raise HcertVerificationError("zlib", str(error)) from None
    try:
        message = cbor2.loads(cose)
    except (cbor2.CBORDecodeError, ValueError) as error:
        raise HcertVerificationError("cose", str(error)) from None
    if isinstance(message, cbor2.CBORTag):
        message = message.value
    if not (isinstance(message, (list, tuple)) and len(message) == 4):
        raise HcertVerificationError("cose", "not a COSE_Sign1 structure")
    return message


def _verify_signature(certificate: x509.Certificate, alg: int, to_be_signed: bytes,
                      signature: bytes) -> None:
    key = certificate.public_key()
    try:
        if alg == ALG_ES256 and isinstance(key, ec.EllipticCurvePublicKey):
            if len(signature) != 64:
                raise InvalidSignature()
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                       int.from_bytes(signature[32:], "big"))
            key.verify(der, to_be_signed, _ECDSA_SHA256)
        elif alg == ALG_PS256 and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, to_be_signed,
                       padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        else:
            raise HcertVerificationError("signature", f"unsupported algorithm {alg}")
    except InvalidSignature:
        raise HcertVerificationError("signature", "signature does not verify") from None


def _check_validity(claims: dict, now: dt.datetime) -> None:
    stamp = now.timestamp()
    if CLAIM_EXP in claims and stamp > claims[CLAIM_EXP]:
        raise HcertVerificationError("expired", "the certificate has expired")
    if CLAIM_IAT in claims and stamp < claims[CLAIM_IAT]:
        raise HcertVerificationError("not-yet-valid", "issued after the validation time")


def _check_key_usage(certificate: x509.Certificate, payload: dict) -> None:
    usages = dcc_key_usages(certificate)
    kind = {"t": "test", "v": "vaccination", "r": "recovery"}
    kinds = [kind[g] for g in kind if g in payload]
    if usages and not all(k in usages for k in kinds):
        raise HcertVerificationError("key-usage", f"signer may only sign {usages}, not {kinds}")


def decode_and_verify(hc1: str, trust_list: dict, now: dt.datetime | None = None,
                      check_expiry: bool = True) -> VerifiedHcert:
    """Decode an HC1 string and verify it with the published trust list only."""
    protected_bytes, unprotected, claims_bytes, signature = _cose_parts(hc1)
    protected = cbor2.loads(protected_bytes) if protected_bytes else {}
    kid = protected.get(HEADER_KID) or (unprotected or {}).get(HEADER_KID)
    if HEADER_ALG not in protected:
        raise HcertVerificationError("cose", "the algorithm is not in the protected header")
    entry = _trusted_certificates(trust_list).get(base64.b64encode(kid or b"").decode("ascii"))
    if entry is None:
        raise HcertVerificationError("kid", "no trusted certificate with this kid")
    certificate = x509.load_der_x509_certificate(base64.b64decode(entry["certificate"]))
    to_be_signed = cbor2.dumps(["Signature1", protected_bytes, b"", claims_bytes])
    _verify_signature(certificate, protected[HEADER_ALG], to_be_signed, signature)
    claims = cbor2.loads(claims_bytes)
    if check_expiry:
        _check_validity(claims, now or dt.datetime.now(dt.timezone.utc))
    payload = (claims.get(CLAIM_HCERT) or {}).get(1)
    errors = sorted(reference_validator().iter_errors(payload), key=str) if payload else ["empty"]
    if errors:
        raise HcertVerificationError("schema", str(errors[0])[:300])
    _check_key_usage(certificate, payload)
    return VerifiedHcert(payload, claims, kid, certificate)

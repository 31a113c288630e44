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
import zlib
from dataclasses import dataclass
from functools import lru_cache

import base45 as base45_reference
import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

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
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_entry(facts: CertificateFacts, uvci: str, test_type: str, issuer: str = DEFAULT_ISSUER) -> dict:
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


def recovery_entry(
    facts: CertificateFacts, uvci: str, valid_from: dt.date, valid_until: dt.date, issuer: str = DEFAULT_ISSUER
) -> dict:
    first_positive = facts.sampled_at.astimezone(dt.UTC).date()
    return {
        "tg": DISEASE_COVID19,
        "fr": first_positive.isoformat(),
        "co": COUNTRY,
        "is": issuer,
        "df": valid_from.isoformat(),
        "du": valid_until.isoformat(),
        "ci": uvci,
    }


def dcc_payload(facts: CertificateFacts, group: str, entry: dict) -> dict:
    """A complete DCC: group is "t" (test) or "r" (recovery); validated before it is returned."""
    payload = {"ver": DCC_VERSION, "nam": name_part(facts), "dob": facts.birth_date, group: [entry]}
    validate_payload(payload)
    return payload


# ---- signing ----------------------------------------------------------------------------------

_B45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"

# Base45 turns each pair of bytes, n = 256 * first + second, into the three digits n % 45,
# n // 45 % 45 and n // 2025. A Python loop over the ~215 pairs of an HCERT cost 20-25 µs, about
# as much as the ECDSA signature itself, so the arithmetic is done on all pairs at once ("SIMD
# within a register"): each pair is a 4-byte lane of one big integer (little-endian, first pair
# in the lowest lane), and n // 45 is the multiply-and-shift (n * 11651) >> 19, exact for every
# n < 2**16 (checked below). n * 11651 < 2**30 stays inside its lane; after the shift, 11 bits per
# lane (the quotient is < 1457) are kept, cutting off what the next lane shifted in.
_LANE_BYTES = 4
_DIV45_MULTIPLIER, _DIV45_SHIFT = 11651, 19
assert all((n * _DIV45_MULTIPLIER) >> _DIV45_SHIFT == n // 45 for n in range(1 << 16))
# Digits are written plus one, so that the zero bytes left in each lane can be deleted.
_B45_DIGIT_PLUS_ONE_TO_CHARACTER = bytes.maketrans(bytes(range(1, 46)), _B45_ALPHABET.encode("ascii"))


@lru_cache(maxsize=64)
def _lane_constants(lanes: int) -> tuple[int, int]:
    """(11 low bits of every lane set, 1 in each of the 3 digit bytes of every lane)."""
    return (
        int.from_bytes(b"\xff\x07\x00\x00" * lanes, "little"),
        int.from_bytes(b"\x01\x01\x01\x00" * lanes, "little"),
    )


def _div45(lanes_value: int, mask: int) -> int:
    return ((lanes_value * _DIV45_MULTIPLIER) >> _DIV45_SHIFT) & mask


def b45encode(data: bytes) -> str:
    """RFC 9285 Base45 (the `base45` package's pure-Python loop costs more than the signature)."""
    lanes = len(data) // 2
    packed = bytearray(_LANE_BYTES * lanes)
    packed[0::_LANE_BYTES] = data[1 : 2 * lanes : 2]  # the low byte of each pair first
    packed[1::_LANE_BYTES] = data[0 : 2 * lanes : 2]
    n = int.from_bytes(packed, "little")
    mask, ones = _lane_constants(lanes)
    q = _div45(n, mask)  # n // 45
    e = _div45(q, mask)  # n // 2025
    # Lane bytes (c, d, e) = c + 256 d + 65536 e, with c = n - 45 q and d = q - 45 e:
    digits = (n + 211 * q + 54016 * e + ones).to_bytes(_LANE_BYTES * lanes, "little")
    if len(data) & 1:  # a last single byte b gives b % 45, b // 45
        digits += bytes((data[-1] % 45 + 1, data[-1] // 45 + 1))
    return digits.translate(_B45_DIGIT_PLUS_ONE_TO_CHARACTER, b"\x00").decode("ascii")


# ---- COSE framing: everything but the claims and the signature is constant per key -----------


def _cbor_bytes_head(length: int) -> bytes:
    """Head of a CBOR byte string (major type 2) of `length` bytes (RFC 8949 3.1)."""
    if length < 24:
        return bytes((0x40 | length,))
    if length < 0x100:
        return bytes((0x58, length))
    if length < 0x10000:
        return b"\x59" + length.to_bytes(2, "big")
    return b"\x5a" + length.to_bytes(4, "big")


_CBOR_ARRAY_OF_4 = b"\x84"
_CBOR_TAG_18 = b"\xd2"  # COSE_Sign1
_SIGNATURE_HEAD = _cbor_bytes_head(64)  # ES256: raw r || s


@dataclass(frozen=True)
class _CoseFraming:
    protected: bytes  # serialized protected header {1: -7, 4: kid}
    to_be_signed_head: bytes  # Sig_structure ["Signature1", protected, b"", claims] up to claims
    message_head: bytes  # 18([protected, {}, claims, signature]) up to claims


@lru_cache(maxsize=64)
def _cose_framing(kid: bytes) -> _CoseFraming:
    protected = cbor2.dumps({HEADER_ALG: ALG_ES256, HEADER_KID: kid})
    protected_item = cbor2.dumps(protected)
    return _CoseFraming(
        protected,
        _CBOR_ARRAY_OF_4 + cbor2.dumps("Signature1") + protected_item + cbor2.dumps(b""),
        _CBOR_TAG_18 + _CBOR_ARRAY_OF_4 + protected_item + cbor2.dumps({}),
    )


def _raw_signature(der: bytes) -> bytes:
    """COSE's r || s (32 bytes each) of OpenSSL's DER SEQUENCE {INTEGER r, INTEGER s}: read in
    place (3.5x faster than decode_dss_signature and back to bytes). A P-256 signature is at most
    72 bytes, so every DER length is one byte; an integer has a leading 0 when its high bit is
    set and is shorter when it is small."""
    r_length = der[3]
    if der[0] != 0x30 or der[2] != 0x02 or der[4 + r_length] != 0x02:
        raise ValueError("not a DER ECDSA signature")
    r, s = der[4 : 4 + r_length], der[6 + r_length :]
    return r[-32:].rjust(32, b"\0") + s[-32:].rjust(32, b"\0")


def cwt_claims(payload: dict, issued_at: dt.datetime, expires_at: dt.datetime) -> bytes:
    return cbor2.dumps(
        {
            CLAIM_ISS: COUNTRY,
            CLAIM_IAT: int(issued_at.timestamp()),
            CLAIM_EXP: int(expires_at.timestamp()),
            CLAIM_HCERT: {1: payload},
        }
    )


def sign_cose(claims: bytes, signer: DocumentSigner) -> bytes:
    """COSE_Sign1 (tag 18) over CBOR claims, ES256, kid in the protected header."""
    framing = _cose_framing(signer.kid)
    claims_item = _cbor_bytes_head(len(claims)) + claims
    der = signer.private_key.sign(framing.to_be_signed_head + claims_item, _ECDSA_SHA256)
    return framing.message_head + claims_item + _SIGNATURE_HEAD + _raw_signature(der)


# zlib level 9 (the smallest QR). zlib's defaults (32 KiB window, memLevel 8) allocate ~270 KiB
# per call, which glibc may hand back to the system and page-fault in again on the next call: up
# to 50 µs for a ~400-byte message. A DCC's COSE message (~300-900 bytes) fits a 2 KiB window
# (matches reach back 2048 - 262 bytes) and the 2,048-symbol block buffer of memLevel 5, where
# level 9 finds the same matches and blocks: the raw deflate data is the same. It gets the same zlib header as zlib.compress(data, 9), 0x78 0xDA
# (32 KiB window, level 9), which verifiers look for; the declared window is only an upper bound
# for the decompressor. A test checks that the output equals zlib.compress(data, 9).
_ZLIB_HEADER = b"\x78\xda"
_DEFLATE_LEVEL, _DEFLATE_RAW_WINDOW_BITS, _DEFLATE_MEM_LEVEL = 9, -11, 5
_SMALL_WINDOW_MAX_INPUT = 2048 - 262


def zlib_compress(data: bytes) -> bytes:
    if len(data) > _SMALL_WINDOW_MAX_INPUT:
        return zlib.compress(data, _DEFLATE_LEVEL)
    deflate = zlib.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, _DEFLATE_RAW_WINDOW_BITS, _DEFLATE_MEM_LEVEL)
    return _ZLIB_HEADER + deflate.compress(data) + deflate.flush() + zlib.adler32(data).to_bytes(4, "big")


def encode_hc1(cose: bytes) -> str:
    return HC1_PREFIX + b45encode(zlib_compress(cose))


def sign_hcert(payload: dict, signer: DocumentSigner, issued_at: dt.datetime, expires_at: dt.datetime) -> str:
    """The `HC1:` string of an already validated payload."""
    return encode_hc1(sign_cose(cwt_claims(payload, issued_at, expires_at), signer))


def issue_hcert(payload: dict, signer: DocumentSigner, issued_at: dt.datetime, expires_at: dt.datetime) -> str:
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
        compressed = base45_reference.b45decode(hc1[len(HC1_PREFIX) :])
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


def _verify_signature(certificate: x509.Certificate, alg: int, to_be_signed: bytes, signature: bytes) -> None:
    key = certificate.public_key()
    try:
        if alg == ALG_ES256 and isinstance(key, ec.EllipticCurvePublicKey):
            if len(signature) != 64:
                raise InvalidSignature()
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            key.verify(der, to_be_signed, _ECDSA_SHA256)
        elif alg == ALG_PS256 and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, to_be_signed, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
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


def decode_and_verify(
    hc1: str, trust_list: dict, now: dt.datetime | None = None, check_expiry: bool = True
) -> VerifiedHcert:
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
        _check_validity(claims, now or dt.datetime.now(dt.UTC))
    payload = (claims.get(CLAIM_HCERT) or {}).get(1)
    errors = sorted(reference_validator().iter_errors(payload), key=str) if payload else ["empty"]
    if errors:
        raise HcertVerificationError("schema", str(errors[0])[:300])
    _check_key_usage(certificate, payload)
    return VerifiedHcert(payload, claims, kid, certificate)

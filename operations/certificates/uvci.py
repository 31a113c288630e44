"""UVCI: the unique certificate identifier `URN:UVCI:01:FR:<opaque>#<check>`.

The check character is Luhn mod N over the whole UVCI before '#', prefix "URN:UVCI:" included,
with the 38-character set below (eHealth Network guidelines on UVCI, Annex 2, and the DCC schema
FAQ "UVCI checksum"; the official French test vectors, e.g. URN:UVCI:01:FR:5G96JHEY665E#3, follow
exactly this).

The opaque part is derived from the result version and the certificate type, so the same result
version always yields the same UVCI, and a corrected result (new version) a new one.
"""

from __future__ import annotations

import base64
import hashlib

CHARSET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/:"
_CODE_POINTS = {c: i for i, c in enumerate(CHARSET)}
PREFIX = "URN:UVCI:01:FR:"
# 26 base32 characters = 130 bits: collisions stay negligible over billions of certificates.
OPAQUE_LENGTH = 26


def luhn_mod_n_check_character(text: str) -> str:
    n = len(CHARSET)
    factor, total = 2, 0
    for char in reversed(text):
        addend = factor * _CODE_POINTS[char]  # KeyError: a character outside the charset
        total += addend // n + addend % n
        factor = 1 if factor == 2 else 2
    return CHARSET[(n - total % n) % n]


def with_check_character(uvci: str) -> str:
    return f"{uvci}#{luhn_mod_n_check_character(uvci)}"


def has_valid_check_character(uvci: str) -> bool:
    body, sep, check = uvci.rpartition("#")
    if not sep or len(check) != 1:
        return False
    try:
        return luhn_mod_n_check_character(body) == check
    except KeyError:
        return False


def uvci_for(version_key: str, certificate_type: str) -> str:
    """Deterministic UVCI for one certificate ("test" or "recovery") of one result version."""
    digest = hashlib.sha256(f"sidep-uvci-v1|{certificate_type}|{version_key}".encode()).digest()
    opaque = base64.b32encode(digest).decode("ascii")[:OPAQUE_LENGTH]
    return with_check_character(PREFIX + opaque)

"""QR code PNG of an `HC1:` string: error correction level Q (as the DCC specification asks),
alphanumeric mode (Base45 was designed to fit it), written as a 1-bit PNG with zlib directly.

Speed: the `qrcode` package spends ~85% of its time trying the 8 mask patterns to keep the one
with the lowest ISO 18004 penalty score. Any mask gives a standard, readable symbol, so one fixed
mask is used (about 6x faster); tests decode every generated PNG with zbar.
"""
from __future__ import annotations

import re
import struct
import zlib
from bisect import bisect_left

import qrcode
from qrcode.constants import ERROR_CORRECT_Q
from qrcode.util import BIT_LIMIT_TABLE

FIXED_MASK_PATTERN = 2
QUIET_ZONE = 4  # modules, as ISO 18004 requires
DEFAULT_SCALE = 4  # pixels per module
_ALPHANUMERIC = re.compile(r"[0-9A-Z $%*+\-./:]*")


def _alphanumeric_version(length: int) -> int:
    """Smallest QR version holding `length` alphanumeric characters at level Q (ISO 18004:
    4-bit mode, a 9/11/13-bit count by version range, 11 bits per pair, 6 for a last single).
    Computed directly: qrcode's own best_fit re-encodes the data to count the bits."""
    data_bits = 11 * (length // 2) + 6 * (length % 2)
    for count_bits, last_version in ((9, 9), (11, 26), (13, 40)):
        version = bisect_left(BIT_LIMIT_TABLE[ERROR_CORRECT_Q], 4 + count_bits + data_bits)
        if version <= last_version:
            return version
    raise ValueError("too long for a QR code at error correction level Q")


def qr_matrix(text: str) -> list[list[bool]]:
    """Modules (True = dark), quiet zone included."""
    alphanumeric = _ALPHANUMERIC.fullmatch(text) is not None
    code = qrcode.QRCode(version=_alphanumeric_version(len(text)) if alphanumeric else None,
                         error_correction=ERROR_CORRECT_Q, border=QUIET_ZONE,
                         mask_pattern=FIXED_MASK_PATTERN)
    code.add_data(text, optimize=0)
    code.make(fit=not alphanumeric)
    return code.get_matrix()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _scanline(row: list[bool], scale: int) -> bytes:
    """One 1-bit grey row (0 = black), preceded by the PNG filter byte 0 (none)."""
    bits = "".join(("0" if dark else "1") * scale for dark in row)
    bits += "1" * (-len(bits) % 8)
    return b"\x00" + int(bits, 2).to_bytes(len(bits) // 8, "big")


def png_of_matrix(matrix: list[list[bool]], scale: int = DEFAULT_SCALE) -> bytes:
    size = len(matrix) * scale
    raw = b"".join(_scanline(row, scale) * scale for row in matrix)
    header = struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(raw, 6)) + _png_chunk(b"IEND", b""))


def qr_png(text: str, scale: int = DEFAULT_SCALE) -> bytes:
    return png_of_matrix(qr_matrix(text), scale)

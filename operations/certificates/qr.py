"""QR code PNG of an `HC1:` string: error correction level Q (as the DCC specification asks),
alphanumeric mode (Base45 was designed to fit it), written as a 1-bit PNG with zlib directly.

Speed (the target is 150 PNG/s on one core): the `qrcode` package spends ~85% of its time trying
the 8 mask patterns to keep the one with the lowest ISO 18004 penalty score. Any mask gives a
standard, readable symbol, so one fixed mask is used (about 6x faster); tests decode every PNG
with zbar. Of the rest, half went to its Reed-Solomon code (a polynomial class allocating lists
per step): the codewords are computed here with log/antilog tables and handed to qrcode through
its `data_cache`, which then only places modules; a test checks they equal qrcode's own.
"""

from __future__ import annotations

import re
import struct
import zlib
from bisect import bisect_left
from functools import cache, lru_cache

import qrcode
from qrcode.base import rs_blocks
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


# GF(256) with the QR primitive polynomial x^8 + x^4 + x^3 + x^2 + 1.
_EXP = [0] * 512
_LOG = [0] * 256
_value = 1
for _power in range(255):
    _EXP[_power] = _value
    _LOG[_value] = _power
    _value <<= 1
    if _value & 0x100:
        _value ^= 0x11D
for _power in range(255, 512):
    _EXP[_power] = _EXP[_power - 255]
_PAD_BYTES = (0xEC, 0x11)
_ALNUM_VALUES = {c: i for i, c in enumerate("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")}


@cache
def _generator_logs(degree: int) -> tuple[int, ...]:
    """Logs of the coefficients (after the leading 1) of prod(x - a^i), i < degree."""
    poly = [1]
    for i in range(degree):
        nxt = poly + [0]
        for j, coefficient in enumerate(poly):
            if coefficient:
                nxt[j + 1] ^= _EXP[_LOG[coefficient] + i]
        poly = nxt
    return tuple(_LOG[c] for c in poly[1:])


def _ecc(data: list[int], degree: int) -> list[int]:
    """Reed-Solomon remainder: the error correction codewords of one block."""
    generator = _generator_logs(degree)
    remainder = [0] * degree
    for byte in data:
        factor = byte ^ remainder[0]
        remainder = remainder[1:] + [0]
        if factor:
            log_factor = _LOG[factor]
            remainder = [r ^ _EXP[log_factor + g] for r, g in zip(remainder, generator, strict=False)]
    return remainder


def _alphanumeric_bits(text: str, version: int) -> str:
    count_bits = 9 if version < 10 else 11 if version < 27 else 13
    values = [_ALNUM_VALUES[c] for c in text]
    pairs = [format(values[i] * 45 + values[i + 1], "011b") for i in range(0, len(values) - 1, 2)]
    tail = [format(values[-1], "06b")] if len(values) % 2 else []
    return "0010" + format(len(text), f"0{count_bits}b") + "".join(pairs + tail)


def codewords(text: str, version: int) -> list[int]:
    """Data and error correction codewords of an alphanumeric text, interleaved (ISO 18004)."""
    blocks = rs_blocks(version, ERROR_CORRECT_Q)
    capacity = 8 * sum(b.data_count for b in blocks)
    bits = _alphanumeric_bits(text, version)
    bits += "0" * min(4, capacity - len(bits))
    bits += "0" * (-len(bits) % 8)
    data = list(int(bits, 2).to_bytes(len(bits) // 8, "big"))
    data += [_PAD_BYTES[i % 2] for i in range(capacity // 8 - len(data))]
    data_blocks, ecc_blocks, offset = [], [], 0
    for block in blocks:
        chunk = data[offset : offset + block.data_count]
        offset += block.data_count
        data_blocks.append(chunk)
        ecc_blocks.append(_ecc(chunk, block.total_count - block.data_count))
    return _interleave(data_blocks) + _interleave(ecc_blocks)


def _interleave(blocks: list[list[int]]) -> list[int]:
    longest = max(len(b) for b in blocks)
    return [b[i] for i in range(longest) for b in blocks if i < len(b)]


@lru_cache(maxsize=4)
def qr_rows(text: str) -> tuple[tuple[bool, ...], ...]:
    """Modules (True = dark), quiet zone included; cached, as the PNG and the PDF of one
    certificate are made from the same matrix (the matrix is most of the QR cost)."""
    alphanumeric = _ALPHANUMERIC.fullmatch(text) is not None
    code = qrcode.QRCode(
        version=_alphanumeric_version(len(text)) if alphanumeric else None,
        error_correction=ERROR_CORRECT_Q,
        border=QUIET_ZONE,
        mask_pattern=FIXED_MASK_PATTERN,
    )
    code.add_data(text, optimize=0)
    if alphanumeric:
        code.data_cache = codewords(text, code.version)  # qrcode then only places the modules
    code.make(fit=not alphanumeric)
    return tuple(tuple(row) for row in code.get_matrix())


def qr_matrix(text: str) -> list[list[bool]]:
    """Modules (True = dark), quiet zone included."""
    return [list(row) for row in qr_rows(text)]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _scanline(row, scale: int) -> bytes:
    """One 1-bit grey row (0 = black), preceded by the PNG filter byte 0 (none)."""
    bits = "".join(("0" if dark else "1") * scale for dark in row)
    bits += "1" * (-len(bits) % 8)
    return b"\x00" + int(bits, 2).to_bytes(len(bits) // 8, "big")


def png_of_matrix(matrix, scale: int = DEFAULT_SCALE) -> bytes:
    size = len(matrix) * scale
    raw = b"".join(_scanline(row, scale) * scale for row in matrix)
    header = struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw, 6))
        + _png_chunk(b"IEND", b"")
    )


def qr_png(text: str, scale: int = DEFAULT_SCALE) -> bytes:
    return png_of_matrix(qr_rows(text), scale)

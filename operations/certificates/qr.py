"""QR code PNG of an `HC1:` string: error correction level Q (as the DCC specification asks),
alphanumeric mode (Base45 was designed to fit it), written as a 1-bit PNG with zlib directly.

Speed (the certificate PDF embeds one per DCC, and its aim is 100 PDF/s on one core): the `qrcode`
package spends ~85% of its time trying the 8 mask patterns to keep the one with the lowest ISO 18004
penalty score. Any mask gives a standard, readable symbol, so one fixed mask is used; tests decode
every PNG with zbar. Its Reed-Solomon code (a polynomial class allocating lists per step) is
replaced by a shift register on Python integers, and its module placement (a loop asking a mask
function per module) by a gather table made once per version from qrcode's own blank symbol: the
masked data bits are one integer XOR, the symbol one `itemgetter` call. Tests check the codewords
and the matrices equal qrcode's own. Other texts (byte mode, the declaration code links) go through
qrcode with the same fixed mask.
"""

from __future__ import annotations

import re
import struct
import zlib
from bisect import bisect_left
from dataclasses import dataclass
from functools import cache, lru_cache
from operator import itemgetter

import qrcode
from qrcode.base import rs_blocks
from qrcode.constants import ERROR_CORRECT_Q
from qrcode.util import BIT_LIMIT_TABLE, mask_func

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


@cache
def _ecc_table(degree: int) -> tuple[int, ...]:
    """For each leading factor, the generator times that factor as one big-endian integer."""
    generator = _generator_logs(degree)
    rows = [0]
    for factor in range(1, 256):
        log_factor = _LOG[factor]
        rows.append(int.from_bytes(bytes(_EXP[log_factor + g] for g in generator), "big"))
    return tuple(rows)


def _ecc(data: list[int], degree: int) -> list[int]:
    """Reed-Solomon remainder: the error correction codewords of one block (the remainder
    register is an integer of `degree` bytes: a shift drops its leading codeword)."""
    table, shift, keep = _ecc_table(degree), 8 * (degree - 1), (1 << (8 * degree)) - 1
    remainder = 0
    for byte in data:
        remainder = ((remainder << 8) & keep) ^ table[byte ^ (remainder >> shift)]
    return list(remainder.to_bytes(degree, "big"))


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


class _BlankSymbol(qrcode.QRCode):
    """qrcode's symbol of one version with its function patterns and format information drawn,
    kept as it is just before the data modules are placed."""

    def map_data(self, data, mask_pattern):
        self.blank = [list(row) for row in self.modules]


@dataclass(frozen=True)
class _Placement:
    """Where each data bit of one version goes, and the fixed mask over the data modules."""

    size: int  # modules per side, quiet zone included
    data_modules: int
    mask: int  # one bit per data module in placement order, first placed most significant
    gather: itemgetter  # from "01" + the masked data bits to the symbol's modules, row by row


@cache
def _placement(version: int) -> _Placement:
    symbol = _BlankSymbol(version=version, error_correction=ERROR_CORRECT_Q, border=0, mask_pattern=FIXED_MASK_PATTERN)
    symbol.data_cache = []
    symbol.makeImpl(False, FIXED_MASK_PATTERN)
    blank, count = symbol.blank, symbol.modules_count
    order = _data_module_order(blank)
    masked = mask_func(FIXED_MASK_PATTERN)
    source_index = {cell: 2 + k for k, cell in enumerate(order)}  # 0 and 1: a light and a dark module
    size = count + 2 * QUIET_ZONE
    indices = []
    for row in range(-QUIET_ZONE, count + QUIET_ZONE):
        for col in range(-QUIET_ZONE, count + QUIET_ZONE):
            if not (0 <= row < count and 0 <= col < count):
                indices.append(0)
            elif blank[row][col] is None:
                indices.append(source_index[(row, col)])
            else:
                indices.append(1 if blank[row][col] else 0)
    mask = int("".join("1" if masked(row, col) else "0" for row, col in order), 2)
    return _Placement(size, len(order), mask, itemgetter(*indices))


def _data_module_order(blank: list[list[bool | None]]) -> list[tuple[int, int]]:
    """The data modules in ISO 18004 placement order (qrcode's map_data): two-module columns from
    the right, upwards then downwards, skipping the vertical timing pattern."""
    order: list[tuple[int, int]] = []
    count, row, step = len(blank), len(blank) - 1, -1
    for col in range(count - 1, 0, -2):
        if col <= 6:
            col -= 1
        while 0 <= row < count:
            order.extend((row, c) for c in (col, col - 1) if blank[row][c] is None)
            row += step
        row -= step
        step = -step
    return order


def _alphanumeric_rows(text: str) -> tuple[str, ...]:
    version = _alphanumeric_version(len(text))
    placement = _placement(version)
    data = codewords(text, version)
    bits = int.from_bytes(bytes(data), "big") << (placement.data_modules - 8 * len(data))  # remainder bits: 0
    modules = "".join(placement.gather("01" + format(bits ^ placement.mask, f"0{placement.data_modules}b")))
    size = placement.size
    return tuple(modules[i : i + size] for i in range(0, size * size, size))


def _qrcode_rows(text: str) -> tuple[str, ...]:
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_Q, border=QUIET_ZONE, mask_pattern=FIXED_MASK_PATTERN)
    code.add_data(text, optimize=0)
    code.make(fit=True)
    return tuple("".join("1" if dark else "0" for dark in row) for row in code.get_matrix())


@lru_cache(maxsize=4)
def module_rows(text: str) -> tuple[str, ...]:
    """The symbol's rows, quiet zone included, "1" for a dark module; cached, as the PNG and the
    PDF of one certificate are made from the same symbol."""
    if _ALPHANUMERIC.fullmatch(text):
        return _alphanumeric_rows(text)
    return _qrcode_rows(text)


def qr_rows(text: str) -> tuple[tuple[bool, ...], ...]:
    """Modules (True = dark), quiet zone included."""
    return tuple(tuple(module == "1" for module in row) for row in module_rows(text))


def qr_matrix(text: str) -> list[list[bool]]:
    """Modules (True = dark), quiet zone included."""
    return [list(row) for row in qr_rows(text)]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@cache
def _pixels(scale: int) -> dict[int, str]:
    """A module as `scale` 1-bit grey pixels (0 = black)."""
    return {ord("1"): "0" * scale, ord("0"): "1" * scale}


@cache
def _nibbles(scale: int) -> dict[int, str]:
    """A module as hexadecimal digits of 1-bit grey pixels, when `scale` is a multiple of 4."""
    return {ord("1"): "0" * (scale // 4), ord("0"): "f" * (scale // 4)}


def _scanlines(rows: tuple[str, ...], scale: int) -> bytes:
    """The raster's rows, each repeated `scale` times after a PNG filter byte 0 (none)."""
    if scale % 4 == 0:  # hexadecimal text, converted at once
        lines = [row.translate(_nibbles(scale)) for row in rows]
        lines = ["00" + line + "f" * (len(line) % 2) for line in lines]
        return bytes.fromhex("".join(line for line in lines for _ in range(scale)))
    return b"".join(_scanline(row, scale) * scale for row in rows)


def _scanline(row: str, scale: int) -> bytes:
    bits = row.translate(_pixels(scale))
    bits += "1" * (-len(bits) % 8)
    return b"\x00" + int(bits, 2).to_bytes(len(bits) // 8, "big")


@dataclass(frozen=True)
class QrImage:
    """The symbol as a 1-bit grey raster: `width` pixels square, `data` its scanlines (each
    after a PNG filter byte 0) zlib-compressed, as a PNG's IDAT and a PDF image stream with the
    PNG predictor both take them."""

    width: int
    data: bytes


@lru_cache(maxsize=4)
def qr_image(text: str, scale: int = DEFAULT_SCALE) -> QrImage:
    rows = module_rows(text)
    # level 4: as small as level 6 on these repeated rows, in a fifth of its time
    return QrImage(len(rows) * scale, zlib.compress(_scanlines(rows, scale), 4))


def png_of_image(image: QrImage) -> bytes:
    header = struct.pack(">IIBBBBB", image.width, image.width, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", image.data) + _png_chunk(b"IEND", b"")
    )


def qr_png(text: str, scale: int = DEFAULT_SCALE) -> bytes:
    return png_of_image(qr_image(text, scale))

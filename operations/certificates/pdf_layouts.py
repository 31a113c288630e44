"""The certificate's layouts, drawn by xhtml2pdf once per process, then filled per certificate.

Laying the template out and drawing it takes xhtml2pdf some 40 ms of CPU, the same for every
certificate of one kind, while what differs between two certificates is a few words (names, dates,
the UVCI) and the QR images. A *layout* is the template's context with those fields replaced by
markers: the test, the result, the certificates made, the wording. For each, xhtml2pdf draws the
template once; the markers are found in the page content streams; each certificate is then that
file with its own words where the markers were, its own QR images, and the glyphs its names need
added to the embedded font subsets. Around the words, the pages are xhtml2pdf's, byte for byte.

A word stands where its marker stood only when xhtml2pdf would have laid the page out the same:
- a field that ends its paragraph (names, birth date, laboratory, FINESS) when it fits on the rest
  of the line; the room there is measured once, by a second drawing where the marker is followed
  by many short words, which wrap where the line ends;
- dates and times when their markers have the same shape (digits where the value has digits) and
  the font's digits the same width, so that every word keeps its width;
- the UVCI, in Courier (monospaced), when it is as long as its marker.
Otherwise (a name too long for its line, spaces other than single ones, control or format
characters, right-to-left scripts, a glyph the font lacks, a layout this code cannot read), `fill`
answers None and the caller has xhtml2pdf draw that certificate as a whole: the same pages, slower.

The file of a layout holds markers and filler words only, never a patient's data; nothing of a
certificate is kept once its bytes are returned but the glyph subsets made for the letters of its
names (cached by the letters, not the names).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import threading
import unicodedata
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFontFace, makeToUnicodeCMap

from .pdf_objects import PdfFile, PdfFormatError, PdfObject, read_pdf, stream_object, write_pdf
from .qr import QrImage, png_of_image

log = logging.getLogger(__name__)

LINE_END, DIGITS, MONOSPACE, IMAGE = "line-end", "digits", "monospace", "image"
LAYOUT_CACHE_SIZE = 64  # layouts kept per process (a few dozen exist: test kinds x results x DCCs)
PROBE_WORDS = 150  # filler words after a line-end marker: more than a line holds
IMAGE_BASE_WIDTH = 17  # placeholder image i is IMAGE_BASE_WIDTH + i pixels wide: how it is found again
MIN_MARKER_DIGITS = 4  # a marker word's digits: 9s then its 3-digit number
_RIGHT_TO_LEFT = {"R", "AL", "AN", "RLE", "RLO", "LRE", "LRO", "PDF", "RLI", "LRI", "FSI", "PDI"}
_UNPRINTED = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


class LayoutError(ValueError):
    """The drawn template is not one whose markers can be replaced safely."""


@dataclass(frozen=True)
class Field:
    """A value of the template context that differs between certificates of one layout."""

    path: tuple[str | int, ...]  # keys and list indexes in the context
    kind: str  # LINE_END | DIGITS | MONOSPACE | IMAGE (the QR data URIs, in the order of the images)


# --- fonts of the drawn template ----------------------------------------------------------------


class _Font:
    resource: bytes  # its name in the page resources, e.g. b"F3+0"

    def decode(self, codes: bytes) -> str:
        raise NotImplementedError

    def code(self, char: str) -> int | None:
        raise NotImplementedError

    def has_glyph(self, char: str) -> bool:
        raise NotImplementedError

    def width(self, text: str, size: float) -> float:
        raise NotImplementedError


@dataclass(eq=False)
class _TrueTypeSubset(_Font):
    """One subset of an embedded TrueType font as ReportLab writes it: codes 32-127 ASCII, the
    others given to further characters in order of use (its ToUnicode map tells which)."""

    resource: bytes
    number: int  # the font dictionary's object
    value: bytes
    to_unicode: int
    font_file: int
    base_font: str
    subset: tuple[int, ...]  # code -> Unicode code point (0: unused)
    face: TTFontFace
    codes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.codes = {chr(point): code for code, point in enumerate(self.subset) if point}

    def decode(self, codes: bytes) -> str:
        return "".join(chr(self.subset[c]) if c < len(self.subset) else "\0" for c in codes)

    def code(self, char: str) -> int | None:
        return self.codes.get(char)

    def has_glyph(self, char: str) -> bool:
        return ord(char) in self.face.charToGlyph

    def width(self, text: str, size: float) -> float:
        # as ReportLab measures a TrueType string (pdfmetrics.stringWidth), which xhtml2pdf breaks lines by
        return 0.001 * size * sum(self.face.getCharWidth(ord(c)) for c in text)


@dataclass(eq=False)
class _StandardFont(_Font):
    """A PDF standard font (Courier for the UVCI), WinAnsi-encoded: ASCII only here."""

    resource: bytes
    base_font: str

    def decode(self, codes: bytes) -> str:
        return codes.decode("cp1252", errors="replace")

    def code(self, char: str) -> int | None:
        return ord(char) if " " <= char <= "~" else None

    def has_glyph(self, char: str) -> bool:
        return self.code(char) is not None

    def width(self, text: str, size: float) -> float:
        return pdfmetrics.stringWidth(text, self.base_font, size)


@dataclass(frozen=True)
class _Extension:
    """A subset with more characters: their codes and the three objects that replace the subset's."""

    codes: dict[str, int]
    objects: dict[int, PdfObject]


_SUBSET_LOCK = threading.Lock()  # a TTFontFace reads its file through one cursor


@lru_cache(maxsize=256)
def _extended(font: _TrueTypeSubset, chars: tuple[str, ...]) -> _Extension | None:
    """The subset with `chars` added on codes it leaves free, or None when it has no room."""
    subset = list(font.subset)
    free = [code for code in range(1, 32) if subset[code] == 0] + list(range(len(subset), 256))
    if len(chars) > len(free):
        return None
    codes = dict(zip(chars, free, strict=False))
    for char, code in codes.items():
        if code < len(subset):
            subset[code] = ord(char)
        else:
            subset.append(ord(char))
    with _SUBSET_LOCK:
        font_file = font.face.makeSubset(subset)
    compressed = zlib.compress(font_file, 6)
    widths = b" ".join(b"%g" % round(font.face.getCharWidth(point), 4) for point in subset)
    value = re.sub(rb"/LastChar \d+", b"/LastChar %d" % (len(subset) - 1), font.value)
    value = re.sub(rb"/Widths \[[^\]]*\]", lambda _: b"/Widths [ " + widths + b" ]", value)
    cmap = makeToUnicodeCMap(font.base_font, subset).encode("latin-1")
    return _Extension(
        codes,
        {
            font.number: PdfObject(value),
            font.to_unicode: stream_object(b"", cmap),
            font.font_file: PdfObject(
                b"<< /Filter /FlateDecode /Length %d /Length1 %d >>" % (len(compressed), len(font_file)), compressed
            ),
        },
    )


_NAMED_REFERENCE = re.compile(rb"/([^\s/\[\]()<>{}%]+)\s+(\d+)\s+0\s+R")
_BFCHAR_BLOCK = re.compile(rb"beginbfchar(.*?)endbfchar", re.S)
_BFCHAR = re.compile(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>")


def _entry(value: bytes, key: bytes) -> bytes:
    """What follows `key` in a dictionary's text: an inline dictionary whole, else a short run
    (a reference, `N 0 R`); empty when the key is absent."""
    found = re.search(rb"/" + re.escape(key) + rb"(?![^\s/\[\]()<>{}%])\s*", value)
    if found is None:
        return b""
    start = found.end()
    if not value.startswith(b"<<", start):
        return value[start : start + 32]
    depth, index = 0, start
    while index < len(value):
        step = value[index : index + 2]
        depth += {b"<<": 1, b">>": -1}.get(step, 0)
        index += 2 if step in (b"<<", b">>") else 1
        if depth == 0:
            return value[start:index]
    raise PdfFormatError(f"/{key.decode()} dictionary not closed")


def _resource_objects(pdf: PdfFile, page: int, kind: bytes) -> dict[bytes, int]:
    """Name -> object number of a page's /Font or /XObject resources (inline or referenced)."""
    entry = _entry(_entry(pdf.objects[page].value, b"Resources"), kind)
    if entry and not entry.startswith(b"<<"):
        reference = re.match(rb"(\d+)\s+0\s+R", entry)
        if reference is None:
            raise PdfFormatError(f"/{kind.decode()} resources neither inline nor referenced")
        entry = pdf.objects[int(reference[1])].value
    return {name: int(number) for name, number in _NAMED_REFERENCE.findall(entry)}


def _read_font(pdf: PdfFile, resource: bytes, number: int, faces: dict[str, TTFontFace]) -> _Font:
    value = pdf.objects[number].value
    base_font = re.search(rb"/BaseFont\s*/([^\s/\[\]<>()]+)", value)
    if base_font is None:
        raise LayoutError(f"font {resource!r} without a base font")
    name = base_font[1].decode("latin-1")
    if b"/Subtype /Type1" in value and name in pdfmetrics.standardFonts:
        return _StandardFont(resource, name)
    if b"/Subtype /TrueType" not in value or "+" not in name or name.split("+", 1)[1] not in faces:
        raise LayoutError(f"font {name} is not one of the certificate's TrueType faces")
    to_unicode = PdfFile.reference(value, b"ToUnicode")
    descriptor = pdf.objects[PdfFile.reference(value, b"FontDescriptor")].value
    cmap = pdf.objects[to_unicode].data()
    pairs = [pair for block in _BFCHAR_BLOCK.findall(cmap) for pair in _BFCHAR.findall(block)]
    if [int(code, 16) for code, _ in pairs] != list(range(len(pairs))) or not 128 <= len(pairs) <= 256:
        raise LayoutError(f"font {name}: unexpected ToUnicode map")
    return _TrueTypeSubset(
        resource,
        number,
        value,
        to_unicode,
        PdfFile.reference(descriptor, b"FontFile2"),
        name,
        tuple(int(point, 16) for _, point in pairs),
        faces[name.split("+", 1)[1]],
    )


# --- content streams ---------------------------------------------------------------------------

_TOKEN = re.compile(
    rb"""(?P<space>\s+)|(?P<comment>%[^\r\n]*)|(?P<bracket><<|>>|\[|\])|(?P<hex><[0-9A-Fa-f\s]*>)
    |(?P<name>/[^\s/\[\]()<>{}%]*)|(?P<number>[-+]?(?:\d+\.?\d*|\.\d+))|(?P<operator>[A-Za-z'"*][A-Za-z0-9'"*]*)""",
    re.X,
)
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("f"): 12}


def _tokens(stream: bytes) -> Iterator[tuple[str, int, int]]:
    """(kind, start, end) of each token of a content stream; literal strings whole."""
    position = 0
    while position < len(stream):
        if stream[position] == 0x28:  # "("
            end = _literal_end(stream, position)
            yield "string", position, end
            position = end
            continue
        token = _TOKEN.match(stream, position)
        if token is None:
            raise LayoutError(f"unreadable content stream at byte {position}")
        if token.lastgroup not in ("space", "comment"):
            yield str(token.lastgroup), token.start(), token.end()
        position = token.end()


def _literal_end(stream: bytes, start: int) -> int:
    depth, index = 0, start
    while index < len(stream):
        byte = stream[index]
        if byte == 0x5C:  # backslash: the next byte is never a delimiter
            index += 2
            continue
        depth += {0x28: 1, 0x29: -1}.get(byte, 0)
        index += 1
        if depth == 0:
            return index
    raise LayoutError("literal string not closed")


def _literal_codes(stream: bytes, start: int, end: int) -> tuple[bytes, list[int]]:
    """The codes of a literal string and where each one's source begins (then where it ends)."""
    codes, starts, index, last = bytearray(), [], start + 1, end - 1
    while index < last:
        starts.append(index)
        byte = stream[index]
        if byte != 0x5C:
            codes.append(byte)
            index += 1
            continue
        following = stream[index + 1]
        if 0x30 <= following <= 0x37:
            digits = re.match(rb"[0-7]{1,3}", stream[index + 1 : index + 4])
            assert digits is not None
            codes.append(int(digits[0], 8) & 0xFF)
            index += 1 + len(digits[0])
        elif following in (0x0A, 0x0D):  # line continuation: no code
            starts.pop()
            index += 2 + (following == 0x0D and stream[index + 2 : index + 3] == b"\n")
        else:
            codes.append(_ESCAPES.get(following, following))
            index += 2
    starts.append(last)
    return bytes(codes), starts


@dataclass(frozen=True)
class _Slot:
    """Where one field's text goes in a content stream: the whole value, or one word of it."""

    field: int
    word: int | None
    font: _Font
    size: float


@dataclass(frozen=True)
class _Occurrence:
    start: int
    end: int
    slot: _Slot
    rest: str  # the string's text from the marker on
    ends_text: bool  # nothing is shown after it until the end of its text object


def _occurrences(stream: bytes, fonts: dict[bytes, _Font], markers: dict[str, tuple[int, int | None]]):
    """Every marker shown in a content stream, with the font and size it is shown in, and whether
    anything is shown after it in its text object (a line-end field's marker must end it)."""
    found: list[_Occurrence] = []
    pending: list[_Occurrence] = []  # the last string's, until its text object ends or shows more
    font: _Font | None = None
    size, operands = 0.0, list[bytes]()
    for kind, start, end in _tokens(stream):
        if kind == "operator":
            if stream[start:end] == b"Tf":
                font, size = _font_of(fonts, operands), float(operands[-1])
            elif stream[start:end] == b"ET":
                found, pending = found + pending, []
            operands = []
        elif kind == "string":
            codes, starts = _literal_codes(stream, start, end)
            if not codes:
                continue
            if font is None:
                raise LayoutError("text shown before any font is set")
            found += [replace(o, ends_text=False) for o in pending]
            pending = _markers_in(font.decode(codes), starts, font, size, markers)
        else:
            operands.append(stream[start:end])
    if pending:
        raise LayoutError("text object not ended")
    return sorted(found, key=lambda o: o.start)


def _font_of(fonts: dict[bytes, _Font], operands: list[bytes]) -> _Font:
    resource = operands[-2][1:]
    if resource not in fonts:
        raise LayoutError(f"font {resource!r} not in the page resources")
    return fonts[resource]


def _markers_in(text: str, starts: list[int], font: _Font, size: float, markers) -> list[_Occurrence]:
    """The markers shown by one string, `starts` where each of its codes is written."""
    occurrences = []
    for marker, (field_index, word) in markers.items():
        at = text.find(marker)
        while at >= 0:
            stop = at + len(marker)
            slot = _Slot(field_index, word, font, size)
            occurrences.append(_Occurrence(starts[at], starts[stop], slot, text[at:], stop == len(text)))
            at = text.find(marker, stop)
    return occurrences


# --- markers and the placeholder context ---------------------------------------------------------


def _get(context, path):
    for key in path:
        context = context[key]
    return context


def _set(context, path, value) -> None:
    _get(context, path[:-1])[path[-1]] = value


@lru_cache(maxsize=8)
def _placeholder_image(index: int) -> str:
    import base64

    width = IMAGE_BASE_WIDTH + index
    rows = (b"\x00" + b"\xff" * ((width + 7) // 8)) * width
    png = png_of_image(QrImage(width, zlib.compress(rows)))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass(frozen=True)
class _Plan:
    """The markers of one certificate's fields: what the layout is drawn from and looked up by."""

    context: dict  # the template context with markers
    probe: dict  # the same with filler words after each line-end marker
    key: str
    markers: dict[str, tuple[int, int | None]]  # marker -> (field, word of the value or None)
    kinds: tuple[str, ...]
    lengths: dict[int, int]  # monospaced field -> its marker's length


def _copied_along(context: dict, paths: list[tuple[str | int, ...]]) -> dict:
    """A copy of the context sharing all but the dictionaries and lists on the paths given."""
    top: dict = dict(context)
    copies = {id(top)}
    for path in paths:
        node = top
        for key in path[:-1]:
            child = node[key]
            if id(child) not in copies:
                child = dict(child) if isinstance(child, dict) else list(child)
                node[key] = child
                copies.add(id(child))
            node = child
    return top


def _plan(context: dict, fields: list[Field], values: list) -> _Plan | None:
    paths = [f.path for f in fields]
    marked, probe = _copied_along(context, paths), _copied_along(context, paths)
    markers: dict[str, tuple[int, int | None]] = {}
    lengths, numbered, images = {}, 0, 0
    for index, (spec, value) in enumerate(zip(fields, values, strict=True)):
        if spec.kind == IMAGE:
            marker = _placeholder_image(images)
            images += 1
        elif not isinstance(value, str):
            return None
        elif spec.kind == LINE_END:
            marker = f"QZ{index:02d}ZQ"
            markers[marker] = (index, None)
        elif spec.kind == MONOSPACE:
            if len(value) < 6 or not value.isascii() or " " in value:
                return None
            marker = (f"QU{index:02d}" + "Q" * len(value))[: len(value)]
            markers[marker], lengths[index] = (index, None), len(value)
        else:
            words = []
            for word_index, word in enumerate(value.split(" ")):
                count = sum(c.isdigit() for c in word)
                if count and (count < MIN_MARKER_DIGITS or not word.isascii() or numbered > 999):
                    return None
                if count:
                    digits = iter("9" * (count - 3) + f"{numbered:03d}")
                    word = "".join(next(digits) if c.isdigit() else c for c in word)
                    markers[word] = (index, word_index)
                    numbered += 1
                words.append(word)
            marker = " ".join(words)
        _set(marked, spec.path, marker)
        _set(probe, spec.path, marker + " i" * PROBE_WORDS if spec.kind == LINE_END else marker)
    key = json.dumps(marked, sort_keys=True, default=str, ensure_ascii=False)
    return _Plan(marked, probe, key, markers, tuple(f.kind for f in fields), lengths)


# --- a layout ------------------------------------------------------------------------------------


def _escaped(code: int) -> bytes:
    if 0x20 <= code < 0x7F and code not in b"()\\":
        return bytes([code])
    return b"\\%03o" % code


_ESCAPED = tuple(_escaped(code) for code in range(256))
_DATE = re.compile(rb"/(CreationDate|ModDate)\s*\(D:[^)]*\)")


def _plain(text: str) -> bool:
    """Text xhtml2pdf shows as it is: single spaces between words, nothing it would transform."""
    return text == " ".join(text.split()) and not any(
        unicodedata.category(c) in _UNPRINTED or unicodedata.bidirectional(c) in _RIGHT_TO_LEFT for c in text
    )


@dataclass
class _Layout:
    pdf: PdfFile
    pages: list[tuple[int, list[bytes | _Slot]]]  # content stream object -> static bytes and slots
    images: list[int]  # the image objects, in the order of the IMAGE fields
    line_ends: dict[int, tuple[_Font, float, float]]  # field -> font, size, room on its line
    texts: dict[int, list[_Slot]]  # field -> its slots (digits and monospaced fields)
    lengths: dict[int, int]

    def fill(self, values: list, images: list[QrImage], created: dt.datetime) -> bytes | None:
        missing: dict[_TrueTypeSubset, set[str]] = {}
        for index, (font, size, room) in self.line_ends.items():
            text = values[index]
            if not _plain(text) or not all(font.has_glyph(c) for c in text) or font.width(text, size) > room:
                return None
            unknown = {c for c in text if font.code(c) is None}
            if unknown and not isinstance(font, _TrueTypeSubset):
                return None
            if unknown:
                missing.setdefault(font, set()).update(unknown)  # type: ignore[arg-type]
        for index, slots in self.texts.items():
            if index in self.lengths and (len(values[index]) != self.lengths[index] or " " in values[index]):
                return None
            if not all(slot.font.code(c) is not None for slot in slots for c in self._text(slot, values)):
                return None
        extensions = {}
        for font, chars in missing.items():
            extension = _extended(font, tuple(sorted(chars)))
            if extension is None:
                return None
            extensions[font] = extension
        return self._write(values, images, created, extensions)

    @staticmethod
    def _text(slot: _Slot, values: list) -> str:
        value = values[slot.field]
        return value if slot.word is None else value.split(" ")[slot.word]

    def _encoded(self, slot: _Slot, values: list, extensions: dict) -> bytes:
        extension = extensions.get(slot.font)
        codes = extension.codes if extension else {}
        return b"".join(
            _ESCAPED[code if (code := slot.font.code(c)) is not None else codes[c]] for c in self._text(slot, values)
        )

    def _write(self, values, images, created, extensions) -> bytes:
        replaced: dict[int, PdfObject] = {}
        digest = hashlib.md5(usedforsecurity=False)
        for number, parts in self.pages:
            stream = b"".join(p if isinstance(p, bytes) else self._encoded(p, values, extensions) for p in parts)
            digest.update(stream)
            replaced[number] = stream_object(b"", stream)
        for number, image in zip(self.images, images, strict=True):
            replaced[number] = _image_object(image)
        for extension in extensions.values():
            replaced.update(extension.objects)
        moment = created.astimezone(dt.UTC).strftime("D:%Y%m%d%H%M%S+00'00'").encode()
        info = _DATE.sub(lambda m: b"/" + m[1] + b" (" + moment + b")", self.pdf.objects[self.pdf.info].value)
        replaced[self.pdf.info] = PdfObject(info)
        return write_pdf(self.pdf, replaced, digest.digest())


def _image_object(image: QrImage) -> PdfObject:
    """The QR raster as a 1-bit grey image, its PNG-filtered scanlines taken as they are."""
    return PdfObject(
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray /BitsPerComponent 1"
        b" /Filter /FlateDecode /DecodeParms << /Predictor 15 /Colors 1 /BitsPerComponent 1 /Columns %d >>"
        b" /Length %d >>" % (image.width, image.width, image.width, len(image.data)),
        image.data,
    )


def _pages(pdf: PdfFile, faces: dict[str, TTFontFace]):
    """Each page's content stream object, its decompressed data and its fonts."""
    fonts: dict[int, _Font] = {}
    for page in pdf.page_numbers():
        resources = {}
        for resource, number in _resource_objects(pdf, page, b"Font").items():
            if number not in fonts:
                fonts[number] = _read_font(pdf, resource, number, faces)
            resources[resource] = fonts[number]
        contents = PdfFile.reference(pdf.objects[page].value, b"Contents")
        yield contents, pdf.objects[contents].data(), resources


def _images(pdf: PdfFile, count: int) -> list[int]:
    found: dict[int, int] = {}
    for page in pdf.page_numbers():
        for number in _resource_objects(pdf, page, b"XObject").values():
            width = re.search(rb"/Width\s+(\d+)", pdf.objects[number].value)
            if b"/Subtype /Image" in pdf.objects[number].value and width:
                found[int(width[1]) - IMAGE_BASE_WIDTH] = number
    if sorted(found) != list(range(count)):
        raise LayoutError("the QR placeholders are not all drawn, or not as images of their own")
    return [found[i] for i in range(count)]


def _build(plan: _Plan, marked_pdf: bytes, probe_pdf: bytes, faces: dict[str, TTFontFace]) -> _Layout:
    pdf = read_pdf(marked_pdf)
    pages: list[tuple[int, list[bytes | _Slot]]] = []
    texts: dict[int, list[_Slot]] = {}
    line_ends: dict[int, set[tuple[_Font, float]]] = {}
    seen: set[tuple[int, int | None]] = set()
    for contents, stream, fonts in _pages(pdf, faces):
        parts: list[bytes | _Slot] = []
        position = 0
        for occurrence in _occurrences(stream, fonts, plan.markers):
            slot = occurrence.slot
            if plan.kinds[slot.field] == LINE_END:
                if not occurrence.ends_text:
                    raise LayoutError(f"field {slot.field} does not end its paragraph")
                line_ends.setdefault(slot.field, set()).add((slot.font, slot.size))
            else:
                _require_even_widths(slot.font, slot.size, plan.kinds[slot.field])
                texts.setdefault(slot.field, []).append(slot)
            seen.add((slot.field, slot.word))
            parts += [stream[position : occurrence.start], slot]
            position = occurrence.end
        pages.append((contents, parts + [stream[position:]]))
    if seen != set(plan.markers.values()):
        raise LayoutError("markers not all found in the drawn pages")
    if any(len(fonts) != 1 for fonts in line_ends.values()):
        raise LayoutError("a line-end field is drawn in several fonts")
    room = _room(read_pdf(probe_pdf), plan, faces)
    ends = {}
    for index, fonts in line_ends.items():
        [(font, size)] = fonts
        if index not in room:
            raise LayoutError(f"field {index} missing from the probe drawing")
        ends[index] = (font, size, room[index])
    return _Layout(pdf, pages, _images(pdf, plan.kinds.count(IMAGE)), ends, texts, plan.lengths)


_ASCII = "".join(map(chr, range(0x21, 0x7F)))


def _require_even_widths(font: _Font, size: float, kind: str) -> None:
    """Digits all of one width (dates), or every printable ASCII character (the UVCI)."""
    if len({font.width(c, size) for c in ("0123456789" if kind == DIGITS else _ASCII)}) != 1:
        raise LayoutError(f"the font of a {kind} field is not even in width")


def _room(pdf: PdfFile, plan: _Plan, faces: dict[str, TTFontFace]) -> dict[int, float]:
    """Per line-end field, the width of its marker and the filler words on its first line: the
    least room its value has there (the line broke before the next word)."""
    markers = {m: place for m, place in plan.markers.items() if plan.kinds[place[0]] == LINE_END}
    room: dict[int, float] = {}
    for _, stream, fonts in _pages(pdf, faces):
        for occurrence in _occurrences(stream, fonts, markers):
            slot = occurrence.slot
            width = slot.font.width(occurrence.rest, slot.size)
            room[slot.field] = min(width, room.get(slot.field, width))
    return room


class Layouts:
    """The layouts of one template, made on first use and kept (least recently used out)."""

    def __init__(self, draw: Callable[[dict], bytes], face_paths: Callable[[], list[str]], capacity=LAYOUT_CACHE_SIZE):
        self._draw, self._face_paths, self._capacity = draw, face_paths, capacity
        self._layouts: OrderedDict[str, _Layout | None] = OrderedDict()
        self._lock = threading.Lock()
        self._faces: dict[str, TTFontFace] | None = None

    def fill(self, context: dict, fields: list[Field], images: list[QrImage], created: dt.datetime) -> bytes | None:
        """The certificate's PDF from its layout, or None when xhtml2pdf must draw it whole."""
        values = [None if f.kind == IMAGE else _get(context, f.path) for f in fields]
        plan = _plan(context, fields, values)
        if plan is None:
            return None
        layout = self._layout(plan)
        return None if layout is None else layout.fill(values, images, created)

    def _layout(self, plan: _Plan) -> _Layout | None:
        with self._lock:
            if plan.key in self._layouts:
                self._layouts.move_to_end(plan.key)
                return self._layouts[plan.key]
        try:
            layout: _Layout | None = _build(plan, self._draw(plan.context), self._draw(plan.probe), self.faces())
        except (LayoutError, PdfFormatError) as error:
            log.warning("certificate layout not reusable, drawn whole each time: %s", error)
            layout = None
        with self._lock:
            self._layouts[plan.key] = layout
            while len(self._layouts) > self._capacity:
                self._layouts.popitem(last=False)
        return layout

    def __len__(self) -> int:
        """How many layouts are kept now."""
        return len(self._layouts)

    def faces(self) -> dict[str, TTFontFace]:
        """The template's TrueType faces by PostScript name, loaded once."""
        if self._faces is None:
            faces = [TTFontFace(path) for path in self._face_paths()]
            self._faces = {face.name.decode("latin-1"): face for face in faces}
        return self._faces

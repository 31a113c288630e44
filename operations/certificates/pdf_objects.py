"""The objects of a PDF file as ReportLab writes it, read once and written again with some replaced.

Only what the certificate layouts need (operations/certificates/pdf_layouts.py): ReportLab's files
have a classic cross-reference table, no object streams, direct stream lengths and streams that
are uncompressed or Flate-compressed. A file that is otherwise is refused with PdfFormatError (its
certificates are then drawn by xhtml2pdf as a whole), never half read.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass


class PdfFormatError(ValueError):
    pass


@dataclass(frozen=True)
class PdfObject:
    """One indirect object: its dictionary (or whole value) as written, and its stream as stored."""

    value: bytes
    stream: bytes | None = None

    def serialized(self, number: int) -> bytes:
        body = self.value if self.stream is None else self.value + b"\nstream\n" + self.stream + b"\nendstream"
        return b"%d 0 obj\n%s\nendobj\n" % (number, body)

    def data(self) -> bytes:
        """The stream's data, decompressed."""
        if self.stream is None:
            raise PdfFormatError("not a stream")
        filters = re.search(rb"/Filter\s*(\[[^\]]*\]|/\w+)", self.value)
        if filters is None:
            return self.stream
        if filters[1].strip(b"[] ") != b"/FlateDecode":
            raise PdfFormatError(f"stream filter {filters[1]!r}")
        return zlib.decompress(self.stream)


def stream_object(entries: bytes, data: bytes, level: int = 6) -> PdfObject:
    """A Flate-compressed stream object with the dictionary entries given (besides its length)."""
    compressed = zlib.compress(data, level)
    return PdfObject(b"<< %s /Filter /FlateDecode /Length %d >>" % (entries, len(compressed)), compressed)


@dataclass(frozen=True)
class PdfFile:
    header: bytes  # what comes before the first object: version and binary comment
    objects: dict[int, PdfObject]
    root: int
    info: int

    def page_numbers(self) -> list[int]:
        """The page objects in reading order (ReportLab's single, flat page tree)."""
        pages = self.reference(self.objects[self.root].value, b"Pages")
        kids = re.search(rb"/Kids\s*\[([^\]]*)\]", self.objects[pages].value)
        if kids is None:
            raise PdfFormatError("page tree without kids")
        numbers = [int(n) for n in re.findall(rb"(\d+)\s+0\s+R", kids[1])]
        if not all(_PAGE_TYPE.search(self.objects[n].value) for n in numbers):
            raise PdfFormatError("nested page tree")
        return numbers

    @staticmethod
    def reference(value: bytes, key: bytes) -> int:
        found = re.search(rb"/" + key + rb"\s+(\d+)\s+0\s+R", value)
        if found is None:
            raise PdfFormatError(f"no reference /{key.decode()}")
        return int(found[1])


_PAGE_TYPE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")
_STARTXREF = re.compile(rb"startxref\s+(\d+)\s+%%EOF\s*$")
_XREF_HEAD = re.compile(rb"xref\s+0\s+(\d+)\s+")
_XREF_ENTRY = re.compile(rb"(\d{10}) (\d{5}) ([nf])\s{1,2}")
_OBJECT_HEAD = re.compile(rb"(\d+)\s+0\s+obj\s*")
_STREAM_START = re.compile(rb">>\s*stream\r?\n")
_LENGTH = re.compile(rb"/Length\s+(\d+)(?!\s+\d+\s+R)")


def read_pdf(data: bytes) -> PdfFile:
    end = _STARTXREF.search(data)
    if end is None:
        raise PdfFormatError("no startxref")
    xref_at = int(end[1])
    head = _XREF_HEAD.match(data, xref_at)
    if head is None:
        raise PdfFormatError("no classic cross-reference table")
    offsets, position = {}, head.end()
    for number in range(int(head[1])):
        entry = _XREF_ENTRY.match(data, position)
        if entry is None:
            raise PdfFormatError("bad cross-reference entry")
        position = entry.end()
        if entry[3] == b"n":
            offsets[number] = int(entry[1])
    if sorted(offsets) != list(range(1, len(offsets) + 1)):
        raise PdfFormatError("free objects between used ones")
    trailer = data[position:xref_at] + data[position : end.start()]
    objects = {number: _read_object(data, number, offset) for number, offset in offsets.items()}
    return PdfFile(
        data[: min(offsets.values())],
        objects,
        PdfFile.reference(trailer, b"Root"),
        PdfFile.reference(trailer, b"Info"),
    )


def _read_object(data: bytes, number: int, offset: int) -> PdfObject:
    head = _OBJECT_HEAD.match(data, offset)
    if head is None or int(head[1]) != number:
        raise PdfFormatError(f"object {number} not at its offset")
    start, end = head.end(), data.find(b"endobj", head.end())
    stream = _STREAM_START.search(data, start, end if end >= 0 else len(data))
    if stream is None:
        if end < 0:
            raise PdfFormatError(f"object {number} not ended")
        return PdfObject(data[start:end].rstrip())
    dictionary = data[start : stream.start() + 2]
    length = _LENGTH.search(dictionary)
    if length is None:
        raise PdfFormatError(f"stream {number} without a direct length")
    content = data[stream.end() : stream.end() + int(length[1])]
    if not data[stream.end() + len(content) :].lstrip(b"\r\n").startswith(b"endstream"):
        raise PdfFormatError(f"stream {number} longer than its length")
    return PdfObject(dictionary.rstrip(), content)


def write_pdf(pdf: PdfFile, replaced: dict[int, PdfObject], file_id: bytes) -> bytes:
    """The file with some objects replaced (same numbers), a fresh cross-reference and trailer."""
    chunks, offsets, position = [pdf.header], [], len(pdf.header)
    for number in range(1, len(pdf.objects) + 1):
        chunk = replaced.get(number, pdf.objects[number]).serialized(number)
        offsets.append(b"%010d 00000 n \n" % position)
        chunks.append(chunk)
        position += len(chunk)
    size = len(pdf.objects) + 1
    chunks.append(b"xref\n0 %d\n0000000000 65535 f \n" % size)
    chunks.extend(offsets)
    identifier = file_id.hex().encode()
    chunks.append(
        b"trailer\n<<\n/ID [<%s><%s>]\n/Info %d 0 R\n/Root %d 0 R\n/Size %d\n>>\nstartxref\n%d\n%%%%EOF\n"
        % (identifier, identifier, pdf.info, pdf.root, size, position)
    )
    return b"".join(chunks)

"""The files of FHIR Bulk Data `$export` (https://hl7.org/fhir/uv/bulkdata/, v2): what may be
exported, where its NDJSON files are on disk, how they are written and removed.

The job (workers/jobs/export.py) writes, for each exported type, NDJSON files (one JSON object a
line) into the export's directory under EXPORT_DIR, a new file whenever the next line would take
the current one past EXPORT_FILE_BYTES; the web processes serve them from there (fhir_server/
asynchronous.py): the directory must be shared by both. A directory is named after a digest of
the task id (the task id is the address of the result, which nothing on disk or in logs shows).

`PseudonymisedResult` is no FHIR resource: one line per result, public health's pseudonymised
record as it now is (storage/pseudonymised.py): `{"result", "position", "at", "state", "record"}`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO

import orjson

from .pseudonyms import published
from .search.dates import instant
from .settings import Settings
from .storage.tasks import ExportFile

PSEUDONYMISED = "PseudonymisedResult"
NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
# what an operator's export holds when it names no `_type`: the patient data of the results
PATIENT_DATA_TYPES = ("Patient", "ServiceRequest", "Specimen", "Observation", "DiagnosticReport", "Communication")
FILE_NAME = re.compile(r"^[A-Za-z]+-[0-9]{1,6}\.ndjson$")


def directory(settings: Settings, task_id: str) -> Path:
    """The export's directory: named after a digest of the task id, never the id itself."""
    return Path(settings.export_directory) / ("export-" + hashlib.sha256(task_id.encode()).hexdigest()[:32])


def file_path(settings: Settings, task_id: str, name: str) -> Path | None:
    """An export file's path, or None for a name the job never writes (nothing outside the
    export's directory can be named)."""
    if not FILE_NAME.match(name):
        return None
    return directory(settings, task_id) / name


def remove(settings: Settings, task_id: str) -> None:
    shutil.rmtree(directory(settings, task_id), ignore_errors=True)


def remove_orphans(settings: Settings, task_ids: Iterable[str]) -> int:
    """Remove the export directories no recorded task owns (a task deleted while its job was
    writing, a job killed after its task expired); how many there were."""
    root = Path(settings.export_directory)
    if not root.is_dir():
        return 0
    owned = {directory(settings, task_id).name for task_id in task_ids}
    orphans = [path for path in root.iterdir() if path.name.startswith("export-") and path.name not in owned]
    for path in orphans:
        shutil.rmtree(path, ignore_errors=True)
    return len(orphans)


def pseudonymised_line(doc: dict) -> dict:
    """A current record of storage/pseudonymised.py as a line of the PseudonymisedResult file."""
    return published(doc["position"], doc["_id"], doc["state"], doc.get("rec"), instant(doc["at"]))


@dataclass
class Part:
    name: str
    count: int = 0
    bytes: int = 0


class NdjsonParts:
    """The NDJSON files of one type: lines appended one at a time to `<type>-<n>.ndjson`, a new
    file when the next line would take the current one past `limit` bytes (a single longer line
    gets a file of its own). Only the current line is in memory; the OS buffers the rest."""

    def __init__(self, folder: Path, rtype: str, limit: int):
        self.folder, self.rtype, self.limit = folder, rtype, limit
        self.parts: list[Part] = []
        self._out: BinaryIO | None = None

    def write(self, resource: dict) -> None:
        line = orjson.dumps(resource, default=_decimal) + b"\n"
        current = self.parts[-1] if self.parts else None
        if current is None or (current.count and current.bytes + len(line) > self.limit):
            current = self._next_part()
        assert self._out is not None
        self._out.write(line)
        current.count += 1
        current.bytes += len(line)

    def write_all(self, resources: Iterator[dict], every: int, progress: Callable[[int], bool]) -> bool:
        """Write every resource, calling `progress(lines written)` after each `every` lines; stop
        (False) as soon as it answers False."""
        written = 0
        for resource in resources:
            self.write(resource)
            written += 1
            if written % every == 0 and not progress(written):
                return False
        return True

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def files(self) -> list[ExportFile]:
        return [ExportFile(type=self.rtype, name=p.name, count=p.count, bytes=p.bytes) for p in self.parts]

    def _next_part(self) -> Part:
        self.close()
        part = Part(f"{self.rtype}-{len(self.parts) + 1}.ndjson")
        path = self.folder / part.name
        # health data: readable by the platform's user alone
        self._out = open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")  # noqa: SIM115
        self.parts.append(part)
        return part


def _decimal(value):
    """FHIR decimals are kept as written (stored as Decimal128, read back as Decimal)."""
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    if hasattr(value, "to_decimal"):  # bson.Decimal128
        return orjson.Fragment(str(value.to_decimal()).encode())
    raise TypeError(f"{type(value).__name__} is not JSON serializable")

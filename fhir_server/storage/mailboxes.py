"""The MSSanté directory as loaded from the ANS extract, in versions: a load writes a new version
beside the one in service and switches to it only once complete, so a refresh changes the
answers at one moment and a failed load (bad header, truncated file, lost connection) leaves the
previous version answering. Older versions are removed after the switch.

Collections: `_mssante_mailboxes` (one document per address and structure of a version, with
whether certificates may go there), `_mssante_versions` (each load: when, how many), and
`_mssante_current` (one document naming the version in service: switching is one write).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import mongoengine
from pymongo.errors import BulkWriteError

from ..mssante import MailboxEntry, Route, decide, is_routable, is_stamped
from . import records

BATCH = 5000  # mailboxes per insert: bounded memory for the ~536,000 lines of the real extract
DUPLICATE_KEY = 11000
LOADING, COMPLETE, FAILED = "loading", "complete", "failed"


class Mailbox(mongoengine.Document):
    """A mailbox of one directory version. One per (address, structure, routable): a line repeating
    them is a duplicate; an address whose lines disagree on being routable keeps a routable one."""

    version = mongoengine.StringField(required=True)
    key = mongoengine.StringField(required=True)  # the address in lower case (addresses ignore case)
    address = mongoengine.StringField(required=True)
    kind = mongoengine.StringField()
    structure_id_type = mongoengine.StringField()
    finess = mongoengine.StringField()
    service = mongoengine.StringField()
    organisation = mongoengine.StringField()
    stamped = mongoengine.BooleanField(default=False)
    routable = mongoengine.BooleanField(default=False)  # ORG, stamped @SIDEP, with a FINESS

    meta = {
        "db_alias": records.ALIAS,
        "collection": "_mssante_mailboxes",
        "indexes": [
            {"fields": ["version", "finess"]},
            {"fields": ["version", "key", "finess", "routable"], "unique": True},
        ],
    }


class DirectoryVersion(mongoengine.Document):
    """One load of the extract."""

    version = mongoengine.StringField(primary_key=True)
    state = mongoengine.StringField(required=True)  # loading | complete | failed
    started = mongoengine.DateTimeField(required=True)
    loaded = mongoengine.DateTimeField()
    lines = mongoengine.IntField(default=0)
    mailboxes = mongoengine.IntField(default=0)
    stamped = mongoengine.IntField(default=0)
    duplicates = mongoengine.IntField(default=0)
    routable = mongoengine.IntField(default=0)

    meta = {"db_alias": records.ALIAS, "collection": "_mssante_versions"}


class CurrentDirectory(mongoengine.Document):
    """The version in service (one document, `_id` "current")."""

    name = mongoengine.StringField(primary_key=True, default="current")
    version = mongoengine.StringField(required=True)
    switched = mongoengine.DateTimeField(required=True)

    meta = {"db_alias": records.ALIAS, "collection": "_mssante_current"}


MODELS = (Mailbox, DirectoryVersion, CurrentDirectory)


@dataclass(frozen=True)
class LoadReport:
    lines: int  # data lines read
    mailboxes: int  # mailboxes stored (lines less duplicates)
    stamped: int  # of which estampillées @SIDEP (any type)
    duplicates: int  # lines repeating a mailbox already read
    version: str
    routable: int = 0  # stamped ORG mailboxes of a FINESS structure: where certificates may go


_indexed: set[tuple[str, str]] = set()


def connect(uri: str, db: str) -> "Directory":
    """The directory of database `db` on the records' connection; its indexes are created the
    first time this process uses that database (a web request may call this every time)."""
    if (uri, db) in _indexed:
        records.connect(uri, db)
    else:
        records.connect(uri, db, *MODELS)
        _indexed.add((uri, db))
    return Directory()


def _now() -> datetime:
    return datetime.now(UTC)


def _new_version(now: datetime) -> str:
    # sortable by time; the suffix keeps two loads in the same second apart
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def _document(version: str, entry: MailboxEntry) -> dict:
    return {
        "version": version,
        "key": entry.address.lower(),
        "address": entry.address,
        "kind": entry.kind,
        "structure_id_type": entry.structure_id_type,
        "finess": entry.finess,
        "service": entry.service,
        "organisation": entry.organisation,
        "stamped": is_stamped(entry),
        "routable": is_routable(entry),
    }


class Directory:
    """The directory in service, and its loads. The connection is the records' (`connect`)."""

    def __init__(self, batch: int = BATCH):
        self.batch = batch

    # -- loading ---------------------------------------------------------------------------------
    def load(self, entries: Iterable[MailboxEntry]) -> LoadReport:
        """Load `entries` as a new version and put it in service once all are stored. Whatever
        `entries` raises (ExtractError on a bad header or line) leaves the version in service."""
        started = _now()
        version = _new_version(started)
        DirectoryVersion(version=version, state=LOADING, started=started).save()
        try:
            report = self._store(version, entries)
        except BaseException:
            Mailbox._get_collection().delete_many({"version": version})
            DirectoryVersion.objects(version=version).update_one(set__state=FAILED)
            raise
        self._switch(report, started)
        return report

    def _store(self, version: str, entries: Iterable[MailboxEntry]) -> LoadReport:
        counts = {"lines": 0, "mailboxes": 0, "stamped": 0, "routable": 0, "duplicates": 0}
        batch: list[dict] = []
        for entry in entries:
            counts["lines"] += 1
            batch.append(_document(version, entry))
            if len(batch) >= self.batch:
                self._insert(batch, counts)
                batch = []
        if batch:
            self._insert(batch, counts)
        return LoadReport(
            counts["lines"], counts["mailboxes"], counts["stamped"], counts["duplicates"], version, counts["routable"]
        )

    @staticmethod
    def _insert(batch: list[dict], counts: dict) -> None:
        """Insert a batch; the unique index, not a set in memory, tells the duplicates."""
        refused: set[int] = set()
        try:
            Mailbox._get_collection().insert_many(batch, ordered=False)
        except BulkWriteError as error:
            others = [e for e in error.details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
            if others:
                raise
            refused = {e["index"] for e in error.details["writeErrors"]}
        kept = [doc for i, doc in enumerate(batch) if i not in refused]
        counts["duplicates"] += len(refused)
        counts["mailboxes"] += len(kept)
        counts["stamped"] += sum(doc["stamped"] for doc in kept)
        counts["routable"] += sum(doc["routable"] for doc in kept)

    def _switch(self, report: LoadReport, started: datetime) -> None:
        """Put the complete version in service (one write), then remove what came before it."""
        now = _now()
        DirectoryVersion.objects(version=report.version).update_one(
            set__state=COMPLETE,
            set__loaded=now,
            set__lines=report.lines,
            set__mailboxes=report.mailboxes,
            set__stamped=report.stamped,
            set__duplicates=report.duplicates,
            set__routable=report.routable,
        )
        CurrentDirectory.objects(name="current").update_one(set__version=report.version, set__switched=now, upsert=True)
        # Versions started before this one, complete or not; a load started since is left alone.
        older = [v.version for v in DirectoryVersion.objects(started__lt=started).only("version")]
        older = [v for v in older if v != report.version]
        if older:
            Mailbox._get_collection().delete_many({"version": {"$in": older}})
            DirectoryVersion.objects(version__in=older).delete()

    # -- answers ---------------------------------------------------------------------------------
    def current_version(self) -> str | None:
        current = CurrentDirectory.objects(name="current").first()
        return current.version if current else None

    def stamped_for(self, finess: str | None, version: str | None = None) -> list[str]:
        """The addresses certificates may go to for a FINESS (stamped ORG mailboxes), in service."""
        version = version or self.current_version()
        if not finess or version is None:
            return []
        # Exactly the fields of the (version, finess) index, routability checked here: a FINESS has
        # a handful of mailboxes, and a query on a third field is a collection scan on SecantusDB.
        found = Mailbox._get_collection().find(
            {"version": version, "finess": finess}, {"address": 1, "routable": 1, "_id": 0}
        )
        return sorted({doc["address"] for doc in found if doc.get("routable")})

    def route(self, site_finess: str | None, legal_finess: str | None) -> Route:
        """The guide's rule on the version in service. Read again if that version changed while
        reading (a refresh removes the old version just after switching)."""
        for _ in range(3):
            version = self.current_version()
            site = self.stamped_for(site_finess, version)
            legal = self.stamped_for(legal_finess, version)
            if self.current_version() == version:
                break
        found = decide(site_finess, legal_finess, site, legal)
        if version is None:  # say why nothing is found: no directory yet, not a laboratory's fault
            return replace(found, reason=f"Annuaire MSSanté non chargé. {found.reason}")
        return found

    def summary(self) -> dict:
        """The version in service: when it was loaded and what it holds (empty when none)."""
        version = self.current_version()
        loaded = DirectoryVersion.objects(version=version).first() if version else None
        if loaded is None:
            return {"version": None}
        return {
            "version": loaded.version,
            "loaded": loaded.loaded.replace(tzinfo=UTC).isoformat(timespec="seconds") if loaded.loaded else None,
            "lines": loaded.lines,
            "mailboxes": loaded.mailboxes,
            "stamped": loaded.stamped,
            "duplicates": loaded.duplicates,
            "routable": loaded.routable,
        }

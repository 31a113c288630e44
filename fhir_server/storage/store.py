"""Resources, their versions and their index fields in MongoDB.

Layout: one collection per resource type holds the current version of each resource (a deleted
one stays as a marker with `del: true`, so a read can say 410 Gone); `_history` holds every
version; `_outbox` holds events committed together with the writes that caused them. A
resource made by a conditional create or update carries the key of its criteria (`c`, unique), so
that two concurrent ones make one resource.

Every write runs in a MongoDB transaction (`Store.run`): the resource, its history entry and its
outbox events commit together or not at all. Write conflicts between concurrent
transactions are retried; the history `_id` (type/id/version) being unique means two writers can
never both produce the same version.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

import bson
from bson import ObjectId
from pymongo import InsertOne, ReplaceOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from ..outcome import FhirError, not_known
from ..search.dates import instant, utc_now
from ..search.extract import index_fields
from . import union
from .changes import Changes
from .conditions import all_of, referring
from .mongo import CHANGES, CODEC_OPTIONS, HISTORY, OUTBOX, client_for, ensure_constraints, ensure_indexes

T = TypeVar("T")
MAX_ATTEMPTS = 16  # a unit of work that still conflicts after this many tries gets 409
MAX_BACKOFF = 0.25  # seconds between two tries at most (jittered exponential backoff below it)
CURRENT_FIELDS = {"v": 1, "ts": 1, "del": 1, "res": 1, "org": 1}  # what a Record is made from


class Conflict(Exception):
    """A concurrent writer got there first: the unit of work is retried from the start."""


class Held(Conflict):
    """A unique key of what the unit writes is held by another resource."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


class HeldKey(Held):
    """A business identifier (unique `k` key) is already held by another resource."""


class HeldClaim(Held):
    """A conditional key (unique `c`) is held by another resource."""


def held_identifier(key: str) -> FhirError:
    rtype, _, identifier = key.partition("|")
    shown = identifier.rpartition("@")[0] or identifier  # without the owner it is scoped to
    return FhirError.of(
        409,
        "duplicate",
        f"Another {rtype} already holds the identifier {shown}: update that one "
        f"(a conditional update on the identifier) instead of creating a second",
        f"Une autre ressource {rtype} porte déjà l'identifiant {shown} : mettez-la à jour "
        f"(mise à jour conditionnelle sur l'identifiant) au lieu d'en créer une seconde",
    )


@dataclass
class Record:
    type: str
    id: str
    version: int
    last_updated: datetime
    deleted: bool
    resource: dict | None
    method: str | None = None  # in history: POST, PUT, DELETE
    key: str | None = None  # the document's _id (type/id/version in history), for paging
    owner: list[str] | None = None  # organisations (FINESS juridique) the resource belongs to

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    @classmethod
    def from_doc(cls, rtype: str, doc: dict) -> "Record":
        return cls(
            rtype,
            doc.get("rid", doc["_id"]),
            doc["v"],
            doc["ts"],
            doc.get("del", False),
            doc.get("res"),
            doc.get("method"),
            doc["_id"],
            doc.get("org"),
        )


class Access(Protocol):
    """Access control as the storage layer sees it (fhir_server.auth installs one as
    `Store.access`; None: no access control). Reads by id are checked, other reads outside a unit
    of work are filtered, and writes are stamped with the organisation they are made for (`org`)."""

    def owner(self) -> str | None: ...

    def visible(self, record: Record) -> bool: ...

    def where(self, rtype: str | None, perm: str) -> dict | None: ...

    def check(self, record: Record) -> None: ...


def same_content(before: dict | None, after: dict) -> bool:
    """Equal but for the server's version stamps."""
    if before is None:
        return False
    stamps = ("versionId", "lastUpdated")
    return {k: v for k, v in before.items() if k != "meta"} == {k: v for k, v in after.items() if k != "meta"} and {
        k: v for k, v in (before.get("meta") or {}).items() if k not in stamps
    } == {k: v for k, v in (after.get("meta") or {}).items() if k not in stamps}


def history_version(key: str) -> int:
    """The version a history entry's id (`type/id/version`) names; 0 for anything else."""
    version = key.rpartition("/")[2]
    return int(version) if version.isascii() and version.isdigit() else 0


def new_id() -> str:
    """Time-ordered ids, so that new resources land at the end of the default order."""
    return str(ObjectId())


class Store:
    def __init__(
        self,
        uri: str,
        db_name: str,
        resource_types: Iterable[str],
        base_url: str,
        create_indexes: bool = True,
        max_document_bytes: int = 16_000_000,
        keyed_types: Iterable[str] = (),
    ):
        self.client = client_for(uri)
        self.db = self.client[db_name]
        self.base_url = base_url
        self.max_document_bytes = max_document_bytes  # MongoDB refuses documents over 16 MiB
        self.resource_types = tuple(resource_types)
        self._collections: dict = {}
        self.retried = 0  # attempts made again after a write conflict, since start (counted in the turn)
        self.access: Access | None = None
        # run once per unit of work after its last write, before anything is sent (the write
        # hooks' before_commit: rules judged on the state a whole Bundle produces)
        self.commit_check: Callable[["UnitOfWork"], None] | None = None
        ensure_constraints(self.db, keyed_types, self.resource_types)
        if create_indexes:
            ensure_indexes(self.db, self.resource_types)

    def collection(self, name: str):
        """Collection objects are costly to build (pymongo re-reads options): keep them."""
        if name not in self._collections:
            self._collections[name] = self.db[name]
        return self._collections[name]

    # -- reads -----------------------------------------------------------------------------
    def current(self, rtype: str, rid: str, session=None) -> Record | None:
        doc = self.collection(rtype).find_one({"_id": rid}, CURRENT_FIELDS, session=session)
        return Record.from_doc(rtype, doc) if doc else None

    def current_many(self, rtype: str, ids: list[str]) -> list[Record]:
        """The current records (deletion markers included) of these ids, in one query."""
        docs = self.collection(rtype).find({"_id": {"$in": ids}}, CURRENT_FIELDS)
        return [Record.from_doc(rtype, doc) for doc in docs]

    def read(self, rtype: str, rid: str) -> Record:
        return self.as_read(rtype, rid, self.current(rtype, rid))

    def as_read(self, rtype: str, rid: str, record: Record | None) -> Record:
        """`record` as a read by id answers it: 404 when missing (or, to the caller, another's),
        410 when deleted."""
        if record is None:
            raise not_known(rtype, rid)
        if self.access:
            self.access.check(record)
        if record.deleted:
            raise FhirError.of(410, "deleted", f"{rtype}/{rid} has been deleted", f"{rtype}/{rid} a été supprimé")
        return record

    def vread(self, rtype: str, rid: str, version: int) -> Record:
        doc = self.collection(HISTORY).find_one({"_id": f"{rtype}/{rid}/{version}"})
        if doc is None:
            current = self.current(rtype, rid)
            if current is None:
                raise not_known(rtype, rid)
            if self.access:
                self.access.check(current)  # another's resource is not known, whatever its versions
            raise FhirError.of(
                404,
                "not-found",
                f"{rtype}/{rid} has no version {version}",
                f"{rtype}/{rid} n'a pas de version {version}",
            )
        record = Record.from_doc(rtype, doc)
        if self.access:
            self.access.check(record)
        if record.deleted:
            raise FhirError.of(
                410,
                "deleted",
                f"Version {version} of {rtype}/{rid} is a deletion",
                f"La version {version} de {rtype}/{rid} est une suppression",
            )
        return record

    def history(
        self,
        rtype: str | None,
        rid: str | None,
        since: datetime | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Record]:
        """Newest first; `before` is the (ts, _id) of the last entry of the previous page."""
        if rtype and rid:
            return self._instance_history(rtype, rid, since, before, limit)
        query: dict[str, Any] = {"t": rtype} if rtype else {}
        if since:
            query["ts"] = {"$gte": since}
        if before:
            ts, last_id = before
            query = all_of(query, {"$or": [{"ts": {"$lt": ts}}, {"ts": ts, "_id": {"$lt": last_id}}]})
        query = self._visible(rtype, query, "s")
        docs = union.find(self.collection(HISTORY), query, None, [("ts", -1), ("_id", -1)], limit)
        return [Record.from_doc(doc["t"], doc) for doc in docs]

    def _instance_history(
        self, rtype: str, rid: str, since: datetime | None, before: tuple[datetime, str] | None, limit: int
    ) -> list[Record]:
        """The versions of one resource, newest first, by their ids (`type/id/version`): point
        lookups, where the (type, id) of a narrowed query would have SecantusDB walk the history
        of the whole type. `before`'s id is the last version of the previous page."""
        current = self.current(rtype, rid)
        newest = current.version if current else 0
        if before:
            newest = min(newest, history_version(before[1]) - 1)
        if newest < 1:
            return []
        query: dict[str, Any] = {"_id": {"$in": [f"{rtype}/{rid}/{v}" for v in range(newest, 0, -1)]}}
        if since:
            query["ts"] = {"$gte": since}
        cursor = self.collection(HISTORY).find(self._visible(rtype, query, "r")).sort([("v", -1)]).limit(limit)
        return [Record.from_doc(rtype, doc) for doc in cursor]

    def find(
        self,
        rtype: str,
        query: dict,
        sort: list[tuple[str, int]] | None = None,
        limit: int = 0,
        projection: dict | None = None,
    ) -> list[dict]:
        """Current resources matching `query` as the caller may see them; a query with "this or
        that" goes as one query per alternative (storage.union)."""
        return union.find(self.collection(rtype), self._visible(rtype, query, "s"), projection, sort, limit)

    def count(self, rtype: str, query: dict) -> int:
        return union.count(self.collection(rtype), self._visible(rtype, query, "s"))

    def fetch_many(self, rtype: str, ids: list[str]) -> list[Record]:
        query = self._visible(rtype, {"_id": {"$in": ids}, "del": False}, "r")
        docs = self.collection(rtype).find(query, CURRENT_FIELDS)
        return [Record.from_doc(rtype, d) for d in docs]

    def stream_current(self, rtype: str, since: datetime | None, until: datetime, batch_size: int) -> Iterator[dict]:
        """Every current resource of `rtype` (deleted ones left out) last updated at or after
        `since` and at or before `until`, in id order, read `batch_size` at a time: a bulk export
        holds one batch, whatever the collection's size. No access control: the caller decided."""
        window: dict[str, Any] = {"$lte": until, **({"$gte": since} if since else {})}
        cursor = self.collection(rtype).find({"del": False, "ts": window}, {"res": 1, "_id": 0})
        for doc in cursor.sort("_id", 1).batch_size(batch_size):
            yield doc["res"]

    def _visible(self, rtype: str | None, query: dict, perm: str) -> dict:
        """`query` narrowed to what the caller may see (`perm`: r read by id, s search)."""
        return all_of(query, self.access.where(rtype, perm) if self.access else None)

    def reindex(self, rtype: str, batch: int = 500) -> int:
        """Extract the index fields (s, x, o) of every current resource of `rtype` again, after a
        change of what is extracted; each document is rewritten only if its version is unchanged
        (a concurrent write has extracted them itself). Returns how many were rewritten."""
        collection = self.collection(rtype)
        operations, done = [], 0
        for doc in collection.find({"del": False}, {"res": 1, "v": 1}):
            fields = index_fields(rtype, doc["res"], self.base_url)
            operations.append(UpdateOne({"_id": doc["_id"], "v": doc["v"]}, {"$set": fields}))
            if len(operations) >= batch:
                done += collection.bulk_write(operations, ordered=False).modified_count
                operations = []
        if operations:
            done += collection.bulk_write(operations, ordered=False).modified_count
        return done

    def purge(self, rtype: str, ids: list[str]) -> int:
        """Remove these resources for good (no deletion marker, no history; their conditional
        keys go with them): what a retention rule no longer allows keeping. Returns how many there
        were (deletion markers included)."""
        if not ids:
            return 0
        self.collection(HISTORY).delete_many({"t": rtype, "rid": {"$in": ids}})
        return self.collection(rtype).delete_many({"_id": {"$in": ids}}).deleted_count

    def created_before(self, rtype: str, before: datetime, limit: int) -> list[str]:
        """Ids of up to `limit` resources of `rtype` whose first version was written before
        `before` (whatever came after it, a deletion included), oldest first."""
        # led by (type, time) alone: a condition on the version too would have SecantusDB walk
        # every version of the type; later versions before `before` are few (they go too)
        query = {"t": rtype, "ts": {"$lt": before}}
        cursor = self.collection(HISTORY).find(query, {"rid": 1, "v": 1}).sort([("t", 1), ("ts", 1)])
        ids: list[str] = []
        for doc in cursor:
            if doc["v"] == 1:
                ids.append(doc["rid"])
                if len(ids) == limit:
                    break
        cursor.close()
        return ids

    def versions_of(self, rtype: str, ids: list[str]) -> Iterator[dict]:
        """Every stored content (not the deletions) of these resources, from their history."""
        # (type, id) alone, what the history's index holds; deletions have no content
        for doc in self.collection(HISTORY).find({"t": rtype, "rid": {"$in": ids}}, {"res": 1}):
            if doc.get("res"):
                yield doc["res"]

    def referrers(self, rtype: str, parameters: Iterable[str], references: list[str]) -> dict[str, set[str]]:
        """The current resources of `rtype` one of whose reference search `parameters` is among
        `references` ("Type/id"): id -> the references of `references` it holds."""
        if not references:
            return {}
        wanted = set(references)
        found: dict[str, set[str]] = {}
        # one query per parameter, never an $or of them: SecantusDB plans no index for a
        # top-level operator, and would read the whole collection
        for parameter in dict.fromkeys(parameters):
            for doc in self.collection(rtype).find(referring(parameter, references), {f"s.{parameter}": 1}):
                value = (doc.get("s") or {}).get(parameter)
                held = value if isinstance(value, list) else [value] if isinstance(value, str) else []
                found.setdefault(doc["_id"], set()).update(wanted.intersection(held))
        return found

    def explain(self, rtype: str, query: dict, sort=None) -> dict:
        cursor = self.collection(rtype).find(query)
        if sort:
            cursor = cursor.sort(sort)
        return cursor.explain()

    # -- writes ----------------------------------------------------------------------------
    def run(self, work: Callable[["UnitOfWork"], T]) -> T:
        """Run `work` in one transaction, retrying it whole on write conflicts. Units that
        conflicted retry one at a time, in the order they conflicted (`RETRY_TURN`), rather than
        into each other again: SecantusDB takes no two conflicting transactions at once, and a
        hot resource (a laboratory's Organization created by its first Bundles) would otherwise
        cost one attempt per writer per round. A business identifier another resource holds (a
        unique `k` key) is retried once, since a concurrent writer may have just created the
        resource the retry will then match; held again, it is a 409 naming the identifier. A
        conditional key another resource holds that the criteria no longer match (a chained
        criteria's holder whose target changed) is taken from it on the retry."""
        outcome = self._attempt(work, _Retry(None))
        if not isinstance(outcome, _Retry):
            return outcome
        with RETRY_TURN:
            for attempt in range(1, MAX_ATTEMPTS):
                self.retried += 1
                if attempt > 1:  # still conflicting: with another process, or a unit's first try
                    time.sleep(random.uniform(0, min(MAX_BACKOFF, 0.005 * 2**attempt)))
                outcome = self._attempt(work, outcome)
                if not isinstance(outcome, _Retry):
                    return outcome
        raise FhirError.of(
            409,
            "conflict",
            "Too many concurrent writes to the same resources; retry",
            "Trop d'écritures simultanées sur les mêmes ressources ; réessayez",
        )

    def _attempt(self, work: Callable[["UnitOfWork"], T], before: "_Retry") -> "T | _Retry":
        held = before.held
        with self.client.start_session() as session:
            try:
                with session.start_transaction():
                    unit = UnitOfWork(self, session, held_claim=before.held_claim)
                    result = work(unit)
                    unit.flush()
                    return result
            except HeldKey as exc:
                if held == exc.key:
                    raise held_identifier(exc.key) from None
                return _Retry(exc.key)
            except HeldClaim as exc:
                return _Retry(held, exc.key)
            except (Conflict, DuplicateKeyError):
                return _Retry(held)
            except PyMongoError as exc:
                if exc.has_error_label("TransientTransactionError") or exc.has_error_label(
                    "UnknownTransactionCommitResult"
                ):
                    return _Retry(held)
                raise


@dataclass(frozen=True)
class _Retry:
    """An attempt that must be made again; `held`: the business key it found held, if any;
    `held_claim`: the conditional key it found held, if any."""

    held: str | None
    held_claim: str | None = None


class FairTurn:
    """A lock taken in the order it was asked for (threading.Lock promises no order)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self) -> None:
        with self._changed:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._changed.wait_for(lambda: self._serving == ticket)

    def __exit__(self, *_exc) -> None:
        with self._changed:
            self._serving += 1
            self._changed.notify_all()


RETRY_TURN = FairTurn()  # one per process: the web process's threads, a worker's


class UnitOfWork:
    """The writes of one transaction.

    Writes are buffered and sent at the end as one bulk write per collection (a result Bundle
    touches six collections: one round trip each instead of four per resource). Reads of single
    resources (`current`) see the unit's own writes; searches (`find`) see the database as it was
    before the unit, as a transaction Bundle's conditional entries should.
    """

    def __init__(self, store: Store, session, held_claim: str | None = None):
        self.store = store
        self.session = session
        self.held_claim = held_claim  # a conditional key the last attempt found another resource holding
        self.now = utc_now()
        self.owner = store.access.owner() if store.access else None  # stamped on what is written
        self._known: dict[tuple[str, str], Record | None] = {}
        self._writes: dict[str, list] = {}
        self._replaced: dict[str, int] = {}
        self._history: list[dict] = []
        self._docs: dict[tuple[str, str], list[dict]] = {}  # documents (current, history) written, by key
        self._claims: dict[tuple[str, str], str] = {}  # (type, id) -> the conditional key it takes
        self._events: list[dict] = []
        self._assigned: set[tuple[str, str]] = set()
        self._sealed = False

    # -- reads -----------------------------------------------------------------------------
    def current(self, rtype: str, rid: str) -> Record | None:
        key = (rtype, rid)
        if key not in self._known:
            self._known[key] = self.store.current(rtype, rid, self.session)
        return self._known[key]

    def read(self, rtype: str, rid: str) -> Record:
        """The current version as a read by id would answer it, seeing this unit's own writes."""
        return self.store.as_read(rtype, rid, self.current(rtype, rid))

    def referable(self, rtype: str, rid: str) -> bool:
        """Does `rtype/rid` exist (not deleted) for the writer to refer to?"""
        record = self.current(rtype, rid)
        if record is None or record.deleted:
            return False
        return self.store.access is None or self.store.access.visible(record)

    def find(self, rtype: str, query: dict, limit: int = 0, projection: dict | None = None) -> list[dict]:
        collection = self.store.collection(rtype)
        return union.find(collection, query, projection or {"_id": 1}, None, limit, self.session)

    def new_id(self, rtype: str) -> str:
        """A fresh server-assigned id, known to be absent (no read needed before writing it)."""
        rid = new_id()
        self._known[(rtype, rid)] = None
        self._assigned.add((rtype, rid))
        return rid

    def assigned(self, rtype: str, rid: str) -> bool:
        """Was `rid` assigned by the server in this unit (not chosen by the client)?"""
        return (rtype, rid) in self._assigned

    def find_current(self, rtype: str, query: dict, limit: int) -> list[str]:
        """Ids matching `query`; their current versions are kept, so writing them reads nothing."""
        return self._keep_current(rtype, self.find(rtype, query, limit, CURRENT_FIELDS))

    def find_current_each(self, rtype: str, queries: list[dict], limit: int) -> list[list[str]]:
        """`find_current` of each query, in one round trip when they differ only in the string
        one field equals (a Bundle's conditional lookups by identifier)."""
        merged = union.equal_to_one_of(queries)
        if merged is None:
            return [self.find_current(rtype, query, limit) for query in queries]
        field, values, query = merged
        most = limit * len(queries)
        docs = self.find(rtype, query, most + 1, {**CURRENT_FIELDS, field: 1})
        if len(docs) > most:  # some query may have more than `limit`: each asked on its own is exact
            return [self.find_current(rtype, query, limit) for query in queries]
        self._keep_current(rtype, docs)
        return [[doc["_id"] for doc in docs if value in union.values_at(doc, field)][:limit] for value in values]

    def _keep_current(self, rtype: str, docs: list[dict]) -> list[str]:
        for doc in docs:
            self._known.setdefault((rtype, doc["_id"]), Record.from_doc(rtype, doc))
        return [doc["_id"] for doc in docs]

    def holder(self, rtype: str, keys: list[str]) -> str | None:
        """The id of the current resource holding one of these business keys (`k`), if any."""
        found = self.find_current(rtype, {"k": {"$in": keys}, "del": False}, 1)
        return found[0] if found else None

    def single_with_traits(self, key: str) -> str | None:
        """The id of the one current Patient with this identity-traits key (`m`); None when none
        or several have it (a partial or ambiguous match is no match)."""
        found = self.find_current("Patient", {"m": key, "del": False}, 2)
        return found[0] if len(found) == 1 else None

    def referring(self, rtype: str, parameter: str, reference: str) -> list[str]:
        """Ids of the current resources whose reference search parameter is `reference`."""
        return self.find_current(rtype, {f"s.{parameter}": reference, "del": False}, 0)

    # -- writes ----------------------------------------------------------------------------
    def put(
        self,
        rtype: str,
        rid: str,
        resource: dict,
        if_match: int | None = None,
        method: str = "PUT",
        fields: dict | None = None,
    ) -> tuple[Record, Record | None]:
        """Create or update; returns (new record, previous record or None).
        `fields`: extra fields stored beside the resource (e.g. a matching key)."""
        previous = self.current(rtype, rid)
        if if_match is not None and (previous is None or previous.version != if_match):
            found = previous.version if previous else "none"
            raise FhirError.of(
                412,
                "conflict",
                f"If-Match version {if_match} does not match current version {found}",
                f"La version If-Match {if_match} ne correspond pas à la version actuelle {found}",
            )
        version = previous.version + 1 if previous else 1
        stored = self._stamp(rtype, rid, resource, version)
        owner = self._owners(previous)
        if previous and not previous.deleted and owner == previous.owner and same_content(previous.resource, stored):
            # a no-op update (as HAPI does): an unchanged resend makes no version, and concurrent
            # results sharing a resource (their laboratory's Organization) do not contend on it
            return previous, previous
        doc = {
            "_id": rid,
            "v": version,
            "ts": self.now,
            "del": False,
            "res": stored,
            **index_fields(rtype, stored, self.store.base_url),
            **(fields or {}),
        }
        if owner:
            doc["org"] = owner
        if (rtype, rid) in self._claims:
            doc["c"] = self._claims[(rtype, rid)]
        self._check_size(rtype, doc)
        self._write(rtype, rid, previous, doc)
        self._add_history(rtype, rid, version, stored, method, owner)
        self._docs.setdefault((rtype, rid), []).extend([doc, self._history[-1]])
        record = Record(rtype, rid, version, self.now, False, stored, method, owner=owner)
        self._known[(rtype, rid)] = record
        return record, previous

    def delete(self, rtype: str, rid: str) -> Record | None:
        """Mark deleted and add a deletion version; None if there was nothing to delete."""
        previous = self.current(rtype, rid)
        if previous is None or previous.deleted:
            return None
        if self.store.access is not None and not self.store.access.visible(previous):
            return None  # what the writer may not see is, to it, not there
        version = previous.version + 1
        marker = {"_id": rid, "v": version, "ts": self.now, "del": True}
        if previous.owner:
            marker["org"] = previous.owner  # who may see that it was deleted
        self._write(rtype, rid, previous, marker)
        self._add_history(rtype, rid, version, None, "DELETE", previous.owner)
        record = Record(rtype, rid, version, self.now, True, None, "DELETE", owner=previous.owner)
        self._known[(rtype, rid)] = record
        return record

    def grant(self, rtype: str, rid: str, keys: Iterable[str]) -> None:
        """Add `keys` to the owner list of a resource, without a new version (who may read it is
        not its content): on the documents this unit writes, else on the stored current version
        (guarded by its version, so a concurrent writer makes the unit retry)."""
        record = self.current(rtype, rid)
        if record is None or record.deleted:
            return
        missing = [k for k in dict.fromkeys(keys) if k not in (record.owner or [])]
        if not missing:
            return
        owner = list(record.owner or []) + missing
        written = self._docs.get((rtype, rid))
        if written:
            for doc in written:
                doc["org"] = owner
        else:
            self._writes.setdefault(rtype, []).append(
                UpdateOne({"_id": rid, "v": record.version}, {"$addToSet": {"org": {"$each": missing}}})
            )
            self._replaced[rtype] = self._replaced.get(rtype, 0) + 1
        self._known[(rtype, rid)] = Record(
            record.type,
            record.id,
            record.version,
            record.last_updated,
            record.deleted,
            record.resource,
            record.method,
            record.key,
            owner,
        )

    def claim(self, rtype: str, rid: str, key: str) -> None:
        """Take the conditional key `key` for `rtype/rid`, which this unit then writes: it is kept
        on the resource (`c`, unique). Two transactions taking the same key conflict in the
        database, so only one of them commits; the other is retried and finds the first. A later
        version of the resource, or its deletion, lets the key go: once it exists, the criteria
        find it."""
        self._claims[(rtype, rid)] = key

    def written(self, rtype: str | None = None) -> list[Record]:
        """The records (of `rtype`, or all) this unit has written so far."""
        return [r for (t, _), r in self._known.items() if (rtype is None or t == rtype) and r is not None and r.method]

    def known(self, rtype: str) -> list[Record]:
        """The records of `rtype` this unit has read or written (their current versions)."""
        return [r for (t, _), r in self._known.items() if t == rtype and r is not None]

    def annotate_history(self, record: Record, changes: list[str]) -> None:
        """Record on the history entry of `record` what this version changed."""
        key = f"{record.type}/{record.id}/{record.version}"
        for entry in reversed(self._history):
            if entry["_id"] == key:
                entry["chg"] = changes
                return

    def emit(self, kind: str, payload: dict, key: str | None = None) -> str:
        """Queue an outbox event; returns its id. Events with the same key merge (one
        notification per result and transaction, listing every reason)."""
        if key is not None:
            for event in self._events:
                if event.get("key") == key and event["kind"] == kind:
                    reasons = event["payload"].get("reasons", []) + payload.get("reasons", [])
                    event["payload"] = {**event["payload"], **payload, "reasons": list(dict.fromkeys(reasons))}
                    return str(event["_id"])
        event_id = ObjectId()
        self._events.append(
            {"_id": event_id, "kind": kind, "key": key, "payload": payload, "state": "new", "ts": self.now}
        )
        return str(event_id)

    def seal(self) -> None:
        """Run the store's commit check once, after the unit's last write (a transaction calls it
        itself to locate a failure in its Bundle; flush calls it otherwise)."""
        if not self._sealed and self.store.commit_check is not None:
            self._sealed = True
            self.store.commit_check(self)

    def flush(self) -> None:
        """Send the buffered writes. A replace that finds its version gone means a concurrent
        writer committed first: Conflict, and the whole unit is retried."""
        self.seal()
        try:
            self._take_held_claim()
            for rtype, operations in self._writes.items():
                result = self.store.collection(rtype).bulk_write(operations, ordered=True, session=self.session)
                if result.matched_count != self._replaced.get(rtype, 0):
                    raise Conflict(rtype)
            if self._history:
                self.store.collection(HISTORY).insert_many(self._history, ordered=True, session=self.session)
                self.store.collection(CHANGES).insert_one(self._change_entry(), session=self.session)
            if self._events:
                self.store.collection(OUTBOX).insert_many(self._events, ordered=True, session=self.session)
        except BulkWriteError as exc:
            duplicates = [e for e in exc.details.get("writeErrors", []) if e.get("code") == 11000]
            for field, held in (("k", HeldKey), ("c", HeldClaim)):  # the unique keys, in that order
                on_field = [e for e in duplicates if field in (e.get("keyPattern") or {})]
                if on_field:
                    raise held(str((on_field[0].get("keyValue") or {}).get(field))) from None
            if duplicates:
                raise Conflict(str(exc)) from None
            raise

    def _take_held_claim(self) -> None:
        """The conditional key the last attempt found held, taken from its holder: this unit has
        looked the criteria up again and found nothing, so the holder no longer matches them."""
        for (rtype, rid), key in self._claims.items():
            if key == self.held_claim:
                holder = {"c": key, "_id": {"$ne": rid}}
                self.store.collection(rtype).update_many(holder, {"$unset": {"c": ""}}, session=self.session)

    def _change_entry(self) -> dict:
        """What this unit wrote, for the change log's consumers (storage/changes.py)."""
        return Changes.entry(((e["t"], e["rid"], e["v"], e["del"]) for e in self._history), self.now)

    def _check_size(self, rtype: str, doc: dict) -> None:
        """413 before writing a resource whose stored document (the resource and the search index
        fields extracted from it, which can be several times its size) is over the limit."""
        size = len(bson.encode(doc, codec_options=CODEC_OPTIONS))
        limit = self.store.max_document_bytes
        if size > limit:
            raise FhirError.of(
                413,
                "too-costly",
                f"{rtype} would be stored as {size} bytes with its search index, over the limit "
                f"of {limit}: shorten its texts or split it",
                f"{rtype} serait enregistré sur {size} octets avec son index de recherche, au-delà "
                f"de la limite de {limit} : raccourcir ses textes ou le scinder",
                rtype,
            )

    def _write(self, rtype: str, rid: str, previous: Record | None, doc: dict) -> None:
        operations = self._writes.setdefault(rtype, [])
        if previous is None:
            operations.append(InsertOne(doc))
        else:
            operations.append(ReplaceOne({"_id": rid, "v": previous.version}, doc))
            self._replaced[rtype] = self._replaced.get(rtype, 0) + 1

    def _stamp(self, rtype: str, rid: str, resource: dict, version: int) -> dict:
        meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
        meta["versionId"] = str(version)
        meta["lastUpdated"] = instant(self.now)
        stored = {"resourceType": rtype, "id": rid, "meta": meta}
        stored.update((k, v) for k, v in resource.items() if k not in ("resourceType", "id", "meta"))
        return stored

    def _owners(self, previous: Record | None) -> list[str] | None:
        """The organisations a written resource belongs to: its previous ones and the writer's."""
        owners = list(previous.owner or []) if previous else []
        if self.owner and self.owner not in owners:
            owners.append(self.owner)
        return owners or None

    def _add_history(
        self, rtype: str, rid: str, version: int, resource: dict | None, method: str, owner: list[str] | None = None
    ) -> None:
        entry = {
            "_id": f"{rtype}/{rid}/{version}",
            "t": rtype,
            "rid": rid,
            "v": version,
            "ts": self.now,
            "del": resource is None,
            "method": method,
            "res": resource,
        }
        if owner:
            entry["org"] = owner
        self._history.append(entry)

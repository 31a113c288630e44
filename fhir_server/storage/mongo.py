"""MongoDB connection and the indexes created at start."""

from __future__ import annotations

import threading
from decimal import Decimal

from bson.codec_options import CodecOptions, TypeCodec, TypeRegistry
from bson.decimal128 import Decimal128
from pymongo import MongoClient
from pymongo.database import Database

from ..search.registry import declared_indexes

HISTORY = "_history"  # every version of every resource
OUTBOX = "_outbox"  # events committed with the writes, dispatched to the queue
CHANGES = "_changes"  # what each unit of work wrote, positioned for the change log's consumers
PERSONS = "_persons"  # the platform's person records, linking each laboratory's own Patient by INS

_clients: dict[str, MongoClient] = {}
_lock = threading.Lock()
_indexed: set[tuple[int, str]] = set()
_constrained: set[tuple[int, str]] = set()


class DecimalCodec(TypeCodec):
    """FHIR decimals keep their precision (1.50 stays 1.50): Decimal <-> BSON Decimal128."""

    python_type = Decimal
    bson_type = Decimal128

    def transform_python(self, value: Decimal) -> Decimal128:
        return Decimal128(value)

    def transform_bson(self, value: Decimal128) -> Decimal:
        return value.to_decimal()


CODEC_OPTIONS: CodecOptions = CodecOptions(tz_aware=False, type_registry=TypeRegistry([DecimalCodec()]))


def client_for(uri: str) -> MongoClient:
    """One client (and its connection pool) per URI and process."""
    with _lock:
        if uri not in _clients:
            _clients[uri] = MongoClient(uri, tz_aware=False, connect=False, type_registry=CODEC_OPTIONS.type_registry)
        return _clients[uri]


def index_plan(resource_types) -> dict[str, list[list[tuple[str, int]]]]:
    """collection -> the indexes it needs, as parameters.json "indexes" declares them (each with
    the query it serves: `python -m fhir_server indexes` lists them)."""
    declared = declared_indexes()
    collections = [*resource_types, HISTORY, OUTBOX, CHANGES, PERSONS]
    return {name: [list(index.keys) for index in declared.get(name, ())] for name in collections}


def ensure_constraints(db: Database, keyed_types, resource_types=()) -> None:
    """The unique indexes correctness depends on, created whatever CREATE_INDEXES says: a business
    identifier (`k`: an INS or dossier number within a laboratory, a FINESS number) is held by
    one resource at most, a conditional key (`c`: the criteria of a conditional create, per owner)
    too, and an INS by one person record."""
    key = (id(db.client), db.name)
    if key in _constrained:
        return
    for rtype in keyed_types:
        db[rtype].create_index("k", unique=True, sparse=True)
    for rtype in resource_types:
        db[rtype].create_index("c", unique=True, sparse=True)
    db[PERSONS].create_index("ins", unique=True)
    _constrained.add(key)


def ensure_indexes(db: Database, resource_types) -> None:
    """The planned indexes, created; on resource collections, the indexes an earlier plan made
    and this one no longer names, dropped (each costs every write)."""
    key = (id(db.client), db.name)
    if key in _indexed:
        return
    plan = index_plan(resource_types)
    for collection, indexes in plan.items():
        for keys in indexes:
            db[collection].create_index(keys)
    for rtype in resource_types:
        drop_unplanned(db[rtype], plan[rtype])
    _indexed.add(key)


def drop_unplanned(collection, planned: list[list[tuple[str, int]]]) -> list[str]:
    """Drop the indexes of a resource collection that the index plan could have made (on index
    fields s.*, x.*, o.*, on ts or org) but no longer names; never a unique or TTL one (the
    constraints', the operational records'). Returns the names dropped."""
    wanted = {tuple((field, int(order)) for field, order in keys) for keys in planned}
    dropped = []
    for info in collection.list_indexes():
        if info["name"] == "_id_" or info.get("unique") or "expireAfterSeconds" in info:
            continue
        if not all(isinstance(order, (int, float)) for order in info["key"].values()):
            continue  # a text, hashed or geo index: never the plan's
        keys = tuple((field, int(order)) for field, order in info["key"].items())
        if keys in wanted or not all(_planned_field(field, i) for i, (field, _) in enumerate(keys)):
            continue
        collection.drop_index(info["name"])
        dropped.append(info["name"])
    return dropped


def _planned_field(field: str, position: int) -> bool:
    """A field the index plan indexes resource collections on (_id only after the first)."""
    return field.startswith(("s.", "x.", "o.")) or field in ("ts", "org") or (field == "_id" and position > 0)

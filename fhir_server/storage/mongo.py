"""MongoDB connection and the indexes created at start."""

from __future__ import annotations

import threading
from decimal import Decimal

from bson.codec_options import CodecOptions, TypeCodec, TypeRegistry
from bson.decimal128 import Decimal128
from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.database import Database

from ..search.registry import compound_indexes
from ..search.registry import load as load_parameters

HISTORY = "_history"  # every version of every resource
CLAIMS = "_claims"  # conditional create/update keys, so two concurrent ones make one resource
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
    """collection -> the indexes it needs; also the list the README documents."""
    params = load_parameters()
    plan: dict[str, list[list[tuple[str, int]]]] = {}
    for rtype in resource_types:
        # org: the organisations a resource belongs to, which every request of a client narrows on
        indexes = [[("ts", ASCENDING)], [("org", ASCENDING), ("_id", ASCENDING)]]
        for code, param in params.get(rtype, {}).items():
            fields = [f"s.{code}.lo", f"s.{code}.hi"] if param.type == "date" else [f"s.{code}"]
            indexes += [[(field, ASCENDING)] for field in fields]
            if param.type == "string":  # :exact; token :text is rare enough to scan
                indexes.append([(f"x.{code}", ASCENDING)])
        for keys in compound_indexes().get(rtype, []):
            indexes.append([(k, DESCENDING if k.startswith("o.") else ASCENDING) for k in keys])
        plan[rtype] = indexes
    plan[HISTORY] = [
        [("t", ASCENDING), ("rid", ASCENDING), ("v", DESCENDING)],
        [("t", ASCENDING), ("ts", ASCENDING)],
        [("ts", ASCENDING)],
    ]
    plan[OUTBOX] = [[("state", ASCENDING), ("ts", ASCENDING)]]
    plan[CHANGES] = [[("seq", ASCENDING)], [("pending", ASCENDING), ("_id", ASCENDING)], [("ts", ASCENDING)]]
    plan[PERSONS] = [[("links.patient", ASCENDING)], [("links.state", ASCENDING)]]
    return plan


def ensure_constraints(db: Database, keyed_types) -> None:
    """The unique indexes correctness depends on, created whatever CREATE_INDEXES says: a business
    identifier (`k`: an INS or dossier number within a laboratory, a FINESS number) is held by
    one resource at most, and an INS by one person record."""
    key = (id(db.client), db.name)
    if key in _constrained:
        return
    for rtype in keyed_types:
        db[rtype].create_index("k", unique=True, sparse=True)
    db[PERSONS].create_index("ins", unique=True)
    _constrained.add(key)


def ensure_indexes(db: Database, resource_types) -> None:
    key = (id(db.client), db.name)
    if key in _indexed:
        return
    for collection, indexes in index_plan(resource_types).items():
        for keys in indexes:
            db[collection].create_index(keys)
    _indexed.add(key)

"""The platform's own operational records (deliveries, deep links, the MSSanté directory,
asynchronous requests) as mongoengine documents, beside the FHIR resources the store keeps raw.

mongoengine binds a document class to a connection alias for the whole process, so a process
works with one database at a time: `connect` (called by the application factory and by each
worker process) points the alias at that database, again when it changes (tests use one database
per test).
"""

from __future__ import annotations

import mongoengine
from pymongo.errors import OperationFailure

ALIAS = "sidep"
INDEX_OPTIONS_CONFLICT, INDEX_KEY_SPECS_CONFLICT = 85, 86
_current: tuple[str, str] | None = None
_indexed: set[type[mongoengine.Document]] = set()  # models whose indexes `_current` has


def connect(uri: str, db: str, *models: type[mongoengine.Document]) -> None:
    """Point the records' alias at `db` and create the indexes of `models` there, once per
    process and database: a worker calls this for every job, and each index made again is a
    command the database runs for nothing."""
    global _current
    if _current != (uri, db):
        mongoengine.disconnect(ALIAS)
        mongoengine.register_connection(ALIAS, db=db, host=uri, uuidRepresentation="standard")
        _current = (uri, db)
        _indexed.clear()
    for model in models:
        if model not in _indexed:
            _ensure_indexes(model)
            _indexed.add(model)


def _ensure_indexes(model: type[mongoengine.Document]) -> None:
    """The model's indexes; one that exists with other options (a plain index that is now a TTL
    one, in a database made by an earlier version) is made again."""
    try:
        model.ensure_indexes()
    except OperationFailure as exc:
        if exc.code not in (INDEX_OPTIONS_CONFLICT, INDEX_KEY_SPECS_CONFLICT):
            raise
        collection = model._get_collection()
        for spec in model._meta.get("index_specs") or []:
            if "expireAfterSeconds" in spec:
                keys = [(field, direction) for field, direction in spec["fields"]]
                for name, info in collection.index_information().items():
                    if info["key"] == keys and "expireAfterSeconds" not in info:
                        collection.drop_index(name)
        model.ensure_indexes()


def database():
    """The pymongo database the records live in."""
    return mongoengine.get_db(ALIAS)

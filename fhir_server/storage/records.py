"""The platform's own operational records (deliveries, deep links, the MSSanté directory,
asynchronous requests) as mongoengine documents, beside the FHIR resources the store keeps raw.

mongoengine binds a document class to a connection alias for the whole process, so a process
works with one database at a time: `connect` (called by the application factory and by each
worker process) points the alias at that database, again when it changes (tests use one database
per test).
"""

from __future__ import annotations

import mongoengine

ALIAS = "sidep"
_current: tuple[str, str] | None = None


def connect(uri: str, db: str, *models: type[mongoengine.Document]) -> None:
    """Point the records' alias at `db` and create the indexes of `models` there."""
    global _current
    if _current != (uri, db):
        mongoengine.disconnect(ALIAS)
        mongoengine.register_connection(ALIAS, db=db, host=uri, uuidRepresentation="standard")
        _current = (uri, db)
    for model in models:
        model.ensure_indexes()


def database():
    """The pymongo database the records live in."""
    return mongoengine.get_db(ALIAS)

"""Which index SecantusDB serves a filter with, and the filters a process sends to the database.

`served_by` mirrors SecantusDB's index choice (secantus/storage.py `_try_index_id_keys`; its
`explain()` is no proof: it reports COLLSCAN for filters it serves from an index):

1. a filter with a top-level `$` key (`$or`, `$and`, `$nor`) reads the whole collection;
2. `{_id: x}` (or `$in` of values) alone is a point lookup;
3. bare equalities covered, as a set, by an index's leading fields use it (the shortest);
4. equalities then one range or `$in` on the next field of an index use it;
5. one field alone: an index led by it (a single-field one before a compound one, else the
   first compound one), when its condition is an equality, a range or an `$in`;
6. otherwise the first clause, in the filter's order, that can ride an index alone (1-5).

`Commands` is a pymongo CommandListener that keeps, for one database, the filter of every find,
count, aggregate, update, delete, findAndModify and distinct sent to it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from pymongo import monitoring

RANGE_OPS = frozenset({"$eq", "$gt", "$gte", "$lt", "$lte", "$in"})
POINT = ("_id",)  # what a point lookup on _id is reported as

Index = tuple[str, ...]


def served_by(query: dict, indexes: list[Index], sparse: frozenset[str] = frozenset()) -> Index | None:
    """The index (its fields) that serves `query` among `indexes` (in their creation order),
    POINT for an _id lookup, None for a collection scan. `sparse`: fields of sparse indexes,
    usable only when the query guarantees the field is there."""
    if not query or any(key.startswith("$") for key in query):
        return None
    if set(query) == {"_id"} and _point(query["_id"]):
        return POINT
    usable = [i for i in indexes if not (set(i) & sparse) or any(_requires(query.get(f)) for f in i)]
    if all(not isinstance(v, dict) for v in query.values()):
        found = _compound_equality(query, usable)
        if found:
            return found
    if len(query) >= 2:
        found = _compound_range(query, usable)
        if found:
            return found
    if len(query) == 1:
        ((field, condition),) = query.items()
        return _leading(field, usable) if _rides(condition) else None
    for field, condition in query.items():
        found = served_by({field: condition}, indexes, sparse)
        if found:
            return found
    return None


def _point(condition) -> bool:
    if isinstance(condition, dict):
        return list(condition) in (["$eq"], ["$in"]) and not isinstance(condition.get("$eq"), (dict, re.Pattern))
    return not isinstance(condition, re.Pattern)


def _requires(condition) -> bool:
    """Does the condition guarantee its field is present (what a sparse index needs)?"""
    if condition is None:
        return False
    if not isinstance(condition, dict):
        return True
    if "$in" in condition:
        return None not in condition["$in"]
    return bool(condition) and all(op in RANGE_OPS and value is not None for op, value in condition.items())


def _rides(condition) -> bool:
    """Can a lookup on an index led by this field apply the condition?"""
    if not isinstance(condition, dict):
        return True
    if not condition or not all(op in RANGE_OPS for op in condition):
        return False
    if "$in" in condition:
        return len(condition) == 1 and not any(isinstance(v, dict) for v in condition["$in"])
    return not any(isinstance(v, dict) for v in condition.values())


def _compound_equality(query: dict, indexes: list[Index]) -> Index | None:
    fitting = [i for i in indexes if len(i) >= len(query) and set(i[: len(query)]) == set(query)]
    return min(fitting, key=len) if fitting else None


def _compound_range(query: dict, indexes: list[Index]) -> Index | None:
    operators = [f for f, v in query.items() if isinstance(v, dict)]
    if len(operators) != 1 or not _rides(query[operators[0]]):
        return None
    equal = set(query) - set(operators)
    fitting = [
        i for i in indexes if len(i) > len(equal) and set(i[: len(equal)]) == equal and i[len(equal)] == operators[0]
    ]
    return min(fitting, key=len) if fitting else None


def _leading(field: str, indexes: list[Index]) -> Index | None:
    led = [i for i in indexes if i[0] == field]
    single = [i for i in led if len(i) == 1]
    return (single or led or [None])[0]


# -- what a process sends ------------------------------------------------------------------------
@dataclass(frozen=True)
class Sent:
    command: str
    collection: str
    filter: dict
    limit: int | None = None


class Commands(monitoring.CommandListener):
    """The filters sent to one database while `recording`. Registered once per process
    (pymongo has no unregister): only clients made after it see it."""

    def __init__(self):
        self.database: str | None = None
        self.sent: list[Sent] = []
        self._lock = threading.Lock()

    def record(self, database: str) -> None:
        with self._lock:
            self.database, self.sent = database, []

    def stop(self) -> list[Sent]:
        with self._lock:
            self.database, sent = None, self.sent
            self.sent = []
        return sent

    def started(self, event) -> None:
        if event.database_name != self.database:
            return
        found = list(filters_of(event.command_name, event.command))
        if found:
            with self._lock:
                self.sent.extend(found)

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def recorded(recorder: Commands, db, action) -> list[Sent]:
    """What `action` sends to `db`, as `recorder` sees it."""
    recorder.record(db.name)
    try:
        action()
    finally:
        sent = recorder.stop()
    return sent


def filters_of(name: str, command: dict):
    collection = command.get(name)
    if not isinstance(collection, str):
        return
    if name == "find":
        yield Sent(name, collection, dict(command.get("filter") or {}), command.get("limit"))
    elif name == "aggregate":
        pipeline = command.get("pipeline") or []
        first = pipeline[0] if pipeline else {}
        yield Sent(name, collection, dict(first.get("$match") or {}))
    elif name in ("count", "distinct"):
        yield Sent(name, collection, dict(command.get("query") or {}))
    elif name == "findAndModify":
        yield Sent(name, collection, dict(command.get("query") or {}))
    elif name == "update":
        for update in command.get("updates") or []:
            yield Sent(name, collection, dict(update.get("q") or {}))
    elif name == "delete":
        for delete in command.get("deletes") or []:
            yield Sent(name, collection, dict(delete.get("q") or {}))


def indexes_of(collection) -> tuple[list[Index], frozenset[str]]:
    """The indexes a collection has, in the order the database lists them (without `_id_`, which
    SecantusDB only uses for point lookups), and the fields of its sparse ones."""
    indexes, sparse = [], set()
    for info in collection.list_indexes():
        if info["name"] == "_id_":
            continue
        fields = tuple(info["key"])
        indexes.append(fields)
        if info.get("sparse"):
            sparse.update(fields)
    return indexes, frozenset(sparse)

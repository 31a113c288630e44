"""Queries with a top-level `$or` (or `$and`) sent as flat queries, one per alternative; and the
other way round, flat queries that differ only in the value one field equals sent as one.

SecantusDB serves a filter with a top-level operator by reading the whole collection, whatever
the indexes; each flat alternative (storage.conditions.alternatives) can ride an index. The rows
of the alternatives are merged here, without repeats, in the query's sort order and cut to its
limit, which each alternative's own sort and limit make exact. A field equal to one of several
strings (`$in`) rides the field's index as one equality does (`equal_to_one_of`)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import cmp_to_key
from typing import Any

from bson import ObjectId
from pymongo.collection import Collection

from .conditions import alternatives

Sort = list[tuple[str, int]]


def queries(query: dict) -> list[dict]:
    """What to send for `query`: itself when it is flat (or cannot be split), else its
    alternatives (none: it matches nothing)."""
    if not any(key.startswith("$") for key in query):
        return [query]
    split = alternatives(query)
    return [query] if split is None else split


def find(
    collection: Collection, query: dict, projection: dict | None, sort: Sort | None, limit: int, session=None
) -> list[dict]:
    """`collection.find(query, projection).sort(sort).limit(limit)`, one query per alternative
    (in the transaction of `session`, if given)."""
    parts = queries(query)
    if len(parts) == 1:
        return _find(collection, parts[0], projection, sort, limit, session)
    fields = _with_sort_fields(projection, sort)
    found: dict[Any, dict] = {}
    for part in parts:
        for doc in _find(collection, part, fields, sort, limit, session):
            found.setdefault(doc.get("_id", len(found)), doc)
    docs = list(found.values())
    if sort:
        docs.sort(key=cmp_to_key(lambda a, b: _compare(a, b, sort)))
    return docs[:limit] if limit else docs


def equal_to_one_of(queries: list[dict]) -> tuple[str, list[str], dict] | None:
    """(field, the value of each query, one query matching what any of them does) when the flat
    queries are the same but for the string one field equals; else None."""
    if len(queries) < 2 or any(key.startswith("$") for query in queries for key in query):
        return None
    keys = queries[0].keys()
    if any(query.keys() != keys for query in queries):
        return None
    differing = [key for key in keys if any(query[key] != queries[0][key] for query in queries)]
    if len(differing) != 1 or not all(isinstance(query[differing[0]], str) for query in queries):
        return None
    field = differing[0]
    values = [query[field] for query in queries]
    return field, values, {**queries[0], field: {"$in": list(dict.fromkeys(values))}}


def values_at(doc: dict, field: str) -> list:
    """The values a document holds at a dotted path (an array's items, or the one value)."""
    value = _value(doc, field)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def count(collection: Collection, query: dict) -> int:
    parts = queries(query)
    if len(parts) == 1:
        return collection.count_documents(parts[0])
    return len({doc["_id"] for part in parts for doc in collection.find(part, {"_id": 1})})


def _find(
    collection: Collection, query: dict, projection: dict | None, sort: Sort | None, limit: int, session=None
) -> list[dict]:
    cursor = collection.find(query, projection, session=session)
    if sort:
        cursor = cursor.sort(sort)
    if limit:
        cursor = cursor.limit(limit)
    return list(cursor)


def _with_sort_fields(projection: dict | None, sort: Sort | None) -> dict | None:
    """An inclusion projection with the sort keys added (the merge compares them)."""
    if not projection or not sort or not all(projection.values()):
        return projection
    return {**projection, **{field: 1 for field, _ in sort if not _covered(field, projection)}}


def _covered(field: str, projection: dict) -> bool:
    parts = field.split(".")
    return any(".".join(parts[:i]) in projection for i in range(1, len(parts) + 1))


def _compare(a: dict, b: dict, sort: Sort) -> int:
    for field, direction in sort:
        left, right = _order(_value(a, field)), _order(_value(b, field))
        if left != right:
            return direction if left > right else -direction
    return 0


def _value(doc: dict, field: str) -> Any:
    value: Any = doc
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _order(value: Any) -> tuple:
    """A key in MongoDB's order of BSON types (null, numbers, strings, objects, arrays, binary,
    ObjectId, booleans, dates), then by value, for the scalars sort keys are."""
    if value is None:
        return (1,)
    if isinstance(value, bool):
        return (8, value)
    if isinstance(value, (int, float, Decimal)):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, ObjectId):
        return (7, value.binary)
    if isinstance(value, datetime):
        return (9, value)
    return (5, repr(value))
